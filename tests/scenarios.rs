//! Behaviour every supervisor backend shares, written once and run per backend.
//!
//! A [`Flavor`] names a backend's trees and how to ask its supervisor about a service.
//! Adding a backend is one variant: its trees, how to start its scanner, how to read a
//! pid and a "down" state, how to stop a service by hand, and one `flavor_tests!` line
//! at the bottom of this file.
//!
//! Every service the scenarios start is a shell script that appends `TAG PID` to
//! `/starts/NAME` (`/starts/NAME.log` for its logger) inside the root, then `exec`s a
//! long sleep: the file counts how often each version started, and the pid on its last
//! line is the pid the supervisor reports for the running service.

use crate::util::*;
use std::collections::BTreeMap;
use std::fs;
use std::process::Command;
use std::time::Duration;

/// Limit of every bounded wait (the machine is shared and may be slow).
pub const LIMIT: Duration = Duration::from_secs(20);

/// A supervisor backend the scenarios run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    S6,
    Runit,
}

impl Flavor {
    /// The domain of the embedded default configuration.
    pub fn domain(self) -> &'static str {
        match self {
            Flavor::S6 => "s6",
            Flavor::Runit => "runit",
        }
    }

    /// Stock tree, inside the root.
    pub fn stock(self) -> &'static str {
        match self {
            Flavor::S6 => "/usr/share/s6/sv",
            Flavor::Runit => "/usr/share/runit/sv",
        }
    }

    /// Live tree, inside the root.
    pub fn live(self) -> &'static str {
        match self {
            Flavor::S6 => "/etc/s6/sv",
            Flavor::Runit => "/etc/sv",
        }
    }

    /// Scan directory, inside the root.
    pub fn scan(self) -> &'static str {
        match self {
            Flavor::S6 => "/run/service",
            Flavor::Runit => "/etc/service",
        }
    }

    /// Starts the scanner on the scan directory.
    pub fn start(self, root: &Root) -> Supervisor {
        match self {
            Flavor::S6 => start_s6_svscan(root, self.scan()),
            Flavor::Runit => start_runsvdir(root, self.scan()),
        }
    }

    /// Pid of a service (`foo`) or its logger (`foo/log`) while it is up.
    pub fn pid(self, root: &Root, svc: &str) -> Option<u32> {
        let dir = root.p(&format!("{}/{svc}", self.live()));
        match self {
            Flavor::S6 => s6_pid(&dir),
            Flavor::Runit => runit_pid(&dir),
        }
    }

    /// Whether the supervisor runs the service and reports it down.
    pub fn is_down(self, root: &Root, svc: &str) -> bool {
        let dir = root.p(&format!("{}/{svc}", self.live()));
        match self {
            Flavor::S6 => Command::new(require("s6-svstat"))
                .args(["-o", "up"])
                .arg(&dir)
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == b"false"),
            // runsv writes "down" alone once nothing runs (not "down, want up", not "finish")
            Flavor::Runit => {
                fs::read_to_string(dir.join("supervise/stat")).is_ok_and(|s| s.trim() == "down")
            }
        }
    }

    /// Stops a service by hand, as an admin would, and waits until it is down.
    pub fn stop(self, root: &Root, svc: &str) {
        let dir = root.p(&format!("{}/{svc}", self.live()));
        match self {
            Flavor::S6 => {
                let st = Command::new(require("s6-svc"))
                    .args(["-d", "-wD", "-T", "20000"])
                    .arg(&dir)
                    .status()
                    .expect("run s6-svc");
                assert!(st.success(), "s6-svc -d -wD {} failed: {st}", dir.display());
            }
            Flavor::Runit => {
                let out = Command::new(require("sv"))
                    .args(["-w", "20", "down"])
                    .arg(&dir)
                    .output()
                    .expect("run sv");
                assert!(
                    out.status.success(),
                    "sv -w 20 down {} failed: {}: {}{}",
                    dir.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// How many supervisor processes run the service's main part under the scanner.
    pub fn supervisors(self, sup: &Supervisor, name: &str) -> usize {
        match self {
            Flavor::S6 => sup.count_running("s6-supervise", name),
            Flavor::Runit => sup.count_running("runsv", name),
        }
    }
}

/// A temporary root with its scanner running. The scanner is declared first so it is
/// killed before the root is deleted.
pub struct Sys {
    pub sup: Supervisor,
    pub root: Root,
    pub f: Flavor,
}

/// One start of a service, from its `/starts` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub tag: String,
    pub pid: u32,
}

impl Sys {
    /// A root with only the flavor's domain, configured with `domain_keys` (`key =
    /// value` lines of that domain; `enable-new = true` unless they set it), and its
    /// scanner started.
    pub fn new(f: Flavor, domain_keys: &str) -> Sys {
        let enable = if domain_keys.contains("enable-new") {
            ""
        } else {
            "enable-new = true\n"
        };
        let root = Root::new(
            &[f.domain()],
            &format!("[domain.{}]\n{enable}{domain_keys}", f.domain()),
        );
        fs::create_dir_all(root.p("/starts")).expect("mkdir starts");
        let sup = f.start(&root);
        Sys { sup, root, f }
    }

    pub fn svsettle(&self, args: &[&str]) -> Out {
        self.root.svsettle(args)
    }

    /// Inner path of a stock file (`foo/run` → `/usr/share/s6/sv/foo/run`).
    pub fn stock_path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.f.stock())
    }

    /// Inner path of a live file.
    pub fn live_path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.f.live())
    }

    pub fn read_stock(&self, rel: &str) -> String {
        self.root.read(&self.stock_path(rel))
    }

    pub fn read_live(&self, rel: &str) -> String {
        self.root.read(&self.live_path(rel))
    }

    /// A run script that records its start as `tag`, then sleeps.
    pub fn run_script(&self, name: &str, tag: &str) -> String {
        format!(
            "#!/bin/sh\necho \"{tag} $$\" >> '{}/starts/{name}'\nexec sleep 86400\n",
            self.root.path.display()
        )
    }

    /// A logger run script that records its start as `tag`, then reads its input.
    pub fn log_script(&self, name: &str, tag: &str) -> String {
        format!(
            "#!/bin/sh\necho \"{tag} $$\" >> '{}/starts/{name}.log'\nexec cat > /dev/null\n",
            self.root.path.display()
        )
    }

    /// A finish script that records that it ran as `tag`.
    pub fn finish_script(&self, name: &str, tag: &str) -> String {
        format!(
            "#!/bin/sh\necho \"{tag}\" >> '{}/starts/{name}.finish'\n",
            self.root.path.display()
        )
    }

    /// Writes (or rewrites) the stock `run` of `name`.
    pub fn stock_run(&self, name: &str, tag: &str) {
        let script = self.run_script(name, tag);
        self.root.stock(self.f.stock(), name, &[("run", &script)]);
    }

    /// Writes (or rewrites) the stock `log/run` of `name`.
    pub fn stock_log(&self, name: &str, tag: &str) {
        let script = self.log_script(name, tag);
        self.root
            .stock(self.f.stock(), name, &[("log/run", &script)]);
    }

    /// Writes (or rewrites) the stock `finish` of `name`.
    pub fn stock_finish(&self, name: &str, tag: &str) {
        let script = self.finish_script(name, tag);
        self.root
            .stock(self.f.stock(), name, &[("finish", &script)]);
    }

    /// An admin's edit of the live `run` of `name`.
    pub fn admin_run(&self, name: &str, tag: &str) {
        self.root.write_exec(
            &self.live_path(&format!("{name}/run")),
            &self.run_script(name, tag),
        );
    }

    /// Deletes a stock service, as a package removal does.
    pub fn remove_stock(&self, name: &str) {
        fs::remove_dir_all(self.root.p(&self.stock_path(name))).expect("remove stock service");
    }

    /// `svsettle enqueue` of inner paths.
    pub fn enqueue(&self, paths: &[&str]) {
        let mut args = vec!["enqueue"];
        args.extend_from_slice(paths);
        self.svsettle(&args).ok();
    }

    /// The starts recorded for `file` (`foo`, `foo.log`).
    pub fn starts(&self, file: &str) -> Vec<Start> {
        fs::read_to_string(self.root.p(&format!("/starts/{file}")))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let (tag, pid) = l.rsplit_once(' ').unwrap_or((l, "0"));
                Start {
                    tag: tag.to_string(),
                    pid: pid.parse().unwrap_or(0),
                }
            })
            .collect()
    }

    /// The tags of the starts recorded for `file`.
    pub fn start_tags(&self, file: &str) -> Vec<String> {
        self.starts(file).into_iter().map(|s| s.tag).collect()
    }

    /// Waits until `file` records at least `n` starts, and returns them.
    #[track_caller]
    pub fn wait_starts(&self, file: &str, n: usize) -> Vec<Start> {
        wait_for(
            &format!("{n} start(s) recorded in /starts/{file}"),
            LIMIT,
            || self.starts(file).len() >= n,
        );
        self.starts(file)
    }

    pub fn pid(&self, svc: &str) -> Option<u32> {
        self.f.pid(&self.root, svc)
    }

    /// Waits until `svc` is up and returns its pid.
    #[track_caller]
    pub fn wait_up(&self, svc: &str) -> u32 {
        let mut pid = None;
        wait_for(&format!("{svc} to be up"), LIMIT, || {
            pid = self.pid(svc);
            pid.is_some()
        });
        pid.unwrap_or_default()
    }

    /// Waits until `svc` is up with a pid other than `old`, and returns it.
    #[track_caller]
    pub fn wait_new_pid(&self, svc: &str, old: u32) -> u32 {
        let mut pid = None;
        wait_for(
            &format!("{svc} to be up with a pid other than {old}"),
            LIMIT,
            || {
                pid = self.pid(svc).filter(|&p| p != old);
                pid.is_some()
            },
        );
        pid.unwrap_or_default()
    }

    /// Creates the stock services `names` (each with a logger when `with_log`), has
    /// svsettle create them through its first reconcile, waits until all are up and
    /// have recorded their start, and returns their pids (`foo`, `foo/log`).
    #[track_caller]
    pub fn start_services(&self, names: &[&str], with_log: bool) -> BTreeMap<String, u32> {
        for n in names {
            self.stock_run(n, "v1");
            if with_log {
                self.stock_log(n, "v1");
            }
        }
        self.enqueue(&[self.f.stock()]);
        let out = self.svsettle(&["reconcile", "--pending"]);
        out.ok();
        let mut want: Vec<String> = names
            .iter()
            .map(|n| format!("created {n} (enabled)"))
            .collect();
        want.sort();
        assert_eq!(out.lines_starting("created"), want, "{}", out.stdout);
        self.pids_when_up(names, with_log)
    }

    /// Waits until every service (and logger) is up and recorded one start per part.
    #[track_caller]
    pub fn pids_when_up(&self, names: &[&str], with_log: bool) -> BTreeMap<String, u32> {
        let mut pids = BTreeMap::new();
        for n in names {
            let pid = self.wait_up(n);
            let starts = self.wait_starts(n, 1);
            assert_eq!(starts.last().map(|s| s.pid), Some(pid), "{n}: {starts:?}");
            pids.insert(n.to_string(), pid);
            if with_log {
                let svc = format!("{n}/log");
                let pid = self.wait_up(&svc);
                let starts = self.wait_starts(&format!("{n}.log"), 1);
                assert_eq!(starts.last().map(|s| s.pid), Some(pid), "{svc}: {starts:?}");
                pids.insert(svc, pid);
            }
        }
        pids
    }

    /// Current pids of `svcs` (`None` when not up).
    pub fn pids(&self, svcs: &[&str]) -> BTreeMap<String, Option<u32>> {
        svcs.iter().map(|s| (s.to_string(), self.pid(s))).collect()
    }

    /// `svsettle status`, checked to say nothing is pending, in conflict or interrupted.
    #[track_caller]
    pub fn assert_quiet_status(&self) {
        let st = self.svsettle(&["status"]);
        st.ok()
            .has_line("pending: none")
            .has_line("conflicts: none")
            .lacks("interrupted")
            .lacks("problems");
    }

    /// The scan entry of `name` exists.
    pub fn linked(&self, name: &str) -> bool {
        self.root.exists(&format!("{}/{name}", self.f.scan()))
    }
}

