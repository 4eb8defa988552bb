//! The s6-rc backend on real s6-rc 0.5 (s6-rc-compile, s6-rc-init, s6-rc-update, s6-rc)
//! under a real s6-svscan, each test in its own root.
//!
//! Every test boots the way a machine does: svsettle creates the live source tree from
//! stock and compiles the first database (s6-rc not running yet), then the test starts
//! s6-svscan, runs `s6-rc-init` on the compiled symlink and brings services up.
//! `s6-rc-compile` and `s6-rc-update` are reached through logging wrappers placed first
//! on svsettle's PATH, so a test can count how often each ran.
//!
//! Longruns append `TAG PID` to `/starts/NAME` inside the root before they exec a long
//! sleep: the tag on the last line shows which definition runs, the line count how often
//! it started.

use crate::util::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

const STOCK: &str = "/usr/share/s6-rc/sources";
const LIVE: &str = "/etc/s6-rc/sv";
const COMPILED: &str = "/etc/s6-rc/compiled";
const LIVEDIR: &str = "/run/s6-rc";
const SCAN: &str = "/run/service";
const LIMIT: Duration = Duration::from_secs(20);

/// A root with the s6-rc domain only, s6-rc booted on svsettle's first database.
struct Rc {
    root: Root,
    sup: Option<Supervisor>,
}

impl Rc {
    /// A root with the s6-rc domain (plus `extra` config) and the logging wrappers.
    fn new(extra: &str) -> Rc {
        for p in [
            "s6-rc-compile",
            "s6-rc-update",
            "s6-rc-init",
            "s6-rc",
            "s6-rc-db",
            "s6-svscan",
        ] {
            require(p);
        }
        let rc = Rc {
            root: Root::new(&["s6-rc"], extra),
            sup: None,
        };
        rc.wrap("s6-rc-compile");
        rc.wrap("s6-rc-update");
        rc
    }

    /// Writes the stock services, then [`Rc::init`].
    fn boot(extra: &str, services: &[(&str, Kind)], up: &[&str]) -> Rc {
        let mut rc = Rc::new(extra);
        for (name, kind) in services {
            rc.stock(name, *kind, "v1");
        }
        rc.init(up);
        rc
    }

    /// Lets svsettle create the live tree and the first database from stock (s6-rc
    /// not running: compile only), then boots s6-rc on the compiled symlink and brings
    /// `up` up.
    fn init(&mut self, up: &[&str]) {
        let stock: Vec<String> = fs::read_dir(self.root.p(STOCK))
            .expect("stock tree")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        self.svsettle(&["enqueue", STOCK]).ok();
        let out = self.svsettle(&["reconcile", "--pending"]);
        out.ok();
        assert_eq!(
            out.lines_starting("created").len(),
            stock.len(),
            "{}",
            out.stdout
        );
        assert_eq!(self.calls("s6-rc-compile"), 1);
        assert_eq!(
            self.calls("s6-rc-update"),
            0,
            "no s6-rc runs yet: nothing to update"
        );
        let compiled = self.current_db();
        assert!(
            compiled
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("compiled-r"),
            "{compiled:?}"
        );

        self.sup = Some(start_s6_svscan(&self.root, SCAN));
        self.tool(
            "s6-rc-init",
            &[
                "-c",
                &self.host(COMPILED),
                "-l",
                &self.host(LIVEDIR),
                &self.host(SCAN),
            ],
        )
        .ok();
        if !up.is_empty() {
            let livedir = self.host(LIVEDIR);
            let mut args = vec!["-l", livedir.as_str(), "-u", "change"];
            args.extend_from_slice(up);
            self.tool("s6-rc", &args).ok();
        }
        for name in up {
            let kind = fs::read_to_string(self.root.p(&format!("{STOCK}/{name}/type")))
                .unwrap_or_default();
            if kind.trim() == "longrun" {
                self.wait_pid(name);
            }
        }
        fs::write(self.root.p("/calls.log"), "").expect("reset calls.log");
    }

    fn host(&self, inner: &str) -> String {
        self.root.p(inner).display().to_string()
    }

    /// A wrapper first on svsettle's PATH that logs its call and runs the real program.
    fn wrap(&self, program: &str) {
        let real = require(program);
        self.root.write_exec(
            &format!("/wrap/{program}"),
            &format!(
                "#!/bin/sh\necho \"{program} $*\" >> {}\nexec {} \"$@\"\n",
                self.host("/calls.log"),
                real.display()
            ),
        );
    }

