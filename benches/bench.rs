//! svsettle benchmarks: the release binary against baselines measured in the same run.
//!
//! `scripts/bench.sh [--quick] [--runs N] [--only P1,P3,...] [--bin PATH] [--json FILE]`
//! (that is `cargo bench --bench bench -- ...`) prints one table and writes it as JSON
//! (default `target/bench/latest.json`). The machine may be shared and noisy: every
//! figure is a ratio against a baseline timed in the same run, interleaved with it
//! (baseline, svsettle, baseline, svsettle, ...), or a count. Each workload runs in its
//! own temporary root (`--root`); supervisors started here are killed by pid with all
//! their descendants when the workload ends.
//!
//! - P1 hook cost: 5,000 stock paths (500 services x 10 files) enqueued in one call
//!   (pacman shape), and 500 service directories (apk shape), against the sqlite3 CLI
//!   inserting the same rows into an equivalent table (WAL, synchronous=FULL), one
//!   transaction.
//! - P2 no-op reconcile: 1,000 services, every one hinted, none changed (not
//!   supervised); supervisor programs are counted through logging wrappers first on
//!   PATH. Growth 100 -> 1,000 -> 10,000. Reference: `find` stat'ing every stock entry.
//! - P3 full apply: 1,000 new services (10 files each) against `rsync -a --delete` of
//!   the same stock tree into an empty directory followed by `sync`.
//! - P4 restart precision on a real s6-svscan (pids before and after).
//! - P5 s6-rc: s6-rc-compile and s6-rc-update invocations per transaction.
//! - Peak memory (max RSS from wait4) of the hook and of reconciles of 10,000 services.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STOCK: &str = "/usr/share/s6/sv";
const LIVE: &str = "/etc/s6/sv";
const SCAN: &str = "/run/service";
const RC_STOCK: &str = "/usr/share/s6-rc/sources";
const RC_COMPILED: &str = "/etc/s6-rc/compiled";
const RC_LIVEDIR: &str = "/run/s6-rc";
/// Only the s6 domain: the other domains' stock trees do not exist in these roots.
const S6_ONLY: &str = "[domain.runit]\nenabled = false\n[domain.s6-rc]\nenabled = false\n";
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Where scripts/setup.sh and the shared tools script put s6-rc.
const TOOLS: &str = "/var/cache/svsettle-test-tools";
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------
// options, programs, processes

struct Opts {
    quick: bool,
    runs: usize,
    only: Vec<String>,
    bin: PathBuf,
    json: PathBuf,
}

impl Opts {
    fn parse() -> Opts {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut o = Opts {
            quick: false,
            runs: 0,
            only: Vec::new(),
            bin: PathBuf::from(env!("CARGO_BIN_EXE_svsettle")),
            json: manifest.join("target/bench/latest.json"),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .unwrap_or_else(|| die(&format!("{name} needs a value")))
            };
            match a.as_str() {
                // cargo bench passes --bench to harness = false targets
                "--bench" => {}
                "--quick" => o.quick = true,
                "--runs" => {
                    o.runs = value("--runs")
                        .parse()
                        .unwrap_or_else(|_| die("--runs needs a number"))
                }
                "--only" => {
                    o.only = value("--only")
                        .split(',')
                        .map(|s| s.trim().to_uppercase())
                        .collect()
                }
                "--bin" => o.bin = PathBuf::from(value("--bin")),
                "--json" => o.json = PathBuf::from(value("--json")),
                "-h" | "--help" => {
                    println!(
                        "usage: scripts/bench.sh [--quick] [--runs N] [--only P1,P2,P3,P4,P5,MEM] [--bin PATH] [--json FILE]"
                    );
                    std::process::exit(0);
                }
                other => die(&format!("unknown option {other:?} (see --help)")),
            }
        }
        if o.runs == 0 {
            o.runs = if o.quick { 3 } else { 7 };
        }
        o
    }

    fn wants(&self, id: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|x| x == id)
    }
}

fn die(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(2);
}

/// A program the benchmarks need, or exit naming it and what installs it.
fn require(program: &str) -> PathBuf {
    let extra = [
        format!("{TOOLS}/s6-rc/bin"),
        std::env::var("SVSETTLE_TEST_TOOLS")
            .map(|p| format!("{p}/s6-rc/bin"))
            .unwrap_or_default(),
    ];
    let path = std::env::var("PATH").unwrap_or_else(|_| SYSTEM_PATH.into());
    for d in path.split(':').chain(extra.iter().map(String::as_str)) {
        if d.is_empty() {
            continue;
        }
        let p = Path::new(d).join(program);
        if p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        {
            return p;
        }
    }
    die(&format!(
        "required program {program} not found: run scripts/setup.sh (Debian packages s6, sqlite3, rsync, time; \
         ../shared/tools/build-test-tools.sh for s6-rc)"
    ));
}

fn optional(program: &str) -> Option<PathBuf> {
    let dirs = [format!("{TOOLS}/s6-rc/bin")];
    let path = std::env::var("PATH").unwrap_or_else(|_| SYSTEM_PATH.into());
    path.split(':')
        .map(String::from)
        .chain(dirs)
        .map(|d| Path::new(&d).join(program))
        .find(|p| p.is_file())
}

/// One finished process: wall time, spawn to reap.
struct Ran {
    wall: Duration,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ms(&self) -> f64 {
        self.wall.as_secs_f64() * 1e3
    }