/// Stdout lines other than the `unchanged: …` summary, sorted.
pub fn action_lines(out: &Out) -> Vec<String> {
    let mut v: Vec<String> = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with("unchanged: ") && !l.is_empty())
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// 10 services running; stock changes 3 of them → exactly those 3 restart, once each;
/// the other 7 keep their pids; a second reconcile changes nothing.
pub fn ten_services_three_changed(f: Flavor) {
    let sys = Sys::new(f, "");
    let names: Vec<String> = (0..10).map(|i| format!("svc{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let before = sys.start_services(&names, false);
    let changed = ["svc1", "svc4", "svc7"];
    for n in changed {
        sys.stock_run(n, "v2");
    }
    let paths: Vec<String> = changed
        .iter()
        .map(|n| sys.stock_path(&format!("{n}/run")))
        .collect();
    sys.enqueue(&paths.iter().map(String::as_str).collect::<Vec<_>>());

    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        changed
            .iter()
            .map(|n| format!("restarted {n}: run changed"))
            .collect::<Vec<_>>(),
        "{}",
        out.stdout
    );
    let mut after = BTreeMap::new();
    for n in &names {
        if changed.contains(n) {
            let pid = sys.wait_new_pid(n, before[*n]);
            let starts = sys.wait_starts(n, 2);
            assert_eq!(
                starts,
                vec![
                    Start {
                        tag: "v1".into(),
                        pid: before[*n]
                    },
                    Start {
                        tag: "v2".into(),
                        pid
                    }
                ],
                "{n} must have been restarted exactly once, into the new run"
            );
            assert_eq!(
                sys.read_live(&format!("{n}/run")),
                sys.read_stock(&format!("{n}/run"))
            );
            assert!(
                !alive(before[*n]),
                "{n}: old process {} still runs",
                before[*n]
            );
            after.insert(n.to_string(), pid);
        } else {
            assert_eq!(sys.pid(n), Some(before[*n]), "{n} must keep its pid");
            assert_eq!(sys.start_tags(n), ["v1"], "{n} must not have restarted");
            after.insert(n.to_string(), before[*n]);
        }
        assert_eq!(f.supervisors(&sys.sup, n), 1, "{n}: supervisors");
    }
    sys.assert_quiet_status();

    let again = sys.svsettle(&["reconcile", "--all"]);
    again
        .ok()
        .has_line("unchanged: 10 services left untouched")
        .lacks("restarted");
    assert_eq!(
        action_lines(&again),
        Vec::<String>::new(),
        "{}",
        again.stdout
    );
    for n in &names {
        assert_eq!(
            sys.pid(n),
            Some(after[*n]),
            "{n}: pid after the second reconcile"
        );
        let want = if changed.contains(n) { 2 } else { 1 };
        assert_eq!(sys.starts(n).len(), want, "{n}: starts");
    }
    sys.assert_quiet_status();
}

/// A change to `foo/log/run` only restarts foo's logger, not foo.
pub fn log_change_restarts_only_logger(f: Flavor) {
    let sys = Sys::new(f, "");
    let before = sys.start_services(&["foo", "bar"], true);
    sys.stock_log("foo", "v2");
    sys.enqueue(&[&sys.stock_path("foo/log/run")]);
    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        ["restarted foo/log: log/run changed"],
        "{}",
        out.stdout
    );
    let log_pid = sys.wait_new_pid("foo/log", before["foo/log"]);
    let starts = sys.wait_starts("foo.log", 2);
    assert_eq!(
        starts.iter().map(|s| s.tag.as_str()).collect::<Vec<_>>(),
        ["v1", "v2"]
    );
    assert_eq!(starts[1].pid, log_pid);
    assert_eq!(
        sys.pid("foo"),
        Some(before["foo"]),
        "foo itself must keep its pid"
    );
    assert_eq!(sys.start_tags("foo"), ["v1"]);
    for svc in ["bar", "bar/log"] {
        assert_eq!(sys.pid(svc), Some(before[svc]), "{svc} must keep its pid");
    }
    assert_eq!(sys.read_live("foo/log/run"), sys.read_stock("foo/log/run"));
    sys.svsettle(&["reconcile", "--all"])
        .ok()
        .has_line("unchanged: 2 services left untouched")
        .lacks("restarted");
}