    /// How often `program` ran since the last reset.
    fn calls(&self, program: &str) -> usize {
        fs::read_to_string(self.root.p("/calls.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(program))
            .count()
    }

    fn path_env(&self) -> String {
        format!("{}:{}", self.host("/wrap"), test_path())
    }

    fn svsettle(&self, args: &[&str]) -> Out {
        self.svsettle_env(args, &[])
    }

    fn svsettle_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let path = self.path_env();
        let mut all = vec![("PATH", path.as_str())];
        all.extend_from_slice(env);
        self.root.svsettle_env(args, &all)
    }

    fn tool(&self, program: &str, args: &[&str]) -> Out {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.root.run_cmd(&require(program), &args, &[], None)
    }

    /// Writes a stock service of `kind`; `tag` marks the version.
    fn stock(&self, name: &str, kind: Kind, tag: &str) {
        let dir = format!("{STOCK}/{name}");
        match kind {
            Kind::Longrun => {
                fs::create_dir_all(self.root.p("/starts")).expect("mkdir starts");
                self.root.write(&format!("{dir}/type"), "longrun\n");
                self.root.write_exec(
                    &format!("{dir}/run"),
                    &format!(
                        "#!/bin/sh\necho \"{tag} $$\" >> {}\nexec sleep 100000\n",
                        self.host(&format!("/starts/{name}"))
                    ),
                );
            }
            Kind::Oneshot => {
                let log = self.host(&format!("/oneshots/{name}"));
                fs::create_dir_all(self.root.p("/oneshots")).expect("mkdir oneshots");
                self.root.write(&format!("{dir}/type"), "oneshot\n");
                self.root.write(
                    &format!("{dir}/up"),
                    &format!("/bin/sh -c \"echo up-{tag} >> {log}\"\n"),
                );
                self.root.write(
                    &format!("{dir}/down"),
                    &format!("/bin/sh -c \"echo down-{tag} >> {log}\"\n"),
                );
            }
        }
    }

    /// Changes the run script of a stock longrun to version `tag`.
    fn change(&self, name: &str, tag: &str) {
        self.stock(name, Kind::Longrun, tag);
    }

    fn enqueue(&self, paths: &[String]) {
        let mut args = vec!["enqueue"];
        args.extend(paths.iter().map(String::as_str));
        self.svsettle(&args).ok();
    }

    fn pid(&self, name: &str) -> Option<u32> {
        s6_pid(&self.root.p(&format!("{SCAN}/{name}")))
    }

    fn wait_pid(&self, name: &str) -> u32 {
        let mut pid = None;
        wait_for(&format!("{name} to be up"), LIMIT, || {
            pid = self.pid(name);
            pid.is_some()
        });
        pid.unwrap_or_default()
    }

    fn pids(&self, names: &[String]) -> BTreeMap<String, u32> {
        names
            .iter()
            .map(|n| (n.clone(), self.wait_pid(n)))
            .collect()
    }

    /// Lines of `/starts/NAME`: (tag, pid) of every start.
    fn starts(&self, name: &str) -> Vec<(String, u32)> {
        fs::read_to_string(self.root.p(&format!("/starts/{name}")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (tag, pid) = l.split_once(' ')?;
                Some((tag.to_string(), pid.parse().ok()?))
            })
            .collect()
    }

    /// [`Rc::starts`] once the process `pid` wrote its line (s6 reports a service up
    /// as soon as it is spawned, before its run script got that far).
    fn starts_of(&self, name: &str, pid: u32) -> Vec<(String, u32)> {
        wait_for(
            &format!("{name} (pid {pid}) to log its start"),
            LIMIT,
            || self.starts(name).iter().any(|(_, p)| *p == pid),
        );
        self.starts(name)
    }

    fn oneshot_log(&self, name: &str) -> Vec<String> {
        fs::read_to_string(self.root.p(&format!("/oneshots/{name}")))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// The database the compiled symlink points to.
    fn current_db(&self) -> PathBuf {
        fs::canonicalize(self.root.p(COMPILED)).expect("compiled symlink resolves")
    }

    /// The database s6-rc runs (`LIVEDIR/compiled`).
    fn live_db(&self) -> PathBuf {
        fs::canonicalize(self.root.p(&format!("{LIVEDIR}/compiled"))).expect("live db resolves")
    }

    /// Entries of `/etc/s6-rc` other than the live tree and the symlink.
    fn db_dirs(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root.p("/etc/s6-rc"))
            .expect("list /etc/s6-rc")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "sv" && n != "compiled")
            .collect();
        v.sort();
        v
    }

