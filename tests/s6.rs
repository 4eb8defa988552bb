//! s6-specific behaviour on a real s6-svscan: what the scanner sees (inodes, links,
//! supervisors), policies (`enable-new = false`, `restart = "manual"`, `exclude`),
//! and services that are not supervised.

use crate::scenarios::{Flavor, LIMIT, Start, Sys, action_lines};
use crate::util::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

const F: Flavor = Flavor::S6;

fn ino(sys: &Sys, inner: &str) -> (u64, u64) {
    let m = fs::symlink_metadata(sys.root.p(inner)).unwrap_or_else(|e| panic!("stat {inner}: {e}"));
    (m.dev(), m.ino())
}

fn s6_svc(sys: &Sys, args: &[&str], svc: &str) {
    let dir = sys.root.p(&sys.live_path(svc));
    let st = Command::new(require("s6-svc"))
        .args(args)
        .arg(&dir)
        .status()
        .expect("run s6-svc");
    assert!(st.success(), "s6-svc {args:?} {}: {st}", dir.display());
}

/// A changed service is updated in place: same directory inode (s6-svscan keys on
/// it), its `supervise/` runtime state kept, still one s6-supervise; the scan entry
/// is the relative link svsettle made.
#[test]
fn update_in_place_keeps_inode_and_runtime_state() {
    let sys = Sys::new(F, "");
    let before = sys.start_services(&["foo"], true);
    let dir = ino(&sys, "/etc/s6/sv/foo");
    let supervise = ino(&sys, "/etc/s6/sv/foo/supervise");
    let log_dir = ino(&sys, "/etc/s6/sv/foo/log");
    assert_eq!(
        fs::read_link(sys.root.p("/run/service/foo")).expect("scan link"),
        std::path::Path::new("../../etc/s6/sv/foo")
    );

    sys.stock_run("foo", "v2");
    sys.stock_log("foo", "v2");
    sys.enqueue(&[&sys.stock_path("foo")]);
    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        ["restarted foo: log/run and run changed"],
        "{}",
        out.stdout
    );
    let pid = sys.wait_new_pid("foo", before["foo"]);
    let log_pid = sys.wait_new_pid("foo/log", before["foo/log"]);
    assert_eq!(
        sys.wait_starts("foo", 2),
        [
            Start {
                tag: "v1".into(),
                pid: before["foo"]
            },
            Start {
                tag: "v2".into(),
                pid
            }
        ]
    );
    assert_eq!(
        sys.wait_starts("foo.log", 2),
        [
            Start {
                tag: "v1".into(),
                pid: before["foo/log"]
            },
            Start {
                tag: "v2".into(),
                pid: log_pid
            }
        ]
    );
    assert_eq!(
        ino(&sys, "/etc/s6/sv/foo"),
        dir,
        "live foo was replaced, not updated in place"
    );
    assert_eq!(ino(&sys, "/etc/s6/sv/foo/log"), log_dir);
    assert_eq!(
        ino(&sys, "/etc/s6/sv/foo/supervise"),
        supervise,
        "supervise/ was replaced"
    );
    assert_eq!(sys.sup.count_running("s6-supervise", "foo"), 1);
    assert_eq!(sys.sup.count_running("s6-supervise", "foo/log"), 1);
    assert!(names_starting(&sys.root.p("/etc/s6/sv"), ".svsettle").is_empty());
}

/// `enable-new = false`: the live directory is created but not linked, so nothing
/// runs; once the admin links it, later changes restart it like any other.
#[test]
fn enable_new_false_creates_without_linking() {
    let sys = Sys::new(F, "enable-new = false\n");
    sys.stock_run("foo", "v1");
    sys.enqueue(&[&sys.stock_path("foo")]);
    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        ["created foo (not enabled: enable-new = false)"],
        "{}",
        out.stdout
    );
    assert_eq!(sys.read_live("foo/run"), sys.read_stock("foo/run"));
    assert!(!sys.linked("foo"));
    assert_eq!(sys.sup.count_running("s6-supervise", "foo"), 0);
    assert!(sys.starts("foo").is_empty());

    // the admin enables it
    std::os::unix::fs::symlink("../../etc/s6/sv/foo", sys.root.p("/run/service/foo"))
        .expect("link");
    let ctl = Command::new(require("s6-svscanctl"))
        .arg("-a")
        .arg(sys.root.p("/run/service"))
        .status()
        .expect("s6-svscanctl");
    assert!(ctl.success());
    let pid = sys.wait_up("foo");
    sys.wait_starts("foo", 1);

    sys.stock_run("foo", "v2");
    sys.enqueue(&[&sys.stock_path("foo/run")]);
    sys.svsettle(&["reconcile", "--pending"])
        .ok()
        .has_line("restarted foo: run changed");
    let new_pid = sys.wait_new_pid("foo", pid);
    assert_eq!(
        sys.wait_starts("foo", 2),
        [
            Start {
                tag: "v1".into(),
                pid
            },
            Start {
                tag: "v2".into(),
                pid: new_pid
            }
        ]
    );
}