/// A service an admin stopped is updated on disk and stays down.
pub fn down_service_updated_stays_down(f: Flavor) {
    let sys = Sys::new(f, "");
    let before = sys.start_services(&["foo", "bar"], false);
    f.stop(&sys.root, "foo");
    assert!(f.is_down(&sys.root, "foo"));
    sys.stock_run("foo", "v2");
    sys.enqueue(&[&sys.stock_path("foo/run")]);
    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        ["updated foo (down, left down): run changed"],
        "{}",
        out.stdout
    );
    assert_eq!(sys.read_live("foo/run"), sys.read_stock("foo/run"));
    assert!(f.is_down(&sys.root, "foo"), "foo must stay down");
    assert_eq!(sys.pid("foo"), None);
    assert_eq!(
        sys.start_tags("foo"),
        ["v1"],
        "foo must not have been started"
    );
    assert_eq!(sys.pid("bar"), Some(before["bar"]));
    let again = sys.svsettle(&["reconcile", "--all"]);
    again.ok().lacks("restarted").lacks("updated");
    assert!(f.is_down(&sys.root, "foo"), "foo must stay down");
    assert_eq!(sys.start_tags("foo"), ["v1"]);
    sys.assert_quiet_status();
}

/// An admin edit of live `run` and a stock change of `finish` are both kept: no
/// conflict; the service restarts once, running the admin's run; the old finish ran
/// when it was stopped.
pub fn admin_edit_and_stock_change_merge(f: Flavor) {
    let sys = Sys::new(f, "");
    sys.stock_finish("foo", "finish-v1");
    let before = sys.start_services(&["foo"], false);
    sys.admin_run("foo", "admin");
    let admin_run = sys.read_live("foo/run");
    sys.stock_finish("foo", "finish-v2");
    sys.enqueue(&[&sys.stock_path("foo/finish")]);
    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok().lacks("conflict");
    assert_eq!(
        action_lines(&out),
        ["restarted foo: finish changed"],
        "{}",
        out.stdout
    );
    assert_eq!(
        sys.read_live("foo/run"),
        admin_run,
        "the admin's run must be kept"
    );
    assert_eq!(sys.read_live("foo/finish"), sys.read_stock("foo/finish"));
    let pid = sys.wait_new_pid("foo", before["foo"]);
    let starts = sys.wait_starts("foo", 2);
    assert_eq!(
        starts,
        vec![
            Start {
                tag: "v1".into(),
                pid: before["foo"]
            },
            Start {
                tag: "admin".into(),
                pid
            }
        ]
    );
    // the stop ran the old finish, before the new one was in place
    assert_eq!(sys.start_tags("foo.finish"), ["finish-v1"]);
    sys.assert_quiet_status();
    sys.svsettle(&["reconcile", "--all"])
        .ok()
        .has_line("unchanged: 1 service left untouched");
    assert_eq!(sys.pid("foo"), Some(pid));
}