    /// Type of a service in the running database, `None` when it is not in it.
    fn db_type(&self, name: &str) -> Option<String> {
        let out = self.tool("s6-rc-db", &["-l", &self.host(LIVEDIR), "type", name]);
        (out.code == 0).then(|| out.stdout.trim().to_string())
    }

    fn active(&self) -> Vec<String> {
        let out = self.tool("s6-rc", &["-l", &self.host(LIVEDIR), "-a", "list"]);
        out.ok();
        out.stdout.lines().map(String::from).collect()
    }

    /// The switch is complete: the symlink and s6-rc agree, no other database and no
    /// temporary file is left beside them.
    #[track_caller]
    fn assert_settled(&self) {
        let current = self.current_db();
        assert_eq!(current, self.live_db(), "symlink and s6-rc disagree");
        let name = current.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(self.db_dirs(), vec![name], "{}", self.root.listing());
        assert!(
            names_starting(&self.root.p("/etc/s6-rc"), ".svsettle-").is_empty(),
            "leftovers: {}",
            self.root.listing()
        );
    }
}

impl Drop for Rc {
    fn drop(&mut self) {
        if let Some(mut s) = self.sup.take() {
            s.stop();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Longrun,
    Oneshot,
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("svc{i}")).collect()
}

fn longruns(names: &[String]) -> Vec<(&str, Kind)> {
    names.iter().map(|n| (n.as_str(), Kind::Longrun)).collect()
}

fn run_paths(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("{STOCK}/{n}/run")).collect()
}

#[test]
fn ten_longruns_three_changed_one_compile_one_update() {
    let all = names(10);
    let up: Vec<&str> = all.iter().map(String::as_str).collect();
    let rc = Rc::boot("", &longruns(&all), &up);
    let before = rc.pids(&all);
    let old_db = rc.current_db();
    assert_eq!(old_db, rc.live_db());

    let changed = ["svc1", "svc4", "svc7"];
    for n in changed {
        rc.change(n, "v2");
    }
    rc.enqueue(&run_paths(&changed));
    let out = rc.svsettle(&["reconcile", "--pending"]);
    out.ok()
        .has_line("restarted svc1: run changed")
        .has_line("restarted svc4: run changed")
        .has_line("restarted svc7: run changed");
    assert_eq!(out.lines_starting("restarted").len(), 3, "{}", out.stdout);
    assert_eq!(rc.calls("s6-rc-compile"), 1, "one compile per reconcile");
    assert_eq!(rc.calls("s6-rc-update"), 1, "one update per reconcile");

    let after = rc.pids(&all);
    for n in &all {
        if changed.contains(&n.as_str()) {
            assert_ne!(before[n], after[n], "{n} should have restarted");
            let starts = rc.starts_of(n, after[n]);
            assert_eq!(starts.len(), 2, "{n} started twice in all: {starts:?}");
            assert_eq!(starts[1], ("v2".to_string(), after[n]), "{n} runs v2");
            assert!(rc.root.read(&format!("{LIVE}/{n}/run")).contains("v2"));
        } else {
            assert_eq!(before[n], after[n], "{n} should have kept its pid");
            assert_eq!(rc.starts_of(n, after[n]).len(), 1);
        }
    }
    assert_ne!(rc.current_db(), old_db, "symlink repointed");
    assert!(!old_db.exists(), "old database deleted");
    rc.assert_settled();

    // Nothing left to do: no compile, no update.
    rc.svsettle(&["reconcile", "--all"])
        .ok()
        .lacks("restarted")
        .has_line("unchanged: 10 services left untouched");
    assert_eq!(rc.calls("s6-rc-compile"), 1);
    assert_eq!(rc.calls("s6-rc-update"), 1);
    assert_eq!(rc.pids(&all), after);
}

