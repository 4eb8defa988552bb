//! The crash matrix: for every crash point the binary lists (`svsettle failpoints`,
//! never a list kept here), a reconcile on a real supervisor is killed with SIGKILL at
//! that point, then a plain reconcile must leave every service fully new, supervised
//! exactly once, with no temporary names left, no hint lost and history saying what
//! happened.
//!
//! The scenario passes every point: a running service gets a new `run`, a service the
//! admin stopped gets a new `run`, a running service gets a new `log/run` only, `new`
//! is a new stock service (`enable-new = true`), `gone` (running, with a logger) is
//! removed from stock, and `keep` (running) does not change. Services are applied in
//! name order, so the first one of each kind is the one a crash point hits; the update
//! points run once per kind of update.
//!
//! Points named after a backend (`s6rc.after-swap`) belong to that backend's own
//! matrix; every other point is a step of apply and runs here for each flavor of
//! [`Flavor`] that has a `…_crash_matrix` test below.

use crate::scenarios::{Flavor, LIMIT, Start, Sys, action_lines, pipe_on, wait_piped};
use crate::util::*;
use std::collections::BTreeSet;
use std::sync::Mutex;

/// The crash points the binary knows, in execution order.
fn failpoints() -> Vec<String> {
    let out = Root::new(&[], "").svsettle(&["failpoints"]);
    out.ok();
    let points: Vec<String> = out.stdout.lines().map(String::from).collect();
    assert!(
        !points.is_empty(),
        "svsettle failpoints listed nothing\n{}",
        out.stdout
    );
    points
}

/// Names of the services that change; the first in alphabetical order is the one a
/// crash point of its kind of update hits (services are applied in name order).
#[derive(Debug, Clone, Copy)]
struct Cast {
    /// Running, `run` changed: restarted.
    upd: &'static str,
    /// Stopped by the admin, `run` changed: updated, left down.
    down: &'static str,
    /// Running, only `log/run` changed: its logger restarted.
    logger: &'static str,
}

/// Update crashes hit the running service first.
const RUNNING_FIRST: Cast = Cast {
    upd: "upd",
    down: "vdown",
    logger: "wlog",
};
/// Update crashes hit the down service first.
const DOWN_FIRST: Cast = Cast {
    upd: "upd",
    down: "adown",
    logger: "wlog",
};
/// Update crashes hit the logger-only change first.
const LOGGER_FIRST: Cast = Cast {
    upd: "upd",
    down: "vdown",
    logger: "alog",
};

