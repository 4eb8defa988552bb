//! runit-specific behaviour on a real runsvdir (Debian's runit): a new service
//! appears only after runsvdir's rescan, removal makes its runsv exit before the live
//! directory goes, `supervise` symlinked into `/run` (Void), the Void scan directory
//! through config, a service that ignores SIGTERM, and `check` scripts.

use crate::util::*;
use std::fs;
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::Path;
use std::time::Duration;

const STOCK: &str = "/usr/share/runit/sv";
const LIVE: &str = "/etc/sv";
const SCAN: &str = "/etc/service";
const ENABLE: &str = "[domain.runit]\nenable-new = true\n";
/// runsvdir looks at its scan directory every 5 s: generous bounds for a shared machine.
const LIMIT: Duration = Duration::from_secs(40);
const LOGGER: &str = "#!/bin/sh\nexec cat >/dev/null\n";

fn sleeper(tag: &str) -> String {
    format!("#!/bin/sh\n# {tag}\nexec sleep 100000\n")
}

/// Enqueues the stock paths and reconciles what they hint at.
fn settle(root: &Root, stock_paths: &[&str]) -> Out {
    let mut args = vec!["enqueue"];
    args.extend_from_slice(stock_paths);
    root.svsettle(&args).ok();
    root.svsettle(&["reconcile", "--pending"])
}

/// Whether a runsv holds `dir/supervise/ok` open (what `sv` checks first).
fn runsv_answers(dir: &Path) -> bool {
    fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(dir.join("supervise/ok"))
        .is_ok()
}

#[track_caller]
fn wait_pid(dir: &Path) -> u32 {
    let mut pid = None;
    wait_for(&format!("{} to run", dir.display()), LIMIT, || {
        pid = runit_pid(dir);
        pid.is_some()
    });
    pid.unwrap_or_default()
}

#[test]
fn runit_new_service_appears_when_linked() {
    let root = Root::new(&["runit"], ENABLE);
    let sup = start_runsvdir(&root, SCAN);
    root.stock(
        STOCK,
        "foo",
        &[("run", &sleeper("v1")), ("log/run", LOGGER)],
    );
    let out = settle(&root, &["/usr/share/runit/sv/foo"]);
    out.ok().has_line("created foo (enabled)");

    // the link is relative, and reconcile returned only once runsvdir had started a
    // runsv for it (after its rescan), so the supervisor answers right away
    assert_eq!(
        fs::read_link(root.p("/etc/service/foo")).expect("scan link"),
        Path::new("../sv/foo")
    );
    let live = root.p("/etc/sv/foo");
    assert!(
        runsv_answers(&live) && runsv_answers(&live.join("log")),
        "no runsv answers for foo after reconcile returned\n{}",
        root.listing()
    );
    assert_eq!(sup.count_running("runsv", "foo"), 1);
    wait_pid(&live);
    wait_pid(&live.join("log"));

    // a second service is picked up the same way while the first keeps running
    let first = runit_pid(&live);
    root.stock(STOCK, "bar", &[("run", &sleeper("v1"))]);
    settle(&root, &["/usr/share/runit/sv/bar"])
        .ok()
        .has_line("created bar (enabled)");
    assert!(runsv_answers(&root.p("/etc/sv/bar")));
    wait_pid(&root.p("/etc/sv/bar"));
    assert_eq!(runit_pid(&live), first, "foo was restarted by adding bar");
}

#[test]
fn runit_link_without_runsvdir_is_placed_and_not_waited_for() {
    require("sv");
    let root = Root::new(&["runit"], ENABLE);
    root.stock(STOCK, "foo", &[("run", &sleeper("v1"))]);
    settle(&root, &["/usr/share/runit/sv/foo"])
        .ok()
        .has_line("created foo (enabled)");
    assert_eq!(
        fs::read_link(root.p("/etc/service/foo")).expect("scan link"),
        Path::new("../sv/foo")
    );
    assert!(!root.exists("/etc/sv/foo/supervise"));

    // a runsvdir started later picks the link up
    let _sup = start_runsvdir(&root, SCAN);
    wait_pid(&root.p("/etc/sv/foo"));
}