/// Sets up the conflict: the admin and stock both change `run`, differently.
fn conflict_setup(f: Flavor) -> (Sys, u32, String) {
    let sys = Sys::new(f, "");
    let before = sys.start_services(&["foo"], false);
    let pid = before["foo"];
    sys.admin_run("foo", "admin");
    let admin_run = sys.read_live("foo/run");
    sys.stock_run("foo", "v2");
    sys.enqueue(&[&sys.stock_path("foo/run")]);
    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok().lacks("restarted");
    assert_eq!(
        action_lines(&out),
        [
            "conflict foo: run changed in stock and in live; live kept (svsettle diff foo; svsettle resolve foo --keep-live|--take-stock)"
        ],
        "{}",
        out.stdout
    );
    assert_eq!(
        sys.read_live("foo/run"),
        admin_run,
        "live must be untouched"
    );
    assert_eq!(sys.pid("foo"), Some(pid), "foo must not restart");
    let st = sys.svsettle(&["status"]);
    st.ok().has_line("conflicts:").has_line(
        "  foo: run (live kept; svsettle diff foo, svsettle resolve foo --keep-live|--take-stock)",
    );
    // the conflict stays until resolved: another reconcile reports it again, touches nothing
    let again = sys.svsettle(&["reconcile", "--all"]);
    again
        .ok()
        .stdout_has("conflict foo: run changed in stock and in live; live kept")
        .lacks("restarted");
    assert_eq!(sys.read_live("foo/run"), admin_run);
    assert_eq!(sys.pid("foo"), Some(pid));
    (sys, pid, admin_run)
}