/// Runs the scenario with `point` armed, then recovers and checks; panics on failure.
fn crash_at(f: Flavor, point: &str, cast: Cast) {
    let Cast { upd, down, logger } = cast;
    let sys = Sys::new(f, "");
    let before = sys.start_services(&["gone", "keep", upd, down, logger], true);
    f.stop(&sys.root, down);
    sys.stock_run(upd, "v2");
    sys.stock_run(down, "v2");
    sys.stock_log(logger, "v2");
    sys.stock_run("new", "v1");
    sys.remove_stock("gone");
    sys.enqueue(&[
        &sys.stock_path(&format!("{upd}/run")),
        &sys.stock_path(&format!("{down}/run")),
        &sys.stock_path(&format!("{logger}/log/run")),
        &sys.stock_path("new"),
        &sys.stock_path("gone"),
    ]);
    let at = format!("{point} ({upd}, {down}, {logger})");
    let at = at.as_str();

    // 1. the reconciler dies by SIGKILL at the point
    let armed = format!("{point}=return");
    let crashed = sys
        .root
        .svsettle_env(&["reconcile", "--pending"], &[("FAILPOINTS", &armed)]);
    assert!(
        crashed.code != 0,
        "crash point {at} was not reached: reconcile exited 0 (is the binary built with \
         --features failpoints? does the scenario pass this point?)\n--- stdout ---\n{}\n--- stderr ---\n{}",
        crashed.stdout,
        crashed.stderr
    );
    assert!(
        crashed.code == -1
            && crashed
                .stderr
                .contains(&format!("crash point {point}: killing myself")),
        "at crash point {at} the reconciler must die by SIGKILL, but it exited with code {}\n\
         --- stdout ---\n{}\n--- stderr ---\n{}",
        crashed.code,
        crashed.stdout,
        crashed.stderr
    );
    // every interrupted service still has its hint: none is dropped before its outcome
    // is recorded
    let st = sys.svsettle(&["--json", "status"]);
    st.ok();
    let v: serde_json::Value = serde_json::from_str(&st.stdout).expect("status --json");
    let names = |key: &str| -> BTreeSet<String> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("status --json lacks {key}: {}", st.stdout))
            .iter()
            .filter_map(|e| e["service"].as_str().map(String::from))
            .collect()
    };
    let interrupted = names("interrupted");
    assert!(
        !interrupted.is_empty(),
        "{at}: nothing interrupted\n{}",
        st.stdout
    );
    let pending = names("pending");
    assert!(
        interrupted.is_subset(&pending),
        "{at}: interrupted {interrupted:?} but pending only {pending:?}"
    );

    // 2. a plain reconcile repairs everything
    let out = sys.svsettle(&["-v", "reconcile"]);
    out.ok()
        .lacks("failed")
        .stdout_has("note: finishing interrupted");
    let first_lines = action_lines(&out);

    // the running service: fully new, running the new run, restarted exactly once
    for rel in ["run", "log/run"] {
        let rel = format!("{upd}/{rel}");
        assert_eq!(
            sys.read_live(&rel),
            sys.read_stock(&rel),
            "{at}: live {rel}"
        );
    }
    let upd_pid = sys.wait_new_pid(upd, before[upd]);
    let starts = sys.wait_starts(upd, 2);
    assert_eq!(
        starts,
        vec![
            Start {
                tag: "v1".into(),
                pid: before[upd]
            },
            Start {
                tag: "v2".into(),
                pid: upd_pid
            }
        ],
        "{at}: {upd} must have been restarted exactly once, into the new run"
    );
    let upd_log = format!("{upd}/log");
    assert_eq!(
        sys.pid(&upd_log),
        Some(before[&upd_log]),
        "{at}: the logger of {upd} must keep its pid"
    );

    // the down service: fully new, still down, never started
    assert_eq!(
        sys.read_live(&format!("{down}/run")),
        sys.read_stock(&format!("{down}/run")),
        "{at}: live {down}/run"
    );
    assert!(f.is_down(&sys.root, down), "{at}: {down} must stay down");
    assert_eq!(sys.start_tags(down), ["v1"], "{at}: {down} must not start");

    // the logger-only change: the logger restarted once, the service kept its pid
    let rel = format!("{logger}/log/run");
    assert_eq!(
        sys.read_live(&rel),
        sys.read_stock(&rel),
        "{at}: live {rel}"
    );
    let logger_log = format!("{logger}/log");
    let log_pid = sys.wait_new_pid(&logger_log, before[&logger_log]);
    let starts = sys.wait_starts(&format!("{logger}.log"), 2);
    assert_eq!(
        starts,
        vec![
            Start {
                tag: "v1".into(),
                pid: before[&logger_log]
            },
            Start {
                tag: "v2".into(),
                pid: log_pid
            }
        ],
        "{at}: the logger of {logger} must have been restarted exactly once"
    );
    assert_eq!(
        sys.pid(logger),
        Some(before[logger]),
        "{at}: {logger} itself must keep its pid"
    );

    // new: complete, enabled, started once
    assert_eq!(sys.read_live("new/run"), sys.read_stock("new/run"), "{at}");
    assert!(sys.linked("new"), "{at}: new must be linked");
    let new_pid = sys.wait_up("new");
    let starts = sys.wait_starts("new", 1);
    assert_eq!(
        starts,
        vec![Start {
            tag: "v1".into(),
            pid: new_pid
        }],
        "{at}: new must have started exactly once"
    );

    // gone: stopped, unlinked, deleted
    assert!(!sys.linked("gone"), "{at}: scan entry of gone must be gone");
    assert!(
        !sys.root.exists(&sys.live_path("gone")),
        "{at}: live gone must be deleted"
    );
    for svc in ["gone", "gone/log"] {
        let old = before[svc];
        wait_for(
            &format!("{at}: old {svc} process {old} to end"),
            LIMIT,
            || !alive(old),
        );
    }

    // keep: untouched
    for svc in ["keep", "keep/log"] {
        assert_eq!(
            sys.pid(svc),
            Some(before[svc]),
            "{at}: {svc} must keep its pid"
        );
    }
    assert_eq!(sys.start_tags("keep"), ["v1"], "{at}");

    // exactly one supervisor per service (none for the removed one)
    wait_for(
        &format!("{at}: the supervisors of gone to go"),
        LIMIT,
        || {
            f.supervisors(&sys.sup, "gone") == 0
                && (f != Flavor::S6 || sys.sup.count_running("s6-supervise", "gone/log") == 0)
        },
    );
    for name in ["keep", upd, down, logger, "new"] {
        assert_eq!(
            f.supervisors(&sys.sup, name),
            1,
            "{at}: supervisors of {name}"
        );
    }
    if f == Flavor::S6 {
        for name in ["keep", upd, down, logger] {
            let svc = format!("{name}/log");
            assert_eq!(
                sys.sup.count_running("s6-supervise", &svc),
                1,
                "{at}: supervisors of {svc}"
            );
        }
    }

    // no temporary names anywhere in the live tree or the scan directory
    for dir in [f.live(), f.scan()] {
        let left = names_starting(&sys.root.p(dir), ".svsettle");
        assert!(left.is_empty(), "{at}: left behind: {left:?}");
    }

    // no hint lost, nothing interrupted, history says what happened
    sys.assert_quiet_status();
    for (name, words) in [
        (upd, format!("restarted {upd}: run changed")),
        (
            down,
            format!("updated {down} (down, left down): run changed"),
        ),
        (logger, format!("restarted {logger}/log: log/run changed")),
        ("new", "created new (enabled)".to_string()),
        ("gone", "removed gone: stock service removed".to_string()),
    ] {
        sys.svsettle(&["history", name]).ok().stdout_has(&words);
    }

    // and the result is settled: a full reconcile finds nothing to do
    let again = sys.svsettle(&["reconcile", "--all"]);
    again.ok();
    assert_eq!(
        action_lines(&again),
        Vec::<String>::new(),
        "{at}: a second reconcile still acts (the first one said {first_lines:?})\n{}",
        again.stdout
    );
}

