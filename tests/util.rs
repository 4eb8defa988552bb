//! The test harness: a temporary root per test, the real `svsettle` binary with a
//! clean environment, and supervisors started inside the root and killed by pid
//! (with every descendant) when the guard drops.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const INSTALL_HINT: &str = "run scripts/setup.sh as root (apt-get install s6 runit execline pacman-package-manager libalpm-dev; \
     ../shared/tools/build-test-tools.sh for s6-rc and apk)";

/// PATH for svsettle and the tools: the test-built s6-rc/apk first, then the system.
pub fn test_path() -> String {
    let mut dirs: Vec<String> = Vec::new();
    if let Ok(p) = std::env::var("SVSETTLE_TEST_TOOLS") {
        dirs.push(format!("{p}/s6-rc/bin"));
        dirs.push(format!("{p}/apk/sbin"));
        dirs.push(format!("{p}/apk/bin"));
    }
    for d in [
        "/var/cache/svsettle-test-tools/s6-rc/bin",
        "/var/cache/svsettle-test-tools/apk/sbin",
    ] {
        if !dirs.iter().any(|x| x == d) {
            dirs.push(d.to_string());
        }
    }
    dirs.extend(
        [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
        .map(String::from),
    );
    dirs.join(":")
}

/// Finds a program the tests need, or fails naming it and how to install it.
#[track_caller]
pub fn require(program: &str) -> PathBuf {
    for d in test_path().split(':') {
        let p = Path::new(d).join(program);
        if p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
        {
            return p;
        }
    }
    panic!(
        "required program {program} not found on {}: {INSTALL_HINT}",
        test_path()
    );
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_svsettle"))
}

/// Result of running a command.
#[derive(Debug)]
pub struct Out {
    pub argv: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub listing: String,
}

impl Out {
    fn explain(&self) -> String {
        format!(
            "command: {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- root ---\n{}",
            self.argv.join(" "),
            self.code,
            self.stdout,
            self.stderr,
            self.listing
        )
    }

    #[track_caller]
    pub fn code(&self, want: i32) -> &Out {
        assert_eq!(self.code, want, "unexpected exit code\n{}", self.explain());
        self
    }

    #[track_caller]
    pub fn ok(&self) -> &Out {
        self.code(0)
    }

    #[track_caller]
    pub fn has_line(&self, line: &str) -> &Out {
        assert!(
            self.stdout.lines().any(|l| l == line),
            "stdout lacks the line {line:?}\n{}",
            self.explain()
        );
        self
    }

    #[track_caller]
    pub fn lacks(&self, needle: &str) -> &Out {
        assert!(
            !self.stdout.contains(needle),
            "stdout unexpectedly contains {needle:?}\n{}",
            self.explain()
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Out {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{}",
            self.explain()
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Out {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{}",
            self.explain()
        );
        self
    }

    /// Lines of stdout that start with `prefix`, sorted.
    pub fn lines_starting(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .stdout
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(String::from)
            .collect();
        v.sort();
        v
    }
}

/// A temporary root holding stock, live and scan trees and the state directory.
pub struct Root {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Root {
    /// A root with a config that keeps only `domains` (names of the embedded default)
    /// plus `extra` TOML appended.
    pub fn new(domains: &[&str], extra: &str) -> Root {
        let dir = tempfile::Builder::new()
            .prefix("svsettle-test.")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().to_path_buf();
        let r = Root { dir, path };
        let mut cfg = String::new();
        for d in ["s6", "runit", "s6-rc"] {
            if !domains.contains(&d) {
                cfg.push_str(&format!("[domain.{d}]\nenabled = false\n"));
            }
        }
        cfg.push_str(extra);
        r.write("/etc/svsettle.toml", &cfg);
        r
    }

    /// Host path of a path inside the root.
    pub fn p(&self, inner: &str) -> PathBuf {
        self.path.join(inner.trim_start_matches('/'))
    }

    pub fn write(&self, inner: &str, content: &str) {
        let p = self.p(inner);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    pub fn write_exec(&self, inner: &str, content: &str) {
        self.write(inner, content);
        fs::set_permissions(self.p(inner), fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    pub fn read(&self, inner: &str) -> String {
        fs::read_to_string(self.p(inner)).unwrap_or_else(|e| panic!("read {inner}: {e}"))
    }

    pub fn exists(&self, inner: &str) -> bool {
        self.p(inner).symlink_metadata().is_ok()
    }

    /// Writes a stock service: `files` are (relative path, content); `run`, `finish`,
    /// `log/run` and `check` are made executable.
    pub fn stock(&self, stock_tree: &str, name: &str, files: &[(&str, &str)]) {
        for (rel, content) in files {
            let inner = format!("{stock_tree}/{name}/{rel}");
            if ["run", "finish", "log/run", "log/finish", "check"].contains(rel) {
                self.write_exec(&inner, content);
            } else {
                self.write(&inner, content);
            }
        }
    }

    /// The svsettle binary with `--root` set and a clean environment.
    pub fn svsettle(&self, args: &[&str]) -> Out {
        self.svsettle_env(args, &[])
    }

    pub fn svsettle_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut argv = vec!["--root".to_string(), self.path.display().to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        self.run_cmd(&bin(), &argv, env, None)
    }

    pub fn svsettle_stdin(&self, args: &[&str], stdin: &[u8]) -> Out {
        let mut argv = vec!["--root".to_string(), self.path.display().to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        self.run_cmd(&bin(), &argv, &[], Some(stdin))
    }

    pub fn run_cmd(
        &self,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        stdin: Option<&[u8]>,
    ) -> Out {
        let mut child = spawn_hermetic(program, args, env, stdin.is_some());
        if let Some(data) = stdin {
            use std::io::Write;
            let mut s = child.stdin.take().expect("stdin");
            let _ = s.write_all(data);
        }
        let out = child.wait_with_output().expect("wait");
        let mut argv = vec![program.display().to_string()];
        argv.extend(args.iter().cloned());
        Out {
            argv,
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            listing: self.listing(),
        }
    }

    /// Every path under the root with its type, mode and link target (for failures).
    pub fn listing(&self) -> String {
        let mut out = String::new();
        let mut stack = vec![self.path.clone()];
        let mut n = 0;
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            let mut ents: Vec<_> = rd.flatten().collect();
            ents.sort_by_key(|e| e.file_name());
            for e in ents.into_iter().rev() {
                let p = e.path();
                let Ok(m) = p.symlink_metadata() else {
                    continue;
                };
                let rel = p
                    .strip_prefix(&self.path)
                    .unwrap_or(&p)
                    .display()
                    .to_string();
                if rel.starts_with("var/lib/pacman/sync")
                    || rel.contains("/supervise/")
                    || rel.contains("/event/")
                {
                    continue;
                }
                n += 1;
                if n > 400 {
                    out.push_str("…\n");
                    return out;
                }
                if m.file_type().is_symlink() {
                    out.push_str(&format!(
                        "{rel} -> {}\n",
                        fs::read_link(&p)
                            .map(|t| t.display().to_string())
                            .unwrap_or_default()
                    ));
                } else if m.is_dir() {
                    out.push_str(&format!("{rel}/ {:o}\n", m.permissions().mode() & 0o7777));
                    stack.push(p);
                } else {
                    out.push_str(&format!(
                        "{rel} {:o} {}B\n",
                        m.permissions().mode() & 0o7777,
                        m.len()
                    ));
                }
            }
        }
        out
    }

    /// Every path under the root (for "nothing outside the live trees changed").
    pub fn snapshot(&self, skip: &[&str]) -> BTreeSet<(String, Vec<u8>)> {
        let mut out = BTreeSet::new();
        let mut stack = vec![self.path.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                let rel = p
                    .strip_prefix(&self.path)
                    .unwrap_or(&p)
                    .display()
                    .to_string();
                if skip
                    .iter()
                    .any(|s| rel.starts_with(s.trim_start_matches('/')))
                {
                    continue;
                }
                let Ok(m) = p.symlink_metadata() else {
                    continue;
                };
                if m.file_type().is_symlink() {
                    out.insert((
                        rel,
                        fs::read_link(&p)
                            .map(|t| t.display().to_string().into_bytes())
                            .unwrap_or_default(),
                    ));
                } else if m.is_dir() {
                    out.insert((rel, Vec::new()));
                    stack.push(p);
                } else if m.is_file() {
                    out.insert((rel, fs::read(&p).unwrap_or_default()));
                }
            }
        }
        out
    }
}

/// Starts `program` with a clean environment (the test PATH, `LC_ALL=C`, `TZ=UTC` and
/// `env`), stdout and stderr captured, stdin piped or closed.
pub fn spawn_hermetic<S: AsRef<std::ffi::OsStr>>(
    program: &Path,
    args: &[S],
    env: &[(&str, &str)],
    piped_stdin: bool,
) -> Child {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", test_path())
        .env("LC_ALL", "C")
        .env("TZ", "UTC");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if piped_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

/// Polls `cond` until it holds or `limit` passes; panics naming `what`.
#[track_caller]
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Every descendant of `pid` (children first found through /proc/*/stat).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // the command name may hold spaces and parentheses: split after the last ')'
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

/// A scanner (s6-svscan or runsvdir) started by a test; killed with all its
/// descendants by pid when dropped.
pub struct Supervisor {
    pub child: Child,
    pub scan: PathBuf,
}

impl Supervisor {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(&mut self) {
        let pid = self.child.id();
        // stop the scanner first so nothing is restarted, then everything below it
        let below = descendants(pid);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
        for p in below.iter().chain(descendants(pid).iter()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `s6-svscan` on a scan directory inside the root and waits until it answers.
pub fn start_s6_svscan(root: &Root, scan_inner: &str) -> Supervisor {
    require("s6-svc");
    let sup = spawn_scanner(root, "s6-svscan", scan_inner);
    let scan = sup.scan.clone();
    let ctl = require("s6-svscanctl");
    wait_for("s6-svscan to answer", Duration::from_secs(10), || {
        Command::new(&ctl)
            .arg("-a")
            .arg(&scan)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    sup
}

/// Starts `runsvdir` on a scan directory inside the root.
pub fn start_runsvdir(root: &Root, scan_inner: &str) -> Supervisor {
    require("sv");
    spawn_scanner(root, "runsvdir", scan_inner)
}

/// Starts a scanner program on a scan directory inside the root (created if needed),
/// with a clean environment and its output discarded.
fn spawn_scanner(root: &Root, program: &str, scan_inner: &str) -> Supervisor {
    let scan = root.p(scan_inner);
    fs::create_dir_all(&scan).expect("mkdir scan");
    let child = Command::new(require(program))
        .arg(&scan)
        .env_clear()
        .env("PATH", test_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    Supervisor { child, scan }
}

/// The pid of an s6 service that is up, from `s6-svstat`.
pub fn s6_pid(dir: &Path) -> Option<u32> {
    let out = Command::new(require("s6-svstat"))
        .args(["-o", "up,pid"])
        .arg(dir)
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    let mut it = s.split_whitespace();
    match (it.next(), it.next()) {
        (Some("true"), Some(pid)) => pid.parse().ok(),
        _ => None,
    }
}

/// The pid of a runit service that is up, from `supervise/pid` and `supervise/stat`.
pub fn runit_pid(dir: &Path) -> Option<u32> {
    let stat = fs::read_to_string(dir.join("supervise/stat")).ok()?;
    if stat.trim() != "run" {
        return None;
    }
    fs::read_to_string(dir.join("supervise/pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The argument vector of a process (empty when it is gone).
pub fn argv_of(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

impl Supervisor {
    /// Descendants of the scanner running `program` with `arg` as first argument
    /// (`s6-supervise foo`, `s6-supervise foo/log`, `runsv foo`).
    pub fn count_running(&self, program: &str, arg: &str) -> usize {
        descendants(self.pid())
            .into_iter()
            .filter(|&p| alive(p))
            .map(argv_of)
            .filter(|a| {
                a.first()
                    .is_some_and(|p| Path::new(p).file_name() == Some(program.as_ref()))
                    && a.get(1).map(String::as_str) == Some(arg)
            })
            .count()
    }
}

/// Every path below `dir` (host path) whose name starts with `prefix`.
pub fn names_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with(prefix) {
                out.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

impl Root {
    /// Runs svsettle with `--root` and arguments that may be any bytes (non-UTF-8
    /// names), optionally behind a wrapper program (`setpriv …`, `timeout 60`), with
    /// extra environment and stdin.
    pub fn svsettle_raw(
        &self,
        wrap: &[&str],
        args: &[std::ffi::OsString],
        env: &[(&str, &str)],
        stdin: Option<&[u8]>,
    ) -> Out {
        let (program, mut argv): (PathBuf, Vec<std::ffi::OsString>) = match wrap.split_first() {
            Some((w, rest)) => {
                let mut v: Vec<std::ffi::OsString> = rest.iter().map(|s| s.into()).collect();
                v.push(bin().into());
                (require(w), v)
            }
            None => (bin(), Vec::new()),
        };
        argv.push("--root".into());
        argv.push(self.path.clone().into());
        argv.extend(args.iter().cloned());
        let mut child = spawn_hermetic(&program, &argv, env, stdin.is_some());
        let writer = stdin.map(|data| {
            let mut s = child.stdin.take().expect("stdin");
            let data = data.to_vec();
            // a thread, so a child that stops reading cannot deadlock the test
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = s.write_all(&data);
            })
        });
        let out = child.wait_with_output().expect("wait");
        if let Some(w) = writer {
            let _ = w.join();
        }
        let mut shown = vec![program.display().to_string()];
        shown.extend(argv.iter().map(|a| a.to_string_lossy().into_owned()));
        Out {
            argv: shown,
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            listing: self.listing(),
        }
    }

    /// Runs one SQL statement on the state database with the sqlite3 program and
    /// returns its output (rows one per line, columns separated by `|`).
    pub fn sql(&self, state_dir: &str, query: &str) -> String {
        let db = self.p(state_dir).join("state.db");
        let out = Command::new(require("sqlite3"))
            .arg(&db)
            .arg(query)
            .output()
            .expect("run sqlite3");
        assert!(
            out.status.success(),
            "sqlite3 {} {query:?}: {}",
            db.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }
}