/// `restart = "manual"`: a changed running service is left alone and reported as
/// pending; once the admin has stopped it, the next reconcile updates it and leaves it
/// down for the admin to start.
#[test]
fn manual_restart_policy_leaves_running_service_alone() {
    let sys = Sys::new(F, "restart = \"manual\"\n");
    let before = sys.start_services(&["foo", "bar"], false);
    let old_run = sys.read_live("foo/run");
    sys.stock_run("foo", "v2");
    sys.enqueue(&[&sys.stock_path("foo/run")]);
    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        [
            "pending foo: run changed; restart = \"manual\" and it is up: stop it, reconcile, then start it"
        ],
        "{}",
        out.stdout
    );
    assert_eq!(sys.read_live("foo/run"), old_run, "live must be untouched");
    assert_eq!(sys.pid("foo"), Some(before["foo"]));
    let st = sys.svsettle(&["status"]);
    st.ok()
        .has_line("pending a manual restart:")
        .stdout_has("  foo: ");

    F.stop(&sys.root, "foo");
    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        ["updated foo (down, left down): run changed"],
        "{}",
        out.stdout
    );
    assert_eq!(sys.read_live("foo/run"), sys.read_stock("foo/run"));
    assert!(F.is_down(&sys.root, "foo"));
    sys.assert_quiet_status();
    sys.svsettle(&["status"])
        .ok()
        .lacks("pending a manual restart");

    s6_svc(&sys, &["-u"], "foo");
    let pid = sys.wait_up("foo");
    assert_eq!(
        sys.wait_starts("foo", 2)[1],
        Start {
            tag: "v2".into(),
            pid
        }
    );
    assert_eq!(sys.pid("bar"), Some(before["bar"]));
}

/// A service listed in `exclude` is never touched, whatever stock does.
#[test]
fn excluded_service_untouched() {
    let sys = Sys::new(F, "exclude = [\"foo\"]\n");
    sys.stock_run("foo", "v1");
    let before = sys.start_services(&["bar"], false);
    assert!(
        !sys.root.exists(&sys.live_path("foo")),
        "excluded foo was created"
    );
    sys.stock_run("bar", "v2");
    sys.stock_run("foo", "v2");
    sys.enqueue(&[&sys.stock_path("foo/run"), &sys.stock_path("bar/run")]);
    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        [
            "excluded foo: listed in exclude, not touched",
            "restarted bar: run changed"
        ],
        "{}",
        out.stdout
    );
    assert!(!sys.root.exists(&sys.live_path("foo")));
    sys.wait_new_pid("bar", before["bar"]);
    sys.assert_quiet_status();
}

/// A live service nobody supervises (not linked) is updated without any restart.
#[test]
fn unsupervised_service_updated() {
    let sys = Sys::new(F, "");
    sys.start_services(&["foo"], false);
    // the admin disables foo: unlinked, its supervisor gone
    fs::remove_file(sys.root.p("/run/service/foo")).expect("unlink");
    let ctl = Command::new(require("s6-svscanctl"))
        .arg("-an")
        .arg(sys.root.p("/run/service"))
        .status()
        .expect("s6-svscanctl");
    assert!(ctl.success());
    wait_for("the supervisor of foo to go", LIMIT, || {
        sys.sup.count_running("s6-supervise", "foo") == 0
    });
    sys.stock_run("foo", "v2");
    sys.enqueue(&[&sys.stock_path("foo/run")]);
    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        ["updated foo (not running): run changed"],
        "{}",
        out.stdout
    );
    assert_eq!(sys.read_live("foo/run"), sys.read_stock("foo/run"));
    assert!(
        !sys.linked("foo"),
        "svsettle must not enable a disabled service"
    );
    assert_eq!(sys.start_tags("foo"), ["v1"]);
}

/// Both the service and its logger up, several services changed at once: every one
/// restarts once, and the scanner runs one supervisor per service and logger.
#[test]
fn many_changes_one_supervisor_each() {
    let sys = Sys::new(F, "");
    let names = ["s0", "s1", "s2", "s3", "s4", "s5"];
    let before = sys.start_services(&names, true);
    for n in names {
        sys.stock_run(n, "v2");
    }
    sys.enqueue(&[F.stock()]);
    let out = sys.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(
        out.lines_starting("restarted").len(),
        names.len(),
        "{}",
        out.stdout
    );
    for n in names {
        let pid = sys.wait_new_pid(n, before[n]);
        assert_eq!(
            sys.wait_starts(n, 2)[1],
            Start {
                tag: "v2".into(),
                pid
            }
        );
        assert_eq!(sys.starts(n).len(), 2, "{n} restarted more than once");
        let log = format!("{n}/log");
        assert_eq!(sys.pid(&log), Some(before[&log]), "{log} must keep its pid");
        assert_eq!(sys.sup.count_running("s6-supervise", n), 1, "{n}");
        assert_eq!(sys.sup.count_running("s6-supervise", &log), 1, "{log}");
    }
}