/// Names of the backends of the embedded default configuration, without dashes
/// (`s6`, `runit`, `s6rc`): a crash point named `BACKEND.step` belongs to that backend.
fn backend_names() -> BTreeSet<String> {
    let out = Root::new(&["s6", "runit", "s6-rc"], "").svsettle(&["config"]);
    out.ok();
    let names: BTreeSet<String> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("backend = "))
        .map(|b| b.trim_matches('"').replace('-', ""))
        .collect();
    assert!(
        names.len() >= 3,
        "backends in svsettle config:\n{}",
        out.stdout
    );
    names
}

/// The backend a crash point belongs to, if it is not a step every backend runs.
fn point_backend<'a>(point: &str, backends: &'a BTreeSet<String>) -> Option<&'a str> {
    let prefix = point.split('.').next().unwrap_or_default();
    backends.get(prefix).map(String::as_str)
}

/// A crash run: its label for the report and what it does (panics on failure).
type Job = (String, Box<dyn FnOnce() + Send>);

/// Runs what `make` makes of every job, 4 at a time (each crash run mostly waits on
/// supervisors); returns (label, panic message) of every run that failed.
fn run_jobs<T: Send>(jobs: Vec<T>, make: impl Fn(T) -> Job + Sync) -> Vec<(String, String)> {
    let queue = Mutex::new(jobs);
    let failures = Mutex::new(Vec::<(String, String)>::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let Some(job) = queue.lock().expect("queue").pop() else {
                        return;
                    };
                    let (label, run) = make(job);
                    let res = std::thread::scope(|inner| inner.spawn(run).join());
                    if let Err(e) = res {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "panic".into());
                        failures.lock().expect("failures").push((label, msg));
                    }
                }
            });
        }
    });
    failures.into_inner().expect("failures")
}