/// Conflict on `run`, resolved by keeping live.
pub fn conflict_resolve_keep_live(f: Flavor) {
    let (sys, pid, admin_run) = conflict_setup(f);
    let out = sys.svsettle(&["resolve", "foo", "--keep-live"]);
    out.ok()
        .has_line("resolved foo: kept live for run")
        .lacks("restarted");
    assert_eq!(sys.read_live("foo/run"), admin_run);
    assert_eq!(sys.pid("foo"), Some(pid));
    sys.assert_quiet_status();
    let next = sys.svsettle(&["reconcile", "--all"]);
    next.ok().has_line("unchanged: 1 service left untouched");
    assert_eq!(action_lines(&next), Vec::<String>::new(), "{}", next.stdout);
    assert_eq!(sys.read_live("foo/run"), admin_run);
    assert_eq!(sys.pid("foo"), Some(pid));
    assert_eq!(sys.start_tags("foo"), ["v1"]);
}

/// Conflict on `run`, resolved by taking stock: live equals stock, one restart.
pub fn conflict_resolve_take_stock(f: Flavor) {
    let (sys, pid, _) = conflict_setup(f);
    let out = sys.svsettle(&["resolve", "foo", "--take-stock"]);
    out.ok()
        .has_line("restarted foo: run changed")
        .has_line("resolved foo: took stock for run");
    assert_eq!(sys.read_live("foo/run"), sys.read_stock("foo/run"));
    let new_pid = sys.wait_new_pid("foo", pid);
    let starts = sys.wait_starts("foo", 2);
    assert_eq!(
        starts,
        vec![
            Start {
                tag: "v1".into(),
                pid
            },
            Start {
                tag: "v2".into(),
                pid: new_pid
            }
        ],
        "foo must have restarted exactly once, into the stock run"
    );
    sys.assert_quiet_status();
    let next = sys.svsettle(&["reconcile", "--all"]);
    next.ok().has_line("unchanged: 1 service left untouched");
    assert_eq!(action_lines(&next), Vec::<String>::new(), "{}", next.stdout);
    assert_eq!(sys.pid("foo"), Some(new_pid));
    assert_eq!(sys.starts("foo").len(), 2);
}