    #[track_caller]
    fn ok(self, what: &str) -> Ran {
        if self.code != 0 {
            die(&format!(
                "{what} exited {}\nstdout: {}\nstderr: {}",
                self.code,
                tail(&self.stdout),
                tail(&self.stderr)
            ));
        }
        self
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Runs a command to completion, feeding `stdin`.
fn run(mut cmd: Command, stdin: Option<Vec<u8>>) -> Ran {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let shown = format!("{cmd:?}");
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| die(&format!("cannot run {shown}: {e}")));
    let writer = child.stdin.take().map(|mut w| {
        let data = stdin.unwrap_or_default();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        })
    });
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let status = child
        .wait()
        .unwrap_or_else(|e| die(&format!("cannot wait for {shown}: {e}")));
    let wall = start.elapsed();
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ran {
        wall,
        code: status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Runs a command under GNU time for its peak memory (max RSS, KiB). Not from our own
/// wait4: a child spawned by this (large) process counts our peak as its own until it
/// execs, so the measured process has to be forked by a small one.
fn run_rss(c: Command, stdin: Option<Vec<u8>>) -> (Ran, i64) {
    let time = require("time");
    let out = tempfile::NamedTempFile::new()
        .unwrap_or_else(|e| die(&format!("cannot make a temporary file: {e}")));
    let mut t = Command::new(time);
    t.arg("-f").arg("%M").arg("-o").arg(out.path());
    t.arg(c.get_program()).args(c.get_args());
    t.env_clear();
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            t.env(k, v);
        }
    }
    let ran = run(t, stdin);
    let kb = fs::read_to_string(out.path())
        .unwrap_or_default()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(-1);
    (ran, kb)
}