#[test]
fn changed_oneshot_is_rerun_with_new_definition() {
    let rc = Rc::boot(
        "",
        &[
            ("web", Kind::Longrun),
            ("setup", Kind::Oneshot),
            ("later", Kind::Oneshot),
        ],
        &["web", "setup"],
    );
    assert_eq!(rc.oneshot_log("setup"), ["up-v1"]);
    let web = rc.wait_pid("web");

    rc.stock("setup", Kind::Oneshot, "v2");
    rc.stock("later", Kind::Oneshot, "v2");
    rc.enqueue(&[format!("{STOCK}/setup"), format!("{STOCK}/later")]);
    let out = rc.svsettle(&["reconcile", "--pending"]);
    out.ok()
        .has_line("restarted setup: down and up changed")
        .has_line("updated later (down, left down): down and up changed");
    // down with the old definition, up with the new one, once
    assert_eq!(rc.oneshot_log("setup"), ["up-v1", "down-v1", "up-v2"]);
    assert!(
        rc.oneshot_log("later").is_empty(),
        "a down oneshot stays down"
    );
    assert_eq!(rc.wait_pid("web"), web);
    assert_eq!(rc.calls("s6-rc-update"), 1);
    let active = rc.active();
    assert!(active.contains(&"setup".to_string()) && !active.contains(&"later".to_string()));
    rc.assert_settled();
}

fn added_service(enable_new: bool) {
    let all = names(3);
    let up: Vec<&str> = all.iter().map(String::as_str).collect();
    let extra = format!("[domain.s6-rc]\nenable-new = {enable_new}\n");
    let rc = Rc::boot(&extra, &longruns(&all), &up);
    let before = rc.pids(&all);

    rc.stock("extra", Kind::Longrun, "v1");
    rc.enqueue(&[format!("{STOCK}/extra")]);
    let out = rc.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(rc.db_type("extra").as_deref(), Some("longrun"));
    assert!(rc.root.exists(&format!("{LIVE}/extra/run")));
    if enable_new {
        out.has_line("created extra (enabled)");
        let pid = rc.wait_pid("extra");
        assert_eq!(rc.starts_of("extra", pid), [("v1".to_string(), pid)]);
    } else {
        out.has_line("created extra (not enabled: enable-new = false)");
        assert!(!rc.active().contains(&"extra".to_string()));
        assert!(rc.starts("extra").is_empty(), "never started");
    }
    assert_eq!(rc.pids(&all), before);
    assert_eq!(rc.calls("s6-rc-compile"), 1);
    assert_eq!(rc.calls("s6-rc-update"), 1);
    rc.assert_settled();
}

#[test]
fn added_service_enters_the_database_not_started_by_default() {
    added_service(false);
}

#[test]
fn added_service_is_started_with_enable_new() {
    added_service(true);
}

#[test]
fn removed_service_is_stopped_and_leaves_the_database() {
    let all = names(4);
    let up: Vec<&str> = all.iter().map(String::as_str).collect();
    let rc = Rc::boot("", &longruns(&all), &up);
    let before = rc.pids(&all);

    fs::remove_dir_all(rc.root.p(&format!("{STOCK}/svc2"))).expect("rm stock svc2");
    rc.enqueue(&[format!("{STOCK}/svc2")]);
    rc.svsettle(&["reconcile", "--pending"])
        .ok()
        .has_line("removed svc2: stock service removed");
    assert_eq!(rc.db_type("svc2"), None, "svc2 gone from the database");
    assert!(!rc.root.exists(&format!("{LIVE}/svc2")));
    assert!(!rc.root.exists(&format!("{SCAN}/svc2")));
    wait_for("the old svc2 process to exit", LIMIT, || {
        !alive(before["svc2"])
    });
    for n in ["svc0", "svc1", "svc3"] {
        assert_eq!(rc.wait_pid(n), before[n], "{n} kept its pid");
    }
    assert_eq!(rc.calls("s6-rc-update"), 1);
    rc.assert_settled();
}