#[test]
fn runit_removal_stops_runsv_and_deletes_live_dir() {
    let root = Root::new(&["runit"], ENABLE);
    let sup = start_runsvdir(&root, SCAN);
    root.stock(
        STOCK,
        "foo",
        &[("run", &sleeper("v1")), ("log/run", LOGGER)],
    );
    root.stock(STOCK, "keep", &[("run", &sleeper("v1"))]);
    settle(&root, &[STOCK]).ok();
    let live = root.p("/etc/sv/foo");
    let (pid, log_pid) = (wait_pid(&live), wait_pid(&live.join("log")));
    let keep = wait_pid(&root.p("/etc/sv/keep"));
    let runsv: Vec<u32> = descendants(sup.pid())
        .into_iter()
        .filter(|&p| argv_of(p) == ["runsv", "foo"])
        .collect();
    assert_eq!(runsv.len(), 1, "one runsv for foo");

    fs::remove_dir_all(root.p("/usr/share/runit/sv/foo")).expect("remove stock");
    settle(&root, &["/usr/share/runit/sv/foo"])
        .ok()
        .has_line("removed foo: stock service removed");

    assert!(
        !root.exists("/etc/sv/foo"),
        "live dir left\n{}",
        root.listing()
    );
    assert!(!root.exists("/etc/service/foo"), "scan link left");
    for (what, p) in [("service", pid), ("logger", log_pid), ("runsv", runsv[0])] {
        wait_for(&format!("{what} of foo to be gone"), LIMIT, || !alive(p));
    }
    assert_eq!(sup.count_running("runsv", "foo"), 0);
    assert!(alive(sup.pid()), "runsvdir died");
    assert_eq!(
        runit_pid(&root.p("/etc/sv/keep")),
        Some(keep),
        "keep was touched"
    );
    assert!(names_starting(&root.p(LIVE), ".svsettle").is_empty());
}

#[test]
fn runit_supervise_symlinked_into_run() {
    let root = Root::new(&["runit"], "");
    root.stock(STOCK, "foo", &[("run", &sleeper("v1"))]);
    settle(&root, &["/usr/share/runit/sv/foo"])
        .ok()
        .stdout_has("created foo");

    // the admin enables it the Void way: supervise -> /run/runit/supervise.foo
    let state = root.p("/run/runit/supervise.foo");
    fs::create_dir_all(&state).expect("mkdir run state");
    let live = root.p("/etc/sv/foo");
    symlink("../../../run/runit/supervise.foo", live.join("supervise")).expect("symlink");
    fs::create_dir_all(root.p(SCAN)).expect("mkdir scan");
    symlink("../sv/foo", root.p("/etc/service/foo")).expect("scan link");
    let _sup = start_runsvdir(&root, SCAN);
    let old = wait_pid(&live);
    assert!(
        state.join("status").exists(),
        "runsv did not use the symlink"
    );

    root.stock(STOCK, "foo", &[("run", &sleeper("v2"))]);
    settle(&root, &["/usr/share/runit/sv/foo/run"])
        .ok()
        .has_line("restarted foo: run changed");
    let new = wait_pid(&live);
    assert_ne!(old, new, "foo kept its pid");
    assert!(!alive(old));
    assert!(root.read("/etc/sv/foo/run").contains("v2"));
    assert_eq!(
        fs::read_link(live.join("supervise")).expect("supervise still a symlink"),
        Path::new("../../../run/runit/supervise.foo")
    );

    // removal deletes the live directory, not the runtime state it pointed to
    fs::remove_dir_all(root.p("/usr/share/runit/sv/foo")).expect("remove stock");
    settle(&root, &["/usr/share/runit/sv/foo"])
        .ok()
        .has_line("removed foo: stock service removed");
    assert!(!root.exists("/etc/sv/foo"));
    assert!(state.join("status").exists(), "runtime state was deleted");
    wait_for("foo to be gone", LIMIT, || !alive(new));
}

#[test]
fn runit_void_layout_via_config() {
    let root = Root::new(
        &["runit"],
        "[domain.runit]\nscan = \"/var/service\"\nenable-new = true\n",
    );
    let sup = start_runsvdir(&root, "/var/service");
    root.stock(
        STOCK,
        "foo",
        &[("run", &sleeper("v1")), ("log/run", LOGGER)],
    );
    settle(&root, &["/usr/share/runit/sv/foo"])
        .ok()
        .has_line("created foo (enabled)");
    assert_eq!(
        fs::read_link(root.p("/var/service/foo")).expect("scan link"),
        Path::new("../../etc/sv/foo")
    );
    assert!(!root.exists("/etc/service"), "default scan dir used");
    let live = root.p("/etc/sv/foo");
    let old = wait_pid(&live);
    let log = wait_pid(&live.join("log"));

    root.stock(STOCK, "foo", &[("run", &sleeper("v2"))]);
    settle(&root, &["/usr/share/runit/sv/foo/run"])
        .ok()
        .has_line("restarted foo: run changed");
    assert_ne!(wait_pid(&live), old);
    assert_eq!(runit_pid(&live.join("log")), Some(log), "logger restarted");
    assert_eq!(sup.count_running("runsv", "foo"), 1);
}