/// Runs `crash_at` for every point that is not another backend's (and, for the points
/// of an update and of the commit, once more with the down service and once with the
/// logger-only change as the first service hit), a few at a time; reports every
/// failure at once.
fn matrix(f: Flavor) {
    let all = failpoints();
    let backends = backend_names();
    let mine = f.domain().replace('-', "");
    let (points, others): (Vec<String>, Vec<String>) = all
        .iter()
        .cloned()
        .partition(|p| point_backend(p, &backends).is_none_or(|b| b == mine));
    let mut jobs: Vec<(String, Cast)> = points.iter().map(|p| (p.clone(), RUNNING_FIRST)).collect();
    for p in &points {
        if p.starts_with("update.") || p.starts_with("commit.") {
            jobs.push((p.clone(), DOWN_FIRST));
            jobs.push((p.clone(), LOGGER_FIRST));
        }
    }
    let runs = jobs.len();
    let failures = run_jobs(jobs, |(point, cast)| {
        (
            format!("{point} {cast:?}"),
            Box::new(move || crash_at(f, &point, cast)),
        )
    });
    let failed_points: std::collections::BTreeSet<&str> = failures
        .iter()
        .filter_map(|(p, _)| p.split(' ').next())
        .collect();
    eprintln!(
        "crash matrix ({f:?}): {} of {} crash points covered and recovered ({} runs, {} failed); \
         {} of the {} listed points belong to other backends' matrices: {others:?}",
        points.len() - failed_points.len(),
        points.len(),
        runs,
        failures.len(),
        others.len(),
        all.len()
    );
    if !failures.is_empty() {
        let mut report = String::new();
        for (p, m) in &failures {
            report.push_str(&format!("\n=== {p} ===\n{m}\n"));
        }
        panic!(
            "{} of {runs} crash runs failed ({} of {} points):{report}",
            failures.len(),
            failed_points.len(),
            points.len()
        );
    }
}

#[test]
fn s6_crash_matrix() {
    matrix(Flavor::S6);
}

#[test]
fn runit_crash_matrix() {
    matrix(Flavor::Runit);
}

/// A crash at `point` while `foo` gains a logger (`added`) or loses it (and gets a new
/// `run`): the recovering reconcile gives foo a new supervisor, so the logger runs and
/// reads foo's output (or is gone and foo writes into no pipe), foo restarted once.
fn logger_toggle_crash_at(f: Flavor, point: &str, added: bool) {
    let at = format!(
        "{point} ({f:?}, logger {})",
        if added { "added" } else { "removed" }
    );
    let sys = Sys::new(f, "");
    let before = sys.start_services(&["foo", "keep"], !added);
    if added {
        sys.stock_log("foo", "v1");
    } else {
        sys.stock_run("foo", "v2");
        std::fs::remove_dir_all(sys.root.p(&sys.stock_path("foo/log"))).expect("rm stock log");
    }
    sys.enqueue(&[&sys.stock_path("foo")]);
    let armed = format!("{point}=return");
    let crashed = sys
        .root
        .svsettle_env(&["reconcile", "--pending"], &[("FAILPOINTS", &armed)]);
    assert!(
        crashed.code == -1
            && crashed
                .stderr
                .contains(&format!("crash point {point}: killing myself")),
        "{at}: the reconciler must die by SIGKILL at the point, but it exited with code {}\n\
         --- stdout ---\n{}\n--- stderr ---\n{}",
        crashed.code,
        crashed.stdout,
        crashed.stderr
    );
    let out = sys.svsettle(&["-v", "reconcile"]);
    out.ok()
        .lacks("failed")
        .stdout_has("note: finishing interrupted");
    let tag = if added { "v1" } else { "v2" };
    let pid = sys.wait_new_pid("foo", before["foo"]);
    wait_for(&format!("{at}: foo to record its start"), LIMIT, || {
        sys.starts("foo").last().map(|s| s.pid) == Some(pid)
    });
    assert_eq!(
        sys.starts("foo"),
        vec![
            Start {
                tag: "v1".into(),
                pid: before["foo"]
            },
            Start {
                tag: tag.into(),
                pid
            }
        ],
        "{at}: foo must have restarted exactly once"
    );
    if added {
        let (main, log) = wait_piped(&sys, "foo");
        assert_eq!(main, pid, "{at}");
        assert_eq!(
            sys.wait_starts("foo.log", 1).last().map(|s| s.pid),
            Some(log),
            "{at}: the logger must have started once"
        );
        assert_eq!(sys.starts("foo.log").len(), 1, "{at}");
    } else {
        assert!(
            !sys.root.exists(&sys.live_path("foo/log")),
            "{at}: live foo/log"
        );
        let old = before["foo/log"];
        wait_for(&format!("{at}: old logger {old} to end"), LIMIT, || {
            !alive(old)
        });
        assert_eq!(pipe_on(pid, 1), None, "{at}: foo still writes into a pipe");
        assert_eq!(
            sys.starts("foo.log").len(),
            1,
            "{at}: the logger started again"
        );
    }
    assert_eq!(sys.read_live("foo/run"), sys.read_stock("foo/run"), "{at}");
    assert_eq!(
        sys.pid("keep"),
        Some(before["keep"]),
        "{at}: keep must keep its pid"
    );
    assert_eq!(
        f.supervisors(&sys.sup, "foo"),
        1,
        "{at}: supervisors of foo"
    );
    for dir in [f.live(), f.scan()] {
        let left = names_starting(&sys.root.p(dir), ".svsettle");
        assert!(left.is_empty(), "{at}: left behind: {left:?}");
    }
    sys.assert_quiet_status();
    let again = sys.svsettle(&["reconcile", "--all"]);
    again.ok();
    assert_eq!(
        action_lines(&again),
        Vec::<String>::new(),
        "{at}\n{}",
        again.stdout
    );
    assert_eq!(sys.pid("foo"), Some(pid), "{at}");
}