/// A stock service removed: stopped, scan entry gone, live directory gone.
pub fn removal(f: Flavor) {
    let sys = Sys::new(f, "");
    let before = sys.start_services(&["foo", "bar"], true);
    sys.remove_stock("foo");
    sys.enqueue(&[&sys.stock_path("foo")]);
    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        ["removed foo: stock service removed"],
        "{}",
        out.stdout
    );
    assert!(!sys.linked("foo"), "scan entry of foo must be gone");
    assert!(
        !sys.root.exists(&sys.live_path("foo")),
        "live foo must be gone"
    );
    for svc in ["foo", "foo/log"] {
        let old = before[svc];
        wait_for(&format!("old {svc} process {old} to end"), LIMIT, || {
            !alive(old)
        });
    }
    wait_for("the supervisor of foo to go", LIMIT, || {
        f.supervisors(&sys.sup, "foo") == 0
    });
    for svc in ["bar", "bar/log"] {
        assert_eq!(sys.pid(svc), Some(before[svc]), "{svc} must keep its pid");
    }
    assert_eq!(f.supervisors(&sys.sup, "bar"), 1);
    sys.assert_quiet_status();
    sys.svsettle(&["history", "foo"])
        .ok()
        .stdout_has("removed foo: stock service removed");
    let again = sys.svsettle(&["reconcile", "--all"]);
    again.ok().has_line("unchanged: 1 service left untouched");
    assert_eq!(
        action_lines(&again),
        Vec::<String>::new(),
        "{}",
        again.stdout
    );
}

/// A removed stock service whose live copy the admin modified is kept and reported.
pub fn removal_of_admin_modified_kept(f: Flavor) {
    let sys = Sys::new(f, "");
    let before = sys.start_services(&["foo"], false);
    sys.admin_run("foo", "admin");
    let admin_run = sys.read_live("foo/run");
    sys.remove_stock("foo");
    sys.enqueue(&[&sys.stock_path("foo")]);
    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        ["kept foo: stock service removed, but live was modified by the admin (run)"],
        "{}",
        out.stdout
    );
    assert_eq!(sys.read_live("foo/run"), admin_run);
    assert!(sys.linked("foo"), "scan entry of foo must stay");
    assert_eq!(sys.pid("foo"), Some(before["foo"]), "foo must keep running");
    let again = sys.svsettle(&["reconcile", "--all"]);
    again.ok().lacks("removed").lacks("restarted");
    assert_eq!(sys.read_live("foo/run"), admin_run);
    assert_eq!(sys.pid("foo"), Some(before["foo"]));
}

/// `--dry-run` prints `would …` lines and changes nothing on disk or in the database.
pub fn dry_run_changes_nothing(f: Flavor) {
    let sys = Sys::new(f, "");
    let before = sys.start_services(&["aaa", "bbb", "ccc"], true);
    sys.stock_run("aaa", "v2");
    sys.admin_run("bbb", "admin");
    sys.stock_run("bbb", "v2");
    sys.remove_stock("ccc");
    sys.stock_run("ddd", "v1");
    sys.enqueue(&[
        &sys.stock_path("aaa/run"),
        &sys.stock_path("bbb/run"),
        &sys.stock_path("ccc"),
        &sys.stock_path("ddd"),
    ]);
    let status_before = sys.svsettle(&["status"]).stdout.clone();
    let snap = sys.root.snapshot(&[]);
    let want = [
        "conflict bbb: run changed in stock and in live; live kept (svsettle diff bbb; svsettle resolve bbb --keep-live|--take-stock)",
        "would create ddd (enabled)",
        "would remove ccc: stock service removed",
        "would restart aaa: run changed",
    ];
    for args in [
        &["reconcile", "--pending", "--dry-run"][..],
        &["reconcile", "--all", "--dry-run"],
        &["reconcile", "aaa", "bbb", "ccc", "ddd", "--dry-run"],
    ] {
        let out = sys.svsettle(args);
        out.ok();
        assert_eq!(action_lines(&out), want, "{}", out.stdout);
        let after = sys.root.snapshot(&[]);
        let changed: Vec<_> = snap.symmetric_difference(&after).map(|(p, _)| p).collect();
        assert!(
            changed.is_empty(),
            "{args:?} changed files (including var/lib/svsettle): {changed:?}"
        );
        assert_eq!(sys.svsettle(&["status"]).stdout, status_before);
    }
    assert_eq!(
        sys.pids(&["aaa", "aaa/log", "bbb", "bbb/log", "ccc", "ccc/log"]),
        before
            .iter()
            .map(|(k, v)| (k.clone(), Some(*v)))
            .collect::<BTreeMap<_, _>>()
    );
    assert!(!sys.root.exists(&sys.live_path("ddd")));

    // the real run does what the dry run said
    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        [
            "conflict bbb: run changed in stock and in live; live kept (svsettle diff bbb; svsettle resolve bbb --keep-live|--take-stock)",
            "created ddd (enabled)",
            "removed ccc: stock service removed",
            "restarted aaa: run changed",
        ],
        "{}",
        out.stdout
    );
}