#[test]
fn broken_definition_fails_cleanly_and_the_rest_proceeds() {
    let all = names(6);
    let up: Vec<&str> = all.iter().map(String::as_str).collect();
    let rc = Rc::boot("", &longruns(&all), &up);
    let before = rc.pids(&all);
    let db = rc.current_db();
    let dirs = rc.db_dirs();

    // A dependency on a service that does not exist.
    rc.root
        .write(&format!("{STOCK}/svc3/dependencies"), "nope\n");
    rc.enqueue(&[format!("{STOCK}/svc3/dependencies")]);
    let out = rc.svsettle(&["reconcile", "--pending"]);
    out.code(1).stdout_has(
        "failed svc3: s6-rc-compile refused the new definition, nothing switched: during dependency resolution for service svc3: undefined service name nope",
    );
    assert_eq!(rc.current_db(), db, "old database still current");
    assert_eq!(rc.live_db(), db, "s6-rc still runs the old database");
    assert_eq!(rc.db_dirs(), dirs, "no new database left behind");
    assert!(
        !rc.root.exists(&format!("{LIVE}/svc3/dependencies")),
        "live untouched"
    );
    assert_eq!(rc.calls("s6-rc-update"), 0);
    assert_eq!(rc.pids(&all), before, "all services still up, same pids");
    rc.assert_settled();

    // Still broken, and another service changes: that one goes through.
    rc.change("svc5", "v2");
    rc.enqueue(&run_paths(&["svc5"]));
    let out = rc.svsettle(&["reconcile", "--pending"]);
    out.code(1)
        .stdout_has("failed svc3: s6-rc-compile refused")
        .has_line("restarted svc5: run changed");
    assert_eq!(rc.calls("s6-rc-update"), 1);
    assert_ne!(rc.current_db(), db);
    let after = rc.pids(&all);
    assert_ne!(after["svc5"], before["svc5"]);
    for n in all.iter().filter(|n| *n != "svc5") {
        assert_eq!(after[n], before[n], "{n} kept its pid");
    }
    assert!(!rc.root.exists(&format!("{LIVE}/svc3/dependencies")));
    rc.assert_settled();
}

#[test]
fn pipeline_producer_restart_keeps_its_logger() {
    let mut rc = Rc::new("");
    let log = rc.host("/app.log");
    rc.root.write(&format!("{STOCK}/app/type"), "longrun\n");
    rc.root
        .write(&format!("{STOCK}/app/producer-for"), "applog\n");
    rc.root.write_exec(
        &format!("{STOCK}/app/run"),
        "#!/bin/sh\nwhile :; do echo tick-v1; sleep 0.1; done\n",
    );
    rc.root.write(&format!("{STOCK}/applog/type"), "longrun\n");
    rc.root
        .write(&format!("{STOCK}/applog/consumer-for"), "app\n");
    rc.root
        .write(&format!("{STOCK}/applog/pipeline-name"), "app-pipeline\n");
    rc.root.write_exec(
        &format!("{STOCK}/applog/run"),
        &format!("#!/bin/sh\nexec cat >> {log}\n"),
    );
    rc.init(&["app-pipeline"]);
    let read = || fs::read_to_string(&log).unwrap_or_default();
    wait_for("tick-v1 in the log", LIMIT, || read().contains("tick-v1"));
    let app = rc.wait_pid("app");
    let applog = rc.wait_pid("applog");

    rc.root.write_exec(
        &format!("{STOCK}/app/run"),
        "#!/bin/sh\nwhile :; do echo tick-v2; sleep 0.1; done\n",
    );
    rc.enqueue(&run_paths(&["app"]));
    rc.svsettle(&["reconcile", "--pending"])
        .ok()
        .has_line("restarted app: run changed");
    wait_for("tick-v2 through the same pipe", LIMIT, || {
        read().contains("tick-v2")
    });
    assert_ne!(rc.wait_pid("app"), app);
    assert_eq!(rc.wait_pid("applog"), applog, "the logger kept running");
    rc.assert_settled();
}