/// Every update crash point while a running service gains or loses its logger, on
/// both supervisor backends.
#[test]
fn logger_toggle_crash_recovers() {
    let points: Vec<String> = failpoints()
        .into_iter()
        .filter(|p| p.starts_with("update."))
        .collect();
    assert!(!points.is_empty(), "no update.* crash point listed");
    let mut jobs = Vec::new();
    for f in [Flavor::S6, Flavor::Runit] {
        for p in &points {
            for added in [true, false] {
                jobs.push((f, p.clone(), added));
            }
        }
    }
    let runs = jobs.len();
    let failures = run_jobs(jobs, |(f, point, added)| {
        (
            format!("{point} {f:?} added={added}"),
            Box::new(move || logger_toggle_crash_at(f, &point, added)),
        )
    });
    if !failures.is_empty() {
        let mut report = String::new();
        for (p, m) in &failures {
            report.push_str(&format!("\n=== {p} ===\n{m}\n"));
        }
        panic!("{} of {runs} crash runs failed:{report}", failures.len());
    }
}

/// The list is the code's: every name it prints is one `FAILPOINTS` accepts.
#[test]
fn failpoint_list_is_complete() {
    let points = failpoints();
    for p in &points {
        assert!(
            p.contains('.') && !p.contains(char::is_whitespace),
            "odd crash point name {p:?}"
        );
    }
    let mut sorted = points.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), points.len(), "duplicate names: {points:?}");
}

/// A crash before anything was written, then an admin edit of a file the update
/// would write, then a reconcile: the edit is kept and reported as a conflict, never
/// overwritten by rolling the old plan forward; the rest of the update is applied and
/// the service runs again.
#[test]
fn admin_edit_after_crash_is_kept() {
    for point in [
        "journal.after-plan",
        "update.after-stop",
        "update.mid-stage",
    ] {
        let sys = Sys::new(Flavor::S6, "");
        sys.stock_finish("foo", "finish-v1");
        let before = sys.start_services(&["foo"], false);
        sys.stock_run("foo", "v2");
        sys.stock_finish("foo", "finish-v2");
        sys.enqueue(&[&sys.stock_path("foo")]);
        let armed = format!("{point}=return");
        let crashed = sys
            .root
            .svsettle_env(&["reconcile", "--pending"], &[("FAILPOINTS", &armed)]);
        assert_eq!(crashed.code, -1, "{point}: not reached\n{}", crashed.stderr);
        sys.admin_run("foo", "admin");
        let admin_run = sys.read_live("foo/run");

        let out = sys.svsettle(&["-v", "reconcile"]);
        out.ok()
            .has_line(
                "note: interrupted update of foo given up: live run changed since it was planned; planned again",
            )
            .has_line("restarted foo: finish changed")
            .stdout_has("conflict foo: run changed in stock and in live; live kept");
        assert_eq!(
            sys.read_live("foo/run"),
            admin_run,
            "{point}: admin edit lost"
        );
        assert_eq!(
            sys.read_live("foo/finish"),
            sys.read_stock("foo/finish"),
            "{point}"
        );
        let pid = sys.wait_new_pid("foo", before["foo"]);
        wait_for(
            &format!("{point}: foo to run the admin's run"),
            LIMIT,
            || sys.starts("foo").last().map(|s| (s.tag.as_str(), s.pid)) == Some(("admin", pid)),
        );
        assert!(names_starting(&sys.root.p(Flavor::S6.live()), ".svsettle").is_empty());
        let st = sys.svsettle(&["status"]);
        st.ok()
            .has_line("pending: none")
            .lacks("interrupted")
            .stdout_has("  foo: run (live kept;");
    }
}