/// `diff` shows stock against live as a unified diff; `history` lists what was done,
/// oldest first, per service and limited with `-n`.
pub fn diff_and_history(f: Flavor) {
    let sys = Sys::new(f, "");
    sys.start_services(&["foo", "bar"], false);
    sys.svsettle(&["diff", "foo"])
        .ok()
        .has_line("foo: live matches stock");

    sys.admin_run("foo", "admin");
    let out = sys.svsettle(&["diff", "foo"]);
    out.ok()
        .has_line(&format!("--- stock {}", sys.stock_path("foo/run")))
        .has_line(&format!("+++ live {}", sys.live_path("foo/run")))
        .stdout_has("-echo \"v1 $$\"")
        .stdout_has("+echo \"admin $$\"")
        .stdout_has(" exec sleep 86400")
        .lacks("live matches stock");
    sys.root.stock(sys.f.stock(), "foo", &[("conf", "x\n")]);
    sys.svsettle(&["diff", "foo"]).ok().has_line(&format!(
        "only in stock: {} (file)",
        sys.stock_path("foo/conf")
    ));
    fs::remove_file(sys.root.p(&sys.stock_path("foo/conf"))).expect("rm conf");
    sys.svsettle(&["diff", "nosuch"])
        .code(2)
        .stderr_has("unknown service nosuch");

    sys.stock_run("bar", "v2");
    sys.enqueue(&[&sys.stock_path("bar/run")]);
    sys.svsettle(&["reconcile", "--pending"])
        .ok()
        .has_line("restarted bar: run changed");
    // runs that change nothing leave no history
    sys.svsettle(&["reconcile", "--all"])
        .ok()
        .has_line("unchanged: 2 services left untouched");

    let strip = |out: &Out| -> Vec<String> {
        out.stdout
            .lines()
            .map(|l| {
                // "YYYY-MM-DD HH:MM:SS detail"
                assert!(
                    l.len() > 20 && l.as_bytes()[4] == b'-' && l.as_bytes()[13] == b':',
                    "history line without a time: {l:?}"
                );
                l[20..].to_string()
            })
            .collect()
    };
    let all = sys.svsettle(&["history"]);
    all.ok();
    assert_eq!(
        strip(&all),
        [
            "created bar (enabled)",
            "created foo (enabled)",
            "restarted bar: run changed",
        ],
        "{}",
        all.stdout
    );
    let bar = sys.svsettle(&["history", "bar"]);
    bar.ok();
    assert_eq!(
        strip(&bar),
        ["created bar (enabled)", "restarted bar: run changed"]
    );
    let last = sys.svsettle(&["history", "-n", "1"]);
    last.ok();
    assert_eq!(strip(&last), ["restarted bar: run changed"]);
    let json = sys.svsettle(&["--json", "history", "foo"]);
    json.ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("history --json");
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 1, "{}", json.stdout);
    assert_eq!(rows[0]["service"], "foo");
    assert_eq!(rows[0]["domain"], f.domain());
}

/// The pipe a process has on `fd` (`pipe:[INODE]`), if it is one.
pub fn pipe_on(pid: u32, fd: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|t| t.display().to_string())
        .filter(|t| t.starts_with("pipe:"))
}

/// Waits until the service's stdout is the pipe its logger reads.
#[track_caller]
pub fn wait_piped(sys: &Sys, name: &str) -> (u32, u32) {
    let mut pids = (0, 0);
    wait_for(
        &format!("{name} to write into the pipe its logger reads"),
        LIMIT,
        || {
            let (Some(main), Some(log)) = (sys.pid(name), sys.pid(&format!("{name}/log"))) else {
                return false;
            };
            pids = (main, log);
            pipe_on(main, 1).is_some_and(|p| pipe_on(log, 0) == Some(p))
        },
    );
    pids
}