#[test]
fn runit_sigterm_ignoring_service_is_killed_bounded() {
    let root = Root::new(
        &["runit"],
        "[domain.runit]\nenable-new = true\nstop-timeout = 1\n",
    );
    let _sup = start_runsvdir(&root, SCAN);
    // both run and finish ignore SIGTERM (an ignored signal stays ignored across exec)
    let stubborn = "#!/bin/sh\n# v1\ntrap '' TERM\nexec sleep 100000\n";
    root.stock(STOCK, "foo", &[("run", stubborn), ("finish", stubborn)]);
    settle(&root, &["/usr/share/runit/sv/foo"]).ok();
    let live = root.p("/etc/sv/foo");
    let old = wait_pid(&live);

    fs::remove_file(root.p("/usr/share/runit/sv/foo/finish")).expect("rm finish");
    root.stock(STOCK, "foo", &[("run", &sleeper("v2"))]);
    let out = settle(&root, &["/usr/share/runit/sv/foo"]);
    out.ok()
        .stderr_has("runit/foo: service ignored SIGTERM for 1 s; killed with SIGKILL");
    assert_eq!(
        out.lines_starting("restarted foo:").len(),
        1,
        "{}",
        out.stdout
    );
    let new = wait_pid(&live);
    assert_ne!(old, new);
    wait_for("the old run to be gone", LIMIT, || !alive(old));
    assert!(!root.exists("/etc/sv/foo/finish"));
    assert!(root.read("/etc/sv/foo/run").contains("v2"));
}

#[test]
fn runit_check_script_decides_up_through_sv() {
    let root = Root::new(&["runit"], ENABLE);
    let _sup = start_runsvdir(&root, SCAN);
    // sv runs ./check in the service directory: this one leaves a mark in the root
    let check = "#!/bin/sh\ntouch ../../../check-ran\n";
    root.stock(STOCK, "foo", &[("run", &sleeper("v1")), ("check", check)]);
    settle(&root, &["/usr/share/runit/sv/foo"]).ok();
    let live = root.p("/etc/sv/foo");
    let old = wait_pid(&live);
    assert!(!root.exists("/check-ran"));

    root.stock(STOCK, "foo", &[("run", &sleeper("v2"))]);
    settle(&root, &["/usr/share/runit/sv/foo/run"])
        .ok()
        .has_line("restarted foo: run changed");
    assert!(root.exists("/check-ran"), "check was not run");
    assert_ne!(wait_pid(&live), old);
}

#[test]
fn runit_start_failure_names_service_argv_and_sv_output() {
    let root = Root::new(
        &["runit"],
        "[domain.runit]\nenable-new = true\nstart-timeout = 1\n",
    );
    let _sup = start_runsvdir(&root, SCAN);
    root.stock(STOCK, "foo", &[("run", &sleeper("v1"))]);
    settle(&root, &["/usr/share/runit/sv/foo"]).ok();
    let live = root.p("/etc/sv/foo");
    wait_pid(&live);

    // the new version's check never passes: sv -w up times out
    root.stock(
        STOCK,
        "foo",
        &[("run", &sleeper("v2")), ("check", "#!/bin/sh\nexit 1\n")],
    );
    let out = settle(&root, &["/usr/share/runit/sv/foo"]);
    out.code(1);
    let failed = out.lines_starting("failed foo:");
    assert_eq!(failed.len(), 1, "{}", out.stdout);
    let argv = format!(
        "`sv -w 1 up {}` exited 1 (1 service failed): timeout: run: ",
        live.display()
    );
    assert!(
        failed[0].contains("service foo: ") && failed[0].contains(&argv),
        "{}",
        failed[0]
    );
}

#[test]
fn runit_service_still_stopping_is_not_written() {
    let root = Root::new(
        &["runit"],
        "[domain.runit]\nenable-new = true\nstop-timeout = 1\n",
    );
    let _sup = start_runsvdir(&root, SCAN);
    let stubborn = "#!/bin/sh\n# v1\ntrap '' TERM\nexec sleep 100000\n";
    root.stock(STOCK, "foo", &[("run", stubborn)]);
    settle(&root, &["/usr/share/runit/sv/foo"]).ok();
    let live = root.p("/etc/sv/foo");
    let pid = wait_pid(&live);

    // the admin said down without waiting; the service ignores SIGTERM
    let sv = require("sv");
    let out = root.run_cmd(&sv, &["down".into(), live.display().to_string()], &[], None);
    out.ok();
    wait_for("runsv to want it down", LIMIT, || {
        fs::read_to_string(live.join("supervise/stat")).is_ok_and(|s| s.contains("want down"))
    });

    root.stock(STOCK, "foo", &[("run", &sleeper("v2"))]);
    let out = settle(&root, &["/usr/share/runit/sv/foo/run"]);
    out.code(1).stdout_has(&format!(
        "service foo was told to stop but is still running (pid {pid}), want down, got TERM after 1 s"
    ));
    assert!(
        root.read("/etc/sv/foo/run").contains("v1"),
        "live was written"
    );
    assert!(alive(pid));
}