/// One transaction (svc1 changed, extra added with enable-new, svc2 removed) killed
/// at `point`, then a plain reconcile: everything ends new, each changed service
/// restarted once, one `s6-rc-update` in all, the symlink and s6-rc agree.
fn crash_at(point: &str) {
    let all = names(3);
    let up: Vec<&str> = all.iter().map(String::as_str).collect();
    let rc = Rc::boot("[domain.s6-rc]\nenable-new = true\n", &longruns(&all), &up);
    let before = rc.pids(&all);
    rc.change("svc1", "v2");
    rc.stock("extra", Kind::Longrun, "v1");
    fs::remove_dir_all(rc.root.p(&format!("{STOCK}/svc2"))).expect("rm stock svc2");
    rc.enqueue(&[
        format!("{STOCK}/svc1/run"),
        format!("{STOCK}/svc2"),
        format!("{STOCK}/extra"),
    ]);
    let failpoint = format!("{point}=return");
    let crashed = rc.svsettle_env(&["reconcile", "--pending"], &[("FAILPOINTS", &failpoint)]);
    assert_ne!(
        crashed.code, 0,
        "{point}: should have died\n{}",
        crashed.stdout
    );
    crashed.stderr_has(&format!("crash point {point}"));

    let out = rc.svsettle(&["-v", "reconcile", "--pending"]);
    out.ok();
    if point == "journal.after-plan" || point == "s6rc.after-compile" {
        // never switched to: rolled back and done again
        out.stdout_has("was never switched to; planned again")
            .has_line("restarted svc1: run changed")
            .has_line("created extra (enabled)")
            .has_line("removed svc2: stock service removed");
    } else {
        out.stdout_has("finishing interrupted");
    }
    assert_eq!(rc.calls("s6-rc-update"), 1, "{point}: one update in all");
    let after = rc.pids(&["svc0".to_string(), "svc1".to_string()]);
    assert_eq!(after["svc0"], before["svc0"], "{point}: svc0 kept its pid");
    assert_ne!(after["svc1"], before["svc1"], "{point}: svc1 restarted");
    let v2: Vec<_> = rc
        .starts_of("svc1", after["svc1"])
        .into_iter()
        .filter(|(tag, _)| tag == "v2")
        .collect();
    assert_eq!(
        v2,
        [("v2".to_string(), after["svc1"])],
        "{point}: svc1 restarted once"
    );
    assert!(rc.root.read(&format!("{LIVE}/svc1/run")).contains("v2"));
    let extra = rc.wait_pid("extra");
    assert_eq!(
        rc.starts_of("extra", extra).len(),
        1,
        "{point}: extra started once"
    );
    assert_eq!(rc.db_type("svc2"), None, "{point}: svc2 left the database");
    assert!(!rc.root.exists(&format!("{LIVE}/svc2")), "{point}");
    assert!(!alive(before["svc2"]), "{point}: svc2 stopped");
    rc.assert_settled();
    rc.svsettle(&["reconcile", "--all"])
        .ok()
        .lacks("restarted")
        .lacks("created")
        .lacks("removed")
        .lacks("failed");
    assert_eq!(rc.calls("s6-rc-update"), 1, "{point}: nothing left to do");
}