/// A logger added to a running service: the logger runs and reads the service's
/// output, so the service restarted once, under one supervisor.
pub fn logger_added_to_running_service(f: Flavor) {
    let sys = Sys::new(f, "");
    let before = sys.start_services(&["foo", "bar"], false);
    sys.stock_log("foo", "v1");
    sys.enqueue(&[&sys.stock_path("foo/log/run")]);
    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        ["restarted foo: log/run changed"],
        "{}",
        out.stdout
    );
    let (pid, log_pid) = wait_piped(&sys, "foo");
    assert_ne!(pid, before["foo"]);
    assert!(!alive(before["foo"]), "old foo process still runs");
    assert_eq!(
        sys.wait_starts("foo", 2).last().map(|s| s.pid),
        Some(pid),
        "foo must have restarted exactly once"
    );
    assert_eq!(sys.starts("foo").len(), 2);
    assert_eq!(
        sys.wait_starts("foo.log", 1).last().map(|s| s.pid),
        Some(log_pid)
    );
    assert_eq!(sys.pid("bar"), Some(before["bar"]), "bar must keep its pid");
    assert_eq!(f.supervisors(&sys.sup, "foo"), 1, "supervisors of foo");
    sys.assert_quiet_status();
    let again = sys.svsettle(&["reconcile", "--all"]);
    again.ok().has_line("unchanged: 2 services left untouched");
    assert_eq!(
        sys.pids(&["foo", "foo/log"]),
        [
            ("foo".to_string(), Some(pid)),
            ("foo/log".to_string(), Some(log_pid))
        ]
        .into()
    );
}

/// A logger removed from a running service: the logger stops, the service restarts
/// once (it no longer writes into a pipe), its live `log/` is gone.
pub fn logger_removed_from_running_service(f: Flavor) {
    let sys = Sys::new(f, "");
    let before = sys.start_services(&["foo", "bar"], true);
    fs::remove_dir_all(sys.root.p(&sys.stock_path("foo/log"))).expect("remove stock log");
    sys.enqueue(&[&sys.stock_path("foo/log")]);
    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        ["restarted foo: log and log/run changed"],
        "{}",
        out.stdout
    );
    assert!(
        !sys.root.exists(&sys.live_path("foo/log")),
        "live foo/log must be gone"
    );
    let pid = sys.wait_new_pid("foo", before["foo"]);
    wait_for("the old logger of foo to end", LIMIT, || {
        !alive(before["foo/log"])
    });
    assert_eq!(sys.wait_starts("foo", 2).last().map(|s| s.pid), Some(pid));
    assert_eq!(
        sys.starts("foo").len(),
        2,
        "foo must have restarted exactly once"
    );
    assert_eq!(
        sys.starts("foo.log").len(),
        1,
        "the logger must not start again"
    );
    assert_eq!(pipe_on(pid, 1), None, "foo still writes into a pipe");
    for svc in ["bar", "bar/log"] {
        assert_eq!(sys.pid(svc), Some(before[svc]), "{svc} must keep its pid");
    }
    assert_eq!(f.supervisors(&sys.sup, "foo"), 1, "supervisors of foo");
    sys.assert_quiet_status();
    let again = sys.svsettle(&["reconcile", "--all"]);
    again.ok().has_line("unchanged: 2 services left untouched");
    assert_eq!(sys.pid("foo"), Some(pid));
}

/// One `#[test]` per scenario for a flavor: `flavor_tests!(MODULE, Flavor::X);`.
macro_rules! flavor_tests {
    ($module:ident, $flavor:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn ten_services_three_changed() {
                super::ten_services_three_changed($flavor)
            }
            #[test]
            fn log_change_restarts_only_logger() {
                super::log_change_restarts_only_logger($flavor)
            }
            #[test]
            fn down_service_updated_stays_down() {
                super::down_service_updated_stays_down($flavor)
            }
            #[test]
            fn admin_edit_and_stock_change_merge() {
                super::admin_edit_and_stock_change_merge($flavor)
            }
            #[test]
            fn conflict_resolve_keep_live() {
                super::conflict_resolve_keep_live($flavor)
            }
            #[test]
            fn conflict_resolve_take_stock() {
                super::conflict_resolve_take_stock($flavor)
            }
            #[test]
            fn removal() {
                super::removal($flavor)
            }
            #[test]
            fn removal_of_admin_modified_kept() {
                super::removal_of_admin_modified_kept($flavor)
            }
            #[test]
            fn dry_run_changes_nothing() {
                super::dry_run_changes_nothing($flavor)
            }
            #[test]
            fn diff_and_history() {
                super::diff_and_history($flavor)
            }
            #[test]
            fn logger_added_to_running_service() {
                super::logger_added_to_running_service($flavor)
            }
            #[test]
            fn logger_removed_from_running_service() {
                super::logger_removed_from_running_service($flavor)
            }
        }
    };
}

flavor_tests!(s6, Flavor::S6);
flavor_tests!(runit, Flavor::Runit);