fn cmd(program: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

fn sync() {
    run(cmd(&require("sync"), &[]), None).ok("sync");
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

// ---------------------------------------------------------------------------------
// roots, stock trees, supervisors

struct Root {
    _dir: tempfile::TempDir,
    path: PathBuf,
    bin: PathBuf,
}

/// Programs reached through logging wrappers, so that their calls can be counted.
const WRAPPED: [&str; 6] = [
    "s6-svc",
    "s6-svok",
    "s6-svstat",
    "s6-svscanctl",
    "s6-rc-compile",
    "s6-rc-update",
];

impl Root {
    fn new(bin: &Path, config: &str) -> Root {
        let dir = tempfile::Builder::new()
            .prefix("svsettle-bench.")
            .tempdir()
            .unwrap_or_else(|e| die(&format!("cannot make a temporary root: {e}")));
        let path = dir.path().to_path_buf();
        let r = Root {
            _dir: dir,
            path,
            bin: bin.to_path_buf(),
        };
        r.write("/etc/svsettle.toml", config, 0o644);
        fs::create_dir_all(r.p("/wrap")).unwrap_or_else(|e| die(&format!("mkdir: {e}")));
        for program in WRAPPED {
            if let Some(real) = optional(program) {
                r.write(
                    &format!("/wrap/{program}"),
                    &format!(
                        "#!/bin/sh\necho \"{program} $*\" >> {}\nexec {} \"$@\"\n",
                        r.p("/calls.log").display(),
                        real.display()
                    ),
                    0o755,
                );
            }
        }
        r
    }

    fn p(&self, inner: &str) -> PathBuf {
        self.path.join(inner.trim_start_matches('/'))
    }

    fn write(&self, inner: &str, content: &str, mode: u32) {
        write_file(&self.p(inner), content.as_bytes(), mode);
    }

    fn path_env(&self) -> String {
        let rc = optional("s6-rc-compile")
            .and_then(|p| p.parent().map(|d| d.display().to_string()))
            .unwrap_or_default();
        format!("{}:{rc}:{SYSTEM_PATH}", self.p("/wrap").display())
    }

    fn sv(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env_clear()
            .env("PATH", self.path_env())
            .arg("--root")
            .arg(&self.path)
            .args(args);
        c
    }

    /// How often a wrapped program ran since the last [`Root::reset_calls`].
    fn calls(&self, program: &str) -> usize {
        fs::read_to_string(self.p("/calls.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(program))
            .count()
    }

    fn calls_total(&self) -> usize {
        fs::read_to_string(self.p("/calls.log"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn reset_calls(&self) {
        let _ = fs::write(self.p("/calls.log"), "");
    }
}

fn write_file(path: &Path, data: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .unwrap_or_else(|e| die(&format!("mkdir {}: {e}", parent.display())));
    }
    fs::write(path, data).unwrap_or_else(|e| die(&format!("write {}: {e}", path.display())));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| die(&format!("chmod {}: {e}", path.display())));
}

/// Writes like a package manager: a new file beside, renamed over the old one.
fn replace_file(path: &Path, data: &[u8], mode: u32) {
    let tmp = path.with_file_name(format!(
        "{}.pkgnew",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    write_file(&tmp, data, mode);
    fs::rename(&tmp, path).unwrap_or_else(|e| die(&format!("rename {}: {e}", path.display())));
}

fn svc(i: usize) -> String {
    format!("svc{i:05}")
}

/// The ten files of a stock s6 service (two subdirectories, log/ and env/).
fn service_files(name: &str, tag: &str) -> Vec<(&'static str, String, u32)> {
    vec![
        (
            "run",
            format!("#!/bin/sh\n# {name} {tag}\nexec sleep 100000\n"),
            0o755,
        ),
        ("finish", format!("#!/bin/sh\n# {name}\nexit 0\n"), 0o755),
        ("timeout-finish", "5000\n".into(), 0o644),
        ("max-death-tally", "100\n".into(), 0o644),
        ("down-signal", "SIGTERM\n".into(), 0o644),
        (
            "log/run",
            format!("#!/bin/sh\n# logger of {name}\nexec cat >/dev/null\n"),
            0o755,
        ),
        ("env/NAME", format!("{name}\n"), 0o644),
        ("env/PORT", format!("{}\n", 8000 + name.len()), 0o644),
        ("env/OPTS", format!("--name={name} --verbose\n"), 0o644),
        ("env/USER", "daemon\n".into(), 0o644),
    ]
}

fn write_service(stock: &Path, name: &str, tag: &str) {
    for (rel, content, mode) in service_files(name, tag) {
        write_file(&stock.join(name).join(rel), content.as_bytes(), mode);
    }
}

fn write_services(root: &Root, n: usize) {
    let stock = root.p(STOCK);
    for i in 0..n {
        write_service(&stock, &svc(i), "v1");
    }
}

/// Every descendant of `pid` (from /proc/*/stat).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            let Some(rest) = stat.rsplit_once(')').map(|x| x.1) else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if let Some(ppid) = fields.get(1).and_then(|s| s.parse::<u32>().ok()) {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(child, ppid) in &parent_of {
            if ppid == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// An s6-svscan started here; killed by pid with every descendant when dropped.
struct Svscan {
    child: Child,
}

impl Svscan {
    fn start(root: &Root) -> Svscan {
        let scan = root.p(SCAN);
        fs::create_dir_all(&scan).unwrap_or_else(|e| die(&format!("mkdir scan: {e}")));
        let child = Command::new(require("s6-svscan"))
            .arg(&scan)
            .env_clear()
            .env("PATH", root.path_env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| die(&format!("cannot start s6-svscan: {e}")));
        let s = Svscan { child };
        let ctl = require("s6-svscanctl");
        wait_for("s6-svscan to answer", || {
            Command::new(&ctl)
                .arg("-a")
                .arg(&scan)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        s
    }
}

impl Drop for Svscan {
    fn drop(&mut self) {
        let pid = self.child.id();
        let below = descendants(pid);
        let kill = |p: u32| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        };
        kill(pid);
        let _ = self.child.wait();
        for p in below.iter().chain(descendants(pid).iter()) {
            kill(*p);
        }
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > WAIT {
            die(&format!("timed out after {WAIT:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The pid of an s6 service that is up.
fn s6_pid(dir: &Path) -> Option<u32> {
    let out = Command::new(require("s6-svstat"))
        .args(["-o", "up,pid"])
        .arg(dir)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    let mut it = s.split_whitespace();
    match (it.next(), it.next()) {
        (Some("true"), Some(pid)) => pid.parse().ok(),
        _ => None,
    }
}

fn pids_of(dirs: &BTreeMap<String, PathBuf>) -> BTreeMap<String, u32> {
    dirs.iter()
        .map(|(name, dir)| {
            let mut pid = None;
            wait_for(&format!("{name} to be up"), || {
                pid = s6_pid(dir);
                pid.is_some()
            });
            (name.clone(), pid.unwrap_or_default())
        })
        .collect()
}

fn changed(a: &BTreeMap<String, u32>, b: &BTreeMap<String, u32>) -> usize {
    a.iter().filter(|(k, v)| b.get(*k) != Some(v)).count()
}

// ---------------------------------------------------------------------------------
// the table

struct Row {
    id: String,
    what: String,
    value: String,
    baseline: String,
    ratio: Option<f64>,
    target: String,
    met: Option<bool>,
    json: Value,
}

struct Table {
    rows: Vec<Row>,
}

impl Table {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        id: &str,
        what: &str,
        value: String,
        baseline: String,
        ratio: Option<f64>,
        target: &str,
        met: Option<bool>,
        json: Value,
    ) {
        let row = Row {
            id: id.into(),
            what: what.into(),
            value,
            baseline,
            ratio,
            target: target.into(),
            met,
            json,
        };
        eprintln!(
            "bench: {} {}: {} | {} | {}",
            row.id,
            row.what,
            row.value,
            row.baseline,
            row.ratio.map(|r| format!("{r:.2}x")).unwrap_or_default()
        );
        self.rows.push(row);
    }

    fn print(&self) {
        let head = [
            "id", "workload", "svsettle", "baseline", "ratio", "target", "met",
        ];
        let cells: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.id.clone(),
                    r.what.clone(),
                    r.value.clone(),
                    r.baseline.clone(),
                    r.ratio.map(|x| format!("{x:.2}x")).unwrap_or("-".into()),
                    r.target.clone(),
                    match r.met {
                        Some(true) => "yes".into(),
                        Some(false) => "NO".into(),
                        None => "-".into(),
                    },
                ]
            })
            .collect();
        let mut width = head.map(str::len);
        for c in &cells {
            for (i, s) in c.iter().enumerate() {
                width[i] = width[i].max(s.chars().count());
            }
        }
        let line = |c: &[String]| {
            let parts: Vec<String> = c
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{s:<w$}", w = width[i]))
                .collect();
            format!("| {} |", parts.join(" | "))
        };
        println!("{}", line(&head.map(String::from)));
        let sep: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
        println!("|-{}-|", sep.join("-|-"));
        for c in &cells {
            println!("{}", line(c));
        }
    }

    fn json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|r| {
                    let mut v = json!({
                        "id": r.id,
                        "workload": r.what,
                        "svsettle": r.value,
                        "baseline": r.baseline,
                        "ratio": r.ratio,
                        "target": r.target,
                        "met": r.met,
                    });
                    if let (Value::Object(m), Value::Object(extra)) = (&mut v, &r.json) {
                        m.insert("data".into(), Value::Object(extra.clone()));
                    }
                    v
                })
                .collect(),
        )
    }
}

fn ms(x: f64) -> String {
    if x >= 1000.0 {
        format!("{:.2} s", x / 1000.0)
    } else {
        format!("{x:.1} ms")
    }
}

fn mib(kb: i64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

// ---------------------------------------------------------------------------------
// P1: hook cost (enqueue only)

const HINT_TABLE: &str = "CREATE TABLE hint (
    id INTEGER PRIMARY KEY,
    domain TEXT NOT NULL,
    service TEXT NOT NULL,
    path TEXT NOT NULL,
    source TEXT NOT NULL,
    txn TEXT NOT NULL DEFAULT '',
    package TEXT,
    time INTEGER NOT NULL,
    UNIQUE (domain, service, path, source, txn)
) STRICT;
CREATE INDEX hint_service ON hint (domain, service);
";

/// The sqlite3 CLI script inserting the same hints in one transaction.
fn sqlite_script(paths: &[String]) -> Vec<u8> {
    let mut s =
        String::from("PRAGMA journal_mode = WAL;\nPRAGMA synchronous = FULL;\nBEGIN IMMEDIATE;\n");
    for p in paths {
        let service = p
            .trim_start_matches(STOCK)
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        s.push_str(&format!(
            "INSERT OR IGNORE INTO hint (domain, service, path, source, txn, package, time) VALUES ('s6', '{service}', '{p}', 'manual', '', NULL, strftime('%s'));\n"
        ));
    }
    s.push_str("COMMIT;\n");
    s.into_bytes()
}

fn p1(o: &Opts, t: &mut Table) {
    let sqlite3 = require("sqlite3");
    let cp = require("cp");
    let files: Vec<String> = (0..500)
        .flat_map(|i| {
            service_files(&svc(i), "v1")
                .into_iter()
                .map(move |(rel, _, _)| format!("{STOCK}/{}/{rel}", svc(i)))
        })
        .collect();
    let dirs: Vec<String> = (0..500).map(|i| format!("{STOCK}/{}", svc(i))).collect();
    // Templates: a svsettle database with its schema and an equivalent baseline
    // database; each run starts from a fresh copy of both (untimed).
    let tmpl = Root::new(&o.bin, S6_ONLY);
    run(tmpl.sv(&["enqueue", &format!("{STOCK}/warm/run")]), None).ok("svsettle enqueue");
    let state = tmpl.p("/var/lib/svsettle");
    let db = state.join("state.db");
    run(
        cmd(
            &sqlite3,
            &[
                &db.display().to_string(),
                "DELETE FROM hint; PRAGMA wal_checkpoint(TRUNCATE);",
            ],
        ),
        None,
    )
    .ok("sqlite3");
    let base_db = tmpl.p("/baseline/hints.db");
    fs::create_dir_all(tmpl.p("/baseline")).unwrap_or_else(|e| die(&format!("mkdir: {e}")));
    let mut init = String::from("PRAGMA journal_mode = WAL;\n");
    init.push_str(HINT_TABLE);
    run(
        cmd(&sqlite3, &[&base_db.display().to_string()]),
        Some(init.into_bytes()),
    )
    .ok("sqlite3");

    for (id, shape, paths) in [
        (
            "P1",
            "pacman shape: 5,000 paths (500 services x 10 files)",
            &files,
        ),
        ("P1", "apk shape: 500 service directories as argv", &dirs),
    ] {
        let script = sqlite_script(paths);
        let (mut sv_ms, mut bl_ms) = (Vec::new(), Vec::new());
        for r in 0..o.runs {
            let work = Root::new(&o.bin, S6_ONLY);
            fs::create_dir_all(work.p("/var/lib")).unwrap_or_else(|e| die(&format!("mkdir: {e}")));
            run(
                cmd(
                    &cp,
                    &[
                        "-a",
                        &state.display().to_string(),
                        &work.p("/var/lib/svsettle").display().to_string(),
                    ],
                ),
                None,
            )
            .ok("cp");
            let bdb = work.p("/hints.db");
            fs::copy(&base_db, &bdb).unwrap_or_else(|e| die(&format!("copy: {e}")));
            sync();
            let mut args = vec!["enqueue"];
            args.extend(paths.iter().map(String::as_str));
            let baseline = || {
                run(
                    cmd(&sqlite3, &[&bdb.display().to_string()]),
                    Some(script.clone()),
                )
                .ok("sqlite3")
            };
            let subject = || run(work.sv(&args), None).ok("svsettle enqueue");
            // alternate which goes first
            let (b, s) = if r % 2 == 0 {
                let b = baseline();
                (b, subject())
            } else {
                let s = subject();
                (baseline(), s)
            };
            bl_ms.push(b.ms());
            sv_ms.push(s.ms());
            let n = count_rows(
                &sqlite3,
                &work.p("/var/lib/svsettle/state.db"),
                "SELECT count(*) FROM hint",
            );
            let m = count_rows(&sqlite3, &bdb, "SELECT count(*) FROM hint");
            if n != paths.len() || m != paths.len() {
                die(&format!(
                    "P1: expected {} hints, svsettle has {n}, baseline {m}",
                    paths.len()
                ));
            }
        }
        let (s, b) = (median(&sv_ms), median(&bl_ms));
        let ratio = s / b;
        t.add(
            id,
            &format!("hook cost, enqueue only, {shape}"),
            ms(s),
            format!("sqlite3 CLI, same rows, one transaction: {}", ms(b)),
            Some(ratio),
            "<= 1.3x",
            Some(ratio <= 1.3),
            json!({"svsettle_ms": sv_ms, "baseline_ms": bl_ms, "paths": paths.len()}),
        );
    }
}

fn count_rows(sqlite3: &Path, db: &Path, q: &str) -> usize {
    run(cmd(sqlite3, &[&db.display().to_string(), q]), None)
        .ok("sqlite3")
        .stdout
        .trim()
        .parse()
        .unwrap_or(usize::MAX)
}

// ---------------------------------------------------------------------------------
// P2: no-op reconcile, and its growth

struct NoOp {
    n: usize,
    median_ms: f64,
    find_ms: f64,
    runs_ms: Vec<f64>,
    find_runs_ms: Vec<f64>,
    rss_kb: i64,
    signalled: usize,
    supervisor_calls: usize,
    setup_ms: f64,
    setup_rss_kb: i64,
}

fn noop(o: &Opts, n: usize) -> NoOp {
    let root = Root::new(&o.bin, S6_ONLY);
    write_services(&root, n);
    run(root.sv(&["enqueue", STOCK]), None).ok("svsettle enqueue");
    sync();
    let (first, setup_rss_kb) = run_rss(root.sv(&["reconcile", "--pending"]), None);
    let first = first.ok("svsettle reconcile (create)");
    let created = first
        .stdout
        .lines()
        .filter(|l| l.starts_with("created "))
        .count();
    if created != n {
        die(&format!(
            "P2: expected {n} created services, got {created}\n{}",
            tail(&first.stdout)
        ));
    }
    let hints: Vec<String> = (0..n).map(|i| format!("{STOCK}/{}/run", svc(i))).collect();
    let mut enqueue = vec!["enqueue"];
    enqueue.extend(hints.iter().map(String::as_str));
    let find = require("find");
    let stock = root.p(STOCK).display().to_string();
    // Steady state: the first no-op runs after a fresh create may still hash what
    // they cannot trust yet (files changed within the last seconds).
    std::thread::sleep(Duration::from_millis(2100));
    for _ in 0..2 {
        run(root.sv(&enqueue), None).ok("svsettle enqueue");
        run(root.sv(&["reconcile", "--pending"]), None).ok("svsettle reconcile");
    }
    root.reset_calls();
    let (mut sv_ms, mut bl_ms) = (Vec::new(), Vec::new());
    for r in 0..o.runs {
        run(root.sv(&enqueue), None).ok("svsettle enqueue");
        let baseline = || {
            let mut c = cmd(&find, &[&stock, "-printf", "%i %s %T@ %C@\n"]);
            c.stdout(Stdio::null());
            run(c, None).ok("find")
        };
        let subject = || run(root.sv(&["reconcile", "--pending"]), None).ok("svsettle reconcile");
        let (b, s) = if r % 2 == 0 {
            let b = baseline();
            (b, subject())
        } else {
            let s = subject();
            (baseline(), s)
        };
        let want = format!("unchanged: {n} services left untouched");
        if !s.stdout.lines().any(|l| l == want) {
            die(&format!("P2: expected {want:?}, got:\n{}", tail(&s.stdout)));
        }
        bl_ms.push(b.ms());
        sv_ms.push(s.ms());
    }
    // one more, for its peak memory
    run(root.sv(&enqueue), None).ok("svsettle enqueue");
    let (_, rss) = run_rss(root.sv(&["reconcile", "--pending"]), None);
    NoOp {
        n,
        median_ms: median(&sv_ms),
        find_ms: median(&bl_ms),
        runs_ms: sv_ms,
        find_runs_ms: bl_ms,
        rss_kb: rss,
        signalled: root.calls("s6-svc"),
        supervisor_calls: root.calls_total(),
        setup_ms: first.ms(),
        setup_rss_kb,
    }
}

fn p2(o: &Opts, t: &mut Table, mem: &mut Vec<(String, i64)>) {
    let sizes: &[usize] = if o.quick {
        &[100, 1000]
    } else {
        &[100, 1000, 10_000]
    };
    let results: Vec<NoOp> = sizes.iter().map(|&n| noop(o, n)).collect();
    let by = |n: usize| results.iter().find(|r| r.n == n);
    if let Some(r) = by(1000) {
        t.add(
            "P2",
            "no-op reconcile: 1,000 services (10 files each) hinted, none changed",
            ms(r.median_ms),
            format!("find stat'ing every stock entry: {}", ms(r.find_ms)),
            Some(r.median_ms / r.find_ms),
            "<= 30 ms",
            Some(r.median_ms <= 30.0),
            json!({"runs_ms": r.runs_ms, "find_ms": r.find_runs_ms, "max_rss_kb": r.rss_kb, "create_ms": r.setup_ms}),
        );
        t.add(
            "P2",
            "no-op reconcile: processes signalled (s6-svc calls) / supervisor programs run",
            format!("{} / {}", r.signalled, r.supervisor_calls),
            "-".into(),
            None,
            "0",
            Some(r.signalled == 0),
            json!({"s6_svc": r.signalled, "supervisor_programs": r.supervisor_calls}),
        );
    }
    for w in results.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let growth = b.median_ms / a.median_ms;
        let size = b.n as f64 / a.n as f64;
        t.add(
            "P2",
            &format!("no-op growth {} -> {} services", a.n, b.n),
            format!("{} -> {}", ms(a.median_ms), ms(b.median_ms)),
            format!("{size:.0}x the services"),
            Some(growth),
            &format!("<= {size:.0}x (linear)"),
            Some(growth <= size),
            json!({"from_ms": a.median_ms, "to_ms": b.median_ms, "from": a.n, "to": b.n}),
        );
    }
    if let Some(r) = by(10_000) {
        mem.push(("reconcile, 10,000 services, none changed".into(), r.rss_kb));
        mem.push((
            "reconcile, 10,000 new services created".into(),
            r.setup_rss_kb,
        ));
    }
}

// ---------------------------------------------------------------------------------
// P3: full apply

fn p3(o: &Opts, t: &mut Table) {
    let rsync = require("rsync");
    let sync_bin = require("sync");
    let n = 1000;
    let runs = if o.quick {
        o.runs.min(3)
    } else {
        o.runs.min(5)
    };
    let (mut sv_ms, mut bl_ms, mut rsync_ms) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        let root = Root::new(&o.bin, S6_ONLY);
        write_services(&root, n);
        run(root.sv(&["enqueue", STOCK]), None).ok("svsettle enqueue");
        let dest = root.p("/rsync-dest");
        fs::create_dir_all(&dest).unwrap_or_else(|e| die(&format!("mkdir: {e}")));
        let src = format!("{}/", root.p(STOCK).display());
        let dst = format!("{}/", dest.display());
        sync();
        let baseline = || {
            let a = run(cmd(&rsync, &["-a", "--delete", &src, &dst]), None).ok("rsync");
            let b = run(cmd(&sync_bin, &[]), None).ok("sync");
            (a.ms() + b.ms(), a.ms())
        };
        let subject = || {
            let s = run(root.sv(&["reconcile", "--pending"]), None).ok("svsettle reconcile");
            let created = s
                .stdout
                .lines()
                .filter(|l| l.starts_with("created "))
                .count();
            if created != n {
                die(&format!(
                    "P3: expected {n} created, got {created}\n{}",
                    tail(&s.stdout)
                ));
            }
            s
        };
        let ((b, a), s) = if r % 2 == 0 {
            let b = baseline();
            sync();
            (b, subject())
        } else {
            let s = subject();
            sync();
            (baseline(), s)
        };
        bl_ms.push(b);
        rsync_ms.push(a);
        sv_ms.push(s.ms());
    }
    let (s, b) = (median(&sv_ms), median(&bl_ms));
    t.add(
        "P3",
        "full apply: 1,000 new services x 10 files, journaled, fsynced",
        ms(s),
        format!("rsync -a --delete + sync: {}", ms(b)),
        Some(s / b),
        "<= 1.0x",
        Some(s / b <= 1.0),
        json!({"svsettle_ms": sv_ms, "baseline_ms": bl_ms, "rsync_only_ms": rsync_ms}),
    );
}

// ---------------------------------------------------------------------------------
// P4: restart precision on a real s6-svscan

fn hook_input(names: &[String]) -> Vec<u8> {
    // what pacman's NeedsTargets passes: relative, sorted, directories with a '/'
    let mut lines = Vec::new();
    for name in names {
        let dir = format!("{}/{name}", STOCK.trim_start_matches('/'));
        lines.push(format!("{dir}/"));
        for (rel, _, _) in service_files(name, "") {
            if let Some((sub, _)) = rel.split_once('/') {
                lines.push(format!("{dir}/{sub}/"));
            }
            lines.push(format!("{dir}/{rel}"));
        }
    }
    lines.sort();
    lines.dedup();
    let mut s = lines.join("\n");
    s.push('\n');
    s.into_bytes()
}

fn p4(o: &Opts, t: &mut Table) {
    let root = Root::new(
        &o.bin,
        &format!("{S6_ONLY}[domain.s6]\nenable-new = true\n"),
    );
    let svscan = Svscan::start(&root);
    let names: Vec<String> = (0..50).map(svc).collect();
    write_services(&root, names.len());
    run(root.sv(&["enqueue", STOCK]), None).ok("svsettle enqueue");
    run(root.sv(&["reconcile", "--pending"]), None).ok("svsettle reconcile (create)");
    let dirs: BTreeMap<String, PathBuf> = names
        .iter()
        .map(|n| (n.clone(), root.p(&format!("{LIVE}/{n}"))))
        .collect();
    let before = pids_of(&dirs);
    let stock = root.p(STOCK);

    // Transaction A: 20 packages, each changes its service's run script.
    let a: Vec<String> = names[..20].to_vec();
    for name in &a {
        let (_, run_script, mode) = &service_files(name, "v2")[0];
        replace_file(&stock.join(name).join("run"), run_script.as_bytes(), *mode);
    }
    root.reset_calls();
    let out = run(root.sv(&["hook", "pacman"]), Some(hook_input(&a))).ok("svsettle hook pacman");
    let after = pids_of(&dirs);
    let restarted = changed(&before, &after);
    let untouched_kept = names[20..]
        .iter()
        .filter(|n| before.get(*n) == after.get(*n))
        .count();
    let stops = root.calls("s6-svc");
    t.add(
        "P4",
        "restart precision: 50 running, one transaction changes 20 (restarted / untouched pids kept)",
        format!("{restarted} / {untouched_kept}"),
        "-".into(),
        None,
        "20 / 30",
        Some(restarted == 20 && untouched_kept == 30),
        json!({"restarted": restarted, "untouched_kept": untouched_kept, "s6_svc_calls": stops, "hook_output": out.stdout}),
    );

    // Transaction B: 20 packages upgraded, only 5 of their service directories change;
    // the other 15 are unpacked again with identical content (new inodes).
    let b: Vec<String> = names[20..40].to_vec();
    for (k, name) in b.iter().enumerate() {
        let tag = if k < 5 { "v2" } else { "v1" };
        for (rel, content, mode) in service_files(name, tag) {
            replace_file(&stock.join(name).join(rel), content.as_bytes(), mode);
        }
    }
    let before_b = pids_of(&dirs);
    run(root.sv(&["hook", "pacman"]), Some(hook_input(&b))).ok("svsettle hook pacman");
    let after_b = pids_of(&dirs);
    let ours = changed(&before_b, &after_b);
    // The per-package approach (what scriptlets do): restart every service of every
    // upgraded package.
    let svc_prog = require("s6-svc");
    for name in &b {
        run(
            cmd(&svc_prog, &["-r", &dirs[name].display().to_string()]),
            None,
        )
        .ok("s6-svc -r");
    }
    // wait until every restarted one is up with a new pid
    let mut after_pkg = BTreeMap::new();
    wait_for("per-package restarts", || {
        after_pkg = pids_of(&dirs);
        b.iter().all(|n| after_pkg.get(n) != after_b.get(n))
    });
    let theirs = changed(&after_b, &after_pkg);
    t.add(
        "P4",
        "20 packages upgraded, 5 service dirs changed: restarts, svsettle vs per-package restarts",
        format!("{ours}"),
        format!("per-package: {theirs}"),
        Some(ours as f64 / theirs as f64),
        "5 vs 20",
        Some(ours == 5 && theirs == 20),
        json!({"svsettle": ours, "per_package": theirs}),
    );
    drop(svscan);
}

// ---------------------------------------------------------------------------------
// P5: s6-rc, compiles and updates per transaction

fn p5(o: &Opts, t: &mut Table) {
    let what = "s6-rc: 20 longruns up, 10 packages change 8 and add 2 in one transaction (s6-rc-compile / s6-rc-update runs)";
    let programs = [
        "s6-rc-compile",
        "s6-rc-update",
        "s6-rc-init",
        "s6-rc",
        "s6-svscan",
    ];
    if let Some(missing) = programs.iter().find(|p| optional(p).is_none()) {
        t.add(
            "P5",
            what,
            "not available".into(),
            format!("{missing} not installed (../shared/tools/build-test-tools.sh)"),
            None,
            "1 / 1",
            None,
            json!({"available": false}),
        );
        return;
    }
    let root = Root::new(
        &o.bin,
        "[domain.s6]\nenabled = false\n[domain.runit]\nenabled = false\n",
    );
    let longrun = |name: &str, tag: &str| {
        let dir = root.p(&format!("{RC_STOCK}/{name}"));
        write_file(&dir.join("type"), b"longrun\n", 0o644);
        replace_file(
            &dir.join("run"),
            format!("#!/bin/sh\n# {name} {tag}\nexec sleep 100000\n").as_bytes(),
            0o755,
        );
    };
    let names: Vec<String> = (0..20).map(|i| format!("rc{i:02}")).collect();
    for n in &names {
        longrun(n, "v1");
    }
    run(root.sv(&["enqueue", RC_STOCK]), None).ok("svsettle enqueue");
    let first = run(root.sv(&["reconcile", "--pending"]), None);
    if first.code != 0 {
        t.add(
            "P5",
            what,
            "not available".into(),
            format!(
                "first reconcile exited {}: {}",
                first.code,
                tail(&first.stdout).replace('\n', " / ")
            ),
            None,
            "1 / 1",
            None,
            json!({"available": false, "stdout": first.stdout, "stderr": first.stderr}),
        );
        return;
    }
    let svscan = Svscan::start(&root);
    let host = |inner: &str| root.p(inner).display().to_string();
    run(
        cmd(
            &require("s6-rc-init"),
            &[
                "-c",
                &host(RC_COMPILED),
                "-l",
                &host(RC_LIVEDIR),
                &host(SCAN),
            ],
        ),
        None,
    )
    .ok("s6-rc-init");
    let livedir = host(RC_LIVEDIR);
    let mut up = vec!["-l", livedir.as_str(), "-u", "change"];
    up.extend(names.iter().map(String::as_str));
    run(cmd(&require("s6-rc"), &up), None).ok("s6-rc -u change");
    let dirs: BTreeMap<String, PathBuf> = names
        .iter()
        .map(|n| (n.clone(), root.p(&format!("{SCAN}/{n}"))))
        .collect();
    let before = pids_of(&dirs);
    // one transaction: 8 changed run scripts, 2 new services
    let changed_names: Vec<String> = names[..8].to_vec();
    for n in &changed_names {
        longrun(n, "v2");
    }
    let added: Vec<String> = (20..22).map(|i| format!("rc{i:02}")).collect();
    for n in &added {
        longrun(n, "v1");
    }
    let mut hook = String::new();
    for n in changed_names.iter().chain(&added) {
        let d = format!("{}/{n}", RC_STOCK.trim_start_matches('/'));
        hook.push_str(&format!("{d}/\n{d}/run\n{d}/type\n"));
    }
    root.reset_calls();
    let out = run(root.sv(&["hook", "pacman"]), Some(hook.into_bytes())).ok("svsettle hook pacman");
    let compiles = root.calls("s6-rc-compile");
    let updates = root.calls("s6-rc-update");
    let after = pids_of(&dirs);
    let restarted = changed(&before, &after);
    t.add(
        "P5",
        what,
        format!("{compiles} / {updates} (restarted {restarted} of 8 changed)"),
        "-".into(),
        None,
        "1 / 1",
        Some(compiles == 1 && updates == 1),
        json!({"available": true, "compiles": compiles, "updates": updates, "restarted": restarted, "hook_output": out.stdout}),
    );
    drop(svscan);
}

// ---------------------------------------------------------------------------------
// peak memory of the hook

fn mem_hook(o: &Opts, mem: &mut Vec<(String, i64)>) {
    let root = Root::new(&o.bin, S6_ONLY);
    let names: Vec<String> = (0..500).map(svc).collect();
    write_services(&root, names.len());
    let (out, kb) = run_rss(root.sv(&["hook", "pacman"]), Some(hook_input(&names)));
    out.ok("svsettle hook pacman");
    mem.push((
        "hook pacman, 500 new services (5,000 files) enqueued and created".into(),
        kb,
    ));
    // a settled system: what a later transaction touching them all costs
    std::thread::sleep(Duration::from_millis(2100));
    run(root.sv(&["hook", "pacman"]), Some(hook_input(&names))).ok("svsettle hook pacman");
    let (out, kb) = run_rss(root.sv(&["hook", "pacman"]), Some(hook_input(&names)));
    out.ok("svsettle hook pacman");
    mem.push((
        "hook pacman, the same 500 services again (none changed)".into(),
        kb,
    ));
    // the enqueue alone (P1's pacman shape)
    let files: Vec<String> = names
        .iter()
        .flat_map(|n| {
            service_files(n, "")
                .into_iter()
                .map(move |(rel, _, _)| format!("{STOCK}/{n}/{rel}"))
        })
        .collect();
    let mut args = vec!["enqueue"];
    args.extend(files.iter().map(String::as_str));
    let (out, kb) = run_rss(root.sv(&args), None);
    out.ok("svsettle enqueue");
    mem.push(("enqueue of 5,000 paths (P1)".into(), kb));
}

// ---------------------------------------------------------------------------------

fn machine() -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':').map(|x| x.1.trim().to_string()))
        .unwrap_or_default();
    let mem = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fs_type = run(
        cmd(
            &require("stat"),
            &[
                "-f",
                "-c",
                "%T",
                &std::env::temp_dir().display().to_string(),
            ],
        ),
        None,
    )
    .stdout;
    json!({
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_gib": (mem as f64 / 1048576.0 * 10.0).round() / 10.0,
        "kernel": kernel.trim(),
        "tmp_fs": fs_type.trim(),
        "loadavg_start": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

fn main() {
    let o = Opts::parse();
    if !o.bin.is_file() {
        die(&format!("no svsettle binary at {}", o.bin.display()));
    }
    let host = machine();
    eprintln!("bench: svsettle {} on {host}", o.bin.display());
    let started = Instant::now();
    let mut t = Table { rows: Vec::new() };
    let mut mem: Vec<(String, i64)> = Vec::new();
    if o.wants("P1") {
        p1(&o, &mut t);
    }
    if o.wants("P2") {
        p2(&o, &mut t, &mut mem);
    }
    if o.wants("P3") {
        p3(&o, &mut t);
    }
    if o.wants("P4") {
        p4(&o, &mut t);
    }
    if o.wants("MEM") {
        mem_hook(&o, &mut mem);
    }
    for (what, kb) in &mem {
        t.add(
            "MEM",
            &format!("max RSS: {what}"),
            mib(*kb),
            "-".into(),
            None,
            "-",
            None,
            json!({"max_rss_kb": kb}),
        );
    }
    if o.wants("P5") {
        p5(&o, &mut t);
    }
    let load_end = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!();
    println!(
        "svsettle benchmarks ({} runs per figure, medians; {} cpus, {}, load {} -> {})",
        o.runs,
        host["cpus"],
        host["cpu"].as_str().unwrap_or("?"),
        host["loadavg_start"].as_str().unwrap_or("?"),
        load_end
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    t.print();
    let doc = json!({
        "machine": host,
        "loadavg_end": load_end.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "runs": o.runs,
        "quick": o.quick,
        "binary": o.bin.display().to_string(),
        "seconds": started.elapsed().as_secs(),
        "time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "rows": t.json(),
    });
    if let Some(dir) = o.json.parent() {
        let _ = fs::create_dir_all(dir);
    }
    match serde_json::to_string_pretty(&doc) {
        Ok(text) => {
            if let Err(e) = fs::write(&o.json, text + "\n") {
                die(&format!("cannot write {}: {e}", o.json.display()));
            }
            println!("\nwritten to {}", o.json.display());
        }
        Err(e) => die(&format!("cannot encode the table: {e}")),
    }
}