/// Every crash point an s6-rc reconcile passes (the switch steps and the generic
/// journaled steps; not the s6 or runit ones), two at a time.
#[test]
fn crash_at_every_point_converges_with_one_restart() {
    let listed = Root::new(&["s6-rc"], "").svsettle(&["failpoints"]);
    listed.ok();
    for p in ["s6rc.after-compile", "s6rc.after-update", "s6rc.after-swap"] {
        listed.stdout_has(p);
    }
    let points: Vec<String> = listed
        .stdout
        .lines()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .filter(|p| !p.starts_with("s6.") && !p.starts_with("runit."))
        .map(String::from)
        .collect();
    let queue = std::sync::Mutex::new(points.clone());
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while let Some(point) = queue.lock().expect("queue").pop() {
                    let res = std::thread::scope(|inner| inner.spawn(|| crash_at(&point)).join());
                    if let Err(e) = res {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "panic".into());
                        failures
                            .lock()
                            .expect("failures")
                            .push(format!("=== {point} ===\n{msg}"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("failures");
    assert!(
        failures.is_empty(),
        "{} of {} crash points failed:\n{}",
        failures.len(),
        points.len(),
        failures.join("\n")
    );
}

/// s6-rc-update switches, but a service cannot come back (it now depends on a new
/// oneshot that fails): the switch stands, the live tree matches it, the service fails.
#[test]
fn switched_with_failures_reports_the_service_that_is_down() {
    let all = names(2);
    let up: Vec<&str> = all.iter().map(String::as_str).collect();
    let rc = Rc::boot("", &longruns(&all), &up);
    let before = rc.pids(&all);
    rc.root.write(&format!("{STOCK}/broken/type"), "oneshot\n");
    rc.root.write(&format!("{STOCK}/broken/up"), "false\n");
    rc.root
        .write(&format!("{STOCK}/svc1/dependencies"), "broken\n");
    rc.enqueue(&[
        format!("{STOCK}/broken"),
        format!("{STOCK}/svc1/dependencies"),
    ]);
    let out = rc.svsettle(&["reconcile", "--pending"]);
    out.code(1)
        .stdout_has("failed svc1: switched to the new database, but s6-rc-update exited 1 (some state transitions failed)")
        .stdout_has("unable to start service broken")
        .has_line("created broken (not enabled: enable-new = false)");
    assert!(
        out.stdout.lines().all(|l| !l.starts_with("s6-rc")),
        "one line per service:\n{}",
        out.stdout
    );
    assert_eq!(rc.db_type("broken").as_deref(), Some("oneshot"), "switched");
    assert!(
        rc.root.exists(&format!("{LIVE}/svc1/dependencies")),
        "live matches the database"
    );
    assert!(!rc.active().contains(&"svc1".to_string()));
    assert_eq!(rc.wait_pid("svc0"), before["svc0"]);
    rc.assert_settled();
}

/// s6-rc-update cannot stop a service it must restart (a oneshot whose old `down`
/// fails): not switched, what it stopped is started again, the live tree untouched.
#[test]
fn not_switched_leaves_the_old_database_and_restarts_what_stopped() {
    let rc = Rc::boot(
        "",
        &[("svc0", Kind::Longrun), ("stuck", Kind::Oneshot)],
        &["svc0", "stuck"],
    );
    // make the running definition's down fail: replace it through svsettle first,
    // with `stuck` down so it is not restarted
    rc.tool("s6-rc", &["-l", &rc.host(LIVEDIR), "-d", "change", "stuck"])
        .ok();
    rc.root.write(&format!("{STOCK}/stuck/down"), "false\n");
    rc.enqueue(&[format!("{STOCK}/stuck/down")]);
    rc.svsettle(&["reconcile", "--pending"])
        .ok()
        .has_line("updated stuck (down, left down): down changed");
    rc.tool("s6-rc", &["-l", &rc.host(LIVEDIR), "-u", "change", "stuck"])
        .ok();
    let db = rc.current_db();
    let dirs = rc.db_dirs();
    fs::write(rc.root.p("/calls.log"), "").expect("reset calls.log");

    rc.stock("stuck", Kind::Oneshot, "v2");
    rc.change("svc0", "v2");
    rc.enqueue(&[format!("{STOCK}/stuck"), format!("{STOCK}/svc0/run")]);
    let out = rc.svsettle(&["reconcile", "--pending"]);
    out.code(1)
        .stdout_has("failed stuck: s6-rc-update exited 9 (some services failed to stop), the database was not switched")
        .stdout_has("failed svc0: s6-rc-update exited 9");
    assert_eq!(rc.calls("s6-rc-update"), 1);
    assert_eq!(rc.current_db(), db);
    assert_eq!(rc.live_db(), db);
    assert_eq!(rc.db_dirs(), dirs, "the new database was removed");
    assert!(
        rc.root.read(&format!("{LIVE}/svc0/run")).contains("v1"),
        "live untouched"
    );
    let active = rc.active();
    assert!(active.contains(&"stuck".to_string()) && active.contains(&"svc0".to_string()));
    let now = rc.wait_pid("svc0");
    assert_eq!(
        rc.starts_of("svc0", now).last().map(|s| s.0.as_str()),
        Some("v1")
    );
    rc.assert_settled();
}

/// A compiled database that is a directory, not a symlink, cannot be switched
/// atomically: refused up front with the way out, nothing written.
#[test]
fn compiled_directory_instead_of_symlink_is_refused() {
    let rc = Rc::new("");
    rc.root
        .write(&format!("{COMPILED}/n"), "admin's database\n");
    rc.stock("svc0", Kind::Longrun, "v1");
    rc.enqueue(&[format!("{STOCK}/svc0")]);
    let out = rc.svsettle(&["reconcile", "--pending"]);
    out.code(1)
        .stdout_has("failed svc0: ")
        .stdout_has("is not a symlink, so it cannot be switched atomically");
    assert_eq!(rc.calls("s6-rc-compile"), 0);
    assert!(!rc.root.exists(&format!("{LIVE}/svc0")), "live untouched");
    assert_eq!(rc.db_dirs(), Vec::<String>::new(), "nothing compiled");
    assert_eq!(rc.root.read(&format!("{COMPILED}/n")), "admin's database\n");
}
