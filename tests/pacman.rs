//! Real pacman transactions running the shipped hook (`hooks/zz-svsettle.hook`).
//!
//! Each test builds real packages with `bsdtar` (`.PKGINFO`, optional `.INSTALL`, the
//! stock service files), and runs `pacman --root R --dbpath R/var/lib/pacman
//! --hookdir <repo>/hooks -U/-R` while a real `s6-svscan` supervises `R/run/service`.
//! pacman runs the hook chrooted into R, so R gets a copy of the `svsettle` binary
//! under test, the s6 programs it drives, `/bin/sh`, libalpm and their shared
//! libraries, and `/dev/null`. The supervisors run on the host; the service scripts
//! record each start, with the packages pacman's local database held at that moment,
//! in `R/var/log/starts`.

use crate::util::{self, Out, Root, Supervisor, require, s6_pid, wait_for};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A file of a test package: path under the root (no leading slash) and what it is.
enum Item {
    File(String, String, u32),
    Symlink(String, String),
}

/// A root managed by pacman, with an s6 domain (new services enabled) and a real
/// s6-svscan on `/run/service`.
struct Arch {
    // dropped first: the scanner and its services end before the root is deleted
    _svscan: Supervisor,
    root: Root,
    pkgdir: tempfile::TempDir,
}

impl Arch {
    fn new() -> Arch {
        require("pacman");
        require("bsdtar");
        // generous timeouts: the machine running the tests may be busy
        let root = Root::new(
            &["s6"],
            "[domain.s6]\nenable-new = true\nstart-timeout = 60\nstop-timeout = 60\n",
        );
        for d in [
            "var/lib/pacman",
            "var/log",
            "var/cache/pacman/pkg",
            "tmp",
            "etc/s6/sv",
            "usr/share/s6/sv",
        ] {
            fs::create_dir_all(root.p(d)).expect("mkdir");
        }
        root.write(
            "/etc/pacman.conf",
            "[options]\nSigLevel = Never\nLocalFileSigLevel = Never\nArchitecture = auto\n",
        );
        install_chroot_kit(&root);
        let svscan = util::start_s6_svscan(&root, "/run/service");
        let pkgdir = tempfile::Builder::new()
            .prefix("svsettle-pkgs.")
            .tempdir()
            .expect("tempdir");
        Arch {
            _svscan: svscan,
            root,
            pkgdir,
        }
    }

    fn hookdir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks")
    }

    /// Runs pacman on the root with the project's hook directory.
    fn pacman(&self, args: &[&str]) -> Out {
        self.pacman_in(args, true)
    }

    /// `with_path = false`: pacman (and so the hook) runs with an empty environment,
    /// as from a timer or `env -i`.
    fn pacman_in(&self, args: &[&str], with_path: bool) -> Out {
        let r = &self.root.path;
        let mut argv: Vec<String> = vec![
            "--config".into(),
            r.join("etc/pacman.conf").display().to_string(),
            "--root".into(),
            r.display().to_string(),
            "--dbpath".into(),
            r.join("var/lib/pacman").display().to_string(),
            "--hookdir".into(),
            Self::hookdir().display().to_string(),
            "--logfile".into(),
            r.join("var/log/pacman.log").display().to_string(),
            "--cachedir".into(),
            r.join("var/cache/pacman/pkg").display().to_string(),
            "--noconfirm".into(),
            "--noprogressbar".into(),
        ];
        argv.extend(args.iter().map(|s| s.to_string()));
        if with_path {
            return self.root.run_cmd(&require("pacman"), &argv, &[], None);
        }
        let out = Command::new(require("pacman"))
            .args(&argv)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run pacman");
        Out {
            argv,
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            listing: self.root.listing(),
        }
    }

    /// Installs or upgrades packages in one transaction; pacman must succeed.
    #[track_caller]
    fn upgrade(&self, pkgs: &[&Path]) -> Out {
        let mut args = vec!["-U".to_string()];
        args.extend(pkgs.iter().map(|p| p.display().to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.pacman(&refs);
        out.ok();
        self.assert_hook_ran(&out);
        out
    }

    #[track_caller]
    fn remove(&self, names: &[&str]) -> Out {
        let mut args = vec!["-R"];
        args.extend(names);
        let out = self.pacman(&args);
        out.ok();
        self.assert_hook_ran(&out);
        out
    }

    #[track_caller]
    fn assert_hook_ran(&self, out: &Out) {
        out.stdout_has("Settling supervised services (svsettle)...");
        // pacman's own complaints (a bad hook file, a failed hook command) start lines
        // with "error:"; the hook's lines start with ":: svsettle: ".
        assert!(
            !out.stdout
                .lines()
                .chain(out.stderr.lines())
                .any(|l| l.starts_with("error:")),
            "pacman reported an error\n{out:?}"
        );
    }

    /// The summary line the hook printed into pacman's output.
    #[track_caller]
    fn summary(out: &Out) -> String {
        out.stdout
            .lines()
            .find(|l| l.starts_with(":: svsettle: "))
            .unwrap_or_else(|| panic!("no svsettle output\n{out:?}"))
            .to_string()
    }

    /// Builds a package from `items` with bsdtar (`.PKGINFO`, `.INSTALL` if given).
    fn build(&self, name: &str, ver: &str, items: &[Item], install: Option<&str>) -> PathBuf {
        let stage = self.pkgdir.path().join(format!("stage-{name}-{ver}"));
        fs::create_dir_all(&stage).expect("mkdir stage");
        let mut top: BTreeSet<String> = BTreeSet::new();
        for item in items {
            let (rel, path) = match item {
                Item::File(rel, _, _) | Item::Symlink(rel, _) => (rel.as_str(), stage.join(rel)),
            };
            top.insert(rel.split('/').next().expect("top").to_string());
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            match item {
                Item::File(_, content, mode) => {
                    fs::write(&path, content).expect("write");
                    fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).expect("chmod");
                }
                Item::Symlink(_, target) => {
                    std::os::unix::fs::symlink(target, &path).expect("symlink")
                }
            }
        }
        fs::write(
            stage.join(".PKGINFO"),
            format!(
                "pkgname = {name}\npkgbase = {name}\npkgver = {ver}\npkgdesc = svsettle test package\n\
                 url = https://example.invalid/\nbuilddate = 1700000000\npackager = svsettle tests\n\
                 size = 1024\narch = any\nlicense = ISC\n"
            ),
        )
        .expect("write .PKGINFO");
        let mut members = vec![".PKGINFO".to_string()];
        if let Some(script) = install {
            fs::write(stage.join(".INSTALL"), script).expect("write .INSTALL");
            members.push(".INSTALL".into());
        }
        members.extend(top);
        let out = self
            .pkgdir
            .path()
            .join(format!("{name}-{ver}-any.pkg.tar.gz"));
        let st = Command::new(require("bsdtar"))
            .arg("-czf")
            .arg(&out)
            .arg("-C")
            .arg(&stage)
            .args(&members)
            .status()
            .expect("bsdtar");
        assert!(st.success(), "bsdtar failed for {name}-{ver}");
        out
    }

    /// A package shipping one stock s6 service whose run script records each start
    /// (service, generation, the packages installed at that moment) and then sleeps.
    fn service_pkg(&self, name: &str, ver: &str, service: &str, generation: u32) -> PathBuf {
        let items = vec![Item::File(
            format!("usr/share/s6/sv/{service}/run"),
            self.run_script(service, generation),
            0o755,
        )];
        self.build(name, ver, &items, None)
    }

    fn run_script(&self, service: &str, generation: u32) -> String {
        let r = self.root.path.display();
        format!(
            "#!/bin/sh\n# {service} generation {generation}\n\
             echo \"{service} g{generation} $(ls {r}/var/lib/pacman/local | tr '\\n' ' ')\" >> {r}/var/log/starts\n\
             exec sleep 100000\n"
        )
    }

    /// Lines of `R/var/log/starts` for one service.
    fn starts(&self, service: &str) -> Vec<String> {
        fs::read_to_string(self.root.p("/var/log/starts"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split(' ').next() == Some(service))
            .map(String::from)
            .collect()
    }

    fn live(&self, service: &str) -> PathBuf {
        self.root.p(&format!("/etc/s6/sv/{service}"))
    }

    /// Waits until the service is up (and has recorded its start); returns its pid.
    #[track_caller]
    fn up(&self, service: &str, starts: usize) -> u32 {
        let dir = self.live(service);
        wait_for(&format!("{service} up"), WAIT, || {
            s6_pid(&dir).is_some() && self.starts(service).len() >= starts
        });
        s6_pid(&dir).expect("pid")
    }

    fn svsettle(&self, args: &[&str]) -> Out {
        self.root.svsettle(args)
    }

    fn pacman_log(&self) -> Vec<String> {
        self.root
            .read("/var/log/pacman.log")
            .lines()
            .map(String::from)
            .collect()
    }
}

/// Copies a host file to the same path inside the root (following symlinks).
fn copy_in(root: &Root, host: &Path) {
    let dst = root.p(&host.display().to_string());
    if dst.exists() {
        return;
    }
    fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
    fs::copy(host, &dst).unwrap_or_else(|e| panic!("copy {} into the root: {e}", host.display()));
}

/// Copies a program or library and every shared library `ldd` lists for it.
fn copy_with_libs(root: &Root, host: &Path) {
    copy_in(root, host);
    let out = Command::new(require("ldd"))
        .arg(host)
        .output()
        .expect("ldd");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            copy_in(root, Path::new(p));
        }
    }
}

/// What pacman's chroot needs to run the hook: the binary under test as
/// `/usr/bin/svsettle`, the s6 programs it calls (at their host paths, which are on
/// the PATH pacman passes down), `/bin/sh` for scriptlets, libalpm (opened at run
/// time, so not in the binary's ldd list), their libraries, and `/dev/null`.
fn install_chroot_kit(root: &Root) {
    let dst = root.p("/usr/bin/svsettle");
    fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
    fs::copy(util::bin(), &dst).expect("copy svsettle into the root");
    copy_with_libs(root, &util::bin());
    for prog in [
        "s6-svc",
        "s6-svstat",
        "s6-svok",
        "s6-svscanctl",
        "s6-svlisten1",
        "s6-ftrigrd",
    ] {
        copy_with_libs(root, &require(prog));
    }
    let sh = fs::canonicalize("/bin/sh").expect("/bin/sh");
    copy_with_libs(root, &sh);
    fs::create_dir_all(root.p("/bin")).expect("mkdir bin");
    fs::copy(&sh, root.p("/bin/sh")).expect("copy /bin/sh into the root");
    if cfg!(feature = "alpm") {
        let lib = libalpm().unwrap_or_else(|| {
            panic!(
                "libalpm (libalpm.so.13-16) not found: {}",
                util::INSTALL_HINT
            )
        });
        copy_with_libs(root, &lib);
    }
    let null = root.p("/dev/null");
    fs::create_dir_all(null.parent().expect("parent")).expect("mkdir dev");
    nix::sys::stat::mknod(
        &null,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .expect("mknod /dev/null in the root (tests run as root)");
}

/// The libalpm svsettle would open, at its path on this host.
fn libalpm() -> Option<PathBuf> {
    for major in (13..=16).rev() {
        for dir in [
            "/usr/lib/x86_64-linux-gnu",
            "/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
        ] {
            let p = Path::new(dir).join(format!("libalpm.so.{major}"));
            if p.exists() {
                return Some(p);
            }
        }
    }
    None
}

#[test]
fn pacman_upgrade_restarts_changed_keeps_unchanged_and_removes_removed() {
    let a = Arch::new();
    let pa1 = a.service_pkg("svc-a", "1-1", "svc-a", 1);
    let pb1 = a.service_pkg("svc-b", "1-1", "svc-b", 1);
    let pc1 = a.service_pkg("svc-c", "1-1", "svc-c", 1);
    let out = a.upgrade(&[&pa1, &pb1, &pc1]);
    assert_eq!(
        Arch::summary(&out),
        ":: svsettle: created svc-a (enabled); created svc-b (enabled); created svc-c (enabled)"
    );
    let (pid_a, pid_b, pid_c) = (a.up("svc-a", 1), a.up("svc-b", 1), a.up("svc-c", 1));

    // svc-a changes, svc-b is a version bump with the same service files
    let pa2 = a.service_pkg("svc-a", "2-1", "svc-a", 2);
    let pb2 = a.service_pkg("svc-b", "2-1", "svc-b", 1);
    let out = a.upgrade(&[&pa2, &pb2]);
    assert_eq!(
        Arch::summary(&out),
        ":: svsettle: restarted svc-a (run changed); 1 service unchanged"
    );
    let new_a = a.up("svc-a", 2);
    assert_ne!(new_a, pid_a, "svc-a was not restarted");
    assert_eq!(a.starts("svc-a").len(), 2, "svc-a restarted more than once");
    assert!(a.starts("svc-a")[1].starts_with("svc-a g2 "));
    assert_eq!(s6_pid(&a.live("svc-b")), Some(pid_b), "svc-b was touched");
    assert_eq!(a.starts("svc-b").len(), 1);
    assert_eq!(s6_pid(&a.live("svc-c")), Some(pid_c), "svc-c was touched");
    assert!(
        fs::read_to_string(a.live("svc-a").join("run"))
            .unwrap()
            .contains("generation 2")
    );

    let out = a.remove(&["svc-c"]);
    assert_eq!(
        Arch::summary(&out),
        ":: svsettle: removed svc-c (stock service removed)"
    );
    assert!(!a.root.exists("/run/service/svc-c"), "svc-c still linked");
    assert!(
        !a.live("svc-c").exists(),
        "svc-c live directory left behind"
    );
    wait_for("svc-c's process to end", WAIT, || {
        !Path::new(&format!("/proc/{pid_c}")).exists()
            || fs::read_to_string(format!("/proc/{pid_c}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
    });
    assert_eq!(s6_pid(&a.live("svc-a")), Some(new_a));
    assert_eq!(s6_pid(&a.live("svc-b")), Some(pid_b));
    // nothing left pending
    a.svsettle(&["status"]).ok().has_line("pending: none");
}

#[test]
fn pacman_five_upgrades_in_one_transaction_restart_each_once_after_the_last_install() {
    let a = Arch::new();
    let names = ["svc-1", "svc-2", "svc-3", "svc-4", "svc-5", "svc-6"];
    let v1: Vec<PathBuf> = names
        .iter()
        .map(|n| a.service_pkg(n, "1-1", n, 1))
        .collect();
    let refs: Vec<&Path> = v1.iter().map(PathBuf::as_path).collect();
    a.upgrade(&refs);
    let pids: Vec<u32> = names.iter().map(|n| a.up(n, 1)).collect();

    // svc-1..5 change; svc-6's package is upgraded with identical service files
    let v2: Vec<PathBuf> = names
        .iter()
        .map(|n| {
            let generation = if *n == "svc-6" { 1 } else { 2 };
            a.service_pkg(n, "2-1", n, generation)
        })
        .collect();
    let refs: Vec<&Path> = v2.iter().map(PathBuf::as_path).collect();
    let log_before = a.pacman_log().len();
    let out = a.upgrade(&refs);
    assert_eq!(
        Arch::summary(&out),
        ":: svsettle: restarted svc-1 (run changed); restarted svc-2 (run changed); \
         restarted svc-3 (run changed); restarted svc-4 (run changed); \
         restarted svc-5 (run changed); 1 service unchanged"
    );
    let all_v2: Vec<String> = names.iter().map(|n| format!("{n}-2-1")).collect();
    for (i, n) in names.iter().enumerate().take(5) {
        let pid = a.up(n, 2);
        assert_ne!(pid, pids[i], "{n} was not restarted");
        let starts = a.starts(n);
        assert_eq!(starts.len(), 2, "{n} must start exactly twice: {starts:?}");
        // Ordering without clocks: when the new run script started, pacman's local
        // database already held every upgraded package, svc-6 (the last) included.
        let seen: BTreeSet<&str> = starts[1].split(' ').skip(2).collect();
        assert!(starts[1].starts_with(&format!("{n} g2 ")), "{starts:?}");
        for v in &all_v2 {
            assert!(
                seen.contains(v.as_str()),
                "{n} restarted before {v} was installed: {}",
                starts[1]
            );
        }
        assert!(
            !seen.iter().any(|e| e.ends_with("-1-1")),
            "{n} restarted while an old package was still installed: {}",
            starts[1]
        );
    }
    assert_eq!(s6_pid(&a.live("svc-6")), Some(pids[5]), "svc-6 was touched");
    assert_eq!(a.starts("svc-6").len(), 1);

    // pacman's log: every upgrade precedes the hook, and the hook ran once
    let log = a.pacman_log();
    let tx = &log[log_before..];
    let last_upgrade = tx
        .iter()
        .rposition(|l| l.contains("[ALPM] upgraded svc-"))
        .expect("upgraded lines in pacman.log");
    let hook_runs: Vec<usize> = tx
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("running 'zz-svsettle.hook'"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hook_runs.len(), 1, "{tx:#?}");
    assert!(last_upgrade < hook_runs[0], "{tx:#?}");
    assert_eq!(
        tx.iter()
            .filter(|l| l.contains("[ALPM] upgraded svc-"))
            .count(),
        6
    );
    let restarted_at = tx
        .iter()
        .position(|l| l.contains(":: svsettle: restarted svc-1"))
        .expect("hook summary in pacman.log");
    assert!(hook_runs[0] < restarted_at);
}

#[test]
fn pacman_service_file_moving_into_a_new_package() {
    let a = Arch::new();
    let run = a.run_script("svc-m", 1);
    let finish = "#!/bin/sh\nexit 0\n".to_string();
    let m1 = a.build(
        "multi",
        "1-1",
        &[
            Item::File("usr/share/s6/sv/svc-m/run".into(), run.clone(), 0o755),
            Item::File("usr/share/s6/sv/svc-m/finish".into(), finish.clone(), 0o755),
        ],
        None,
    );
    a.upgrade(&[&m1]);
    let pid = a.up("svc-m", 1);

    // finish moves, unchanged, from multi to multi-extras: Remove + Install in one
    // transaction. Nothing changed on disk: nothing is restarted or deleted.
    let m2 = a.build(
        "multi",
        "2-1",
        &[Item::File(
            "usr/share/s6/sv/svc-m/run".into(),
            run.clone(),
            0o755,
        )],
        None,
    );
    let x1 = a.build(
        "multi-extras",
        "1-1",
        &[Item::File(
            "usr/share/s6/sv/svc-m/finish".into(),
            finish.clone(),
            0o755,
        )],
        None,
    );
    let out = a.upgrade(&[&m2, &x1]);
    assert_eq!(Arch::summary(&out), ":: svsettle: 1 service unchanged");
    assert_eq!(s6_pid(&a.live("svc-m")), Some(pid), "svc-m was restarted");
    assert!(
        a.live("svc-m").join("finish").exists(),
        "finish was deleted"
    );

    // run moves too, and changes, while multi drops the service entirely
    let m3 = a.build(
        "multi",
        "3-1",
        &[Item::File(
            "usr/share/doc/multi/README".into(),
            "x\n".into(),
            0o644,
        )],
        None,
    );
    let x2 = a.build(
        "multi-extras",
        "2-1",
        &[
            Item::File(
                "usr/share/s6/sv/svc-m/run".into(),
                a.run_script("svc-m", 2),
                0o755,
            ),
            Item::File("usr/share/s6/sv/svc-m/finish".into(), finish, 0o755),
        ],
        None,
    );
    let out = a.upgrade(&[&m3, &x2]);
    assert_eq!(
        Arch::summary(&out),
        ":: svsettle: restarted svc-m (run changed)"
    );
    let new = a.up("svc-m", 2);
    assert_ne!(new, pid);
    assert_eq!(a.starts("svc-m").len(), 2);
    assert!(a.root.exists("/run/service/svc-m"));
    assert!(a.live("svc-m").join("finish").exists());
}

#[test]
fn pacman_history_names_package_and_version() {
    if !cfg!(feature = "alpm") {
        panic!(
            "package attribution needs the alpm feature: run cargo test --features failpoints,alpm"
        );
    }
    let a = Arch::new();
    // The copy pacman will run must be the attributing build (a concurrent cargo
    // build without the feature may have replaced the binary in the target dir).
    let probe = a.root.run_cmd(
        &a.root.p("/usr/bin/svsettle"),
        &[
            "--root".into(),
            a.root.path.display().to_string(),
            "-v".into(),
            "hook".into(),
            "pacman".into(),
        ],
        &[],
        Some(b""),
    );
    probe
        .ok()
        .stdout_has(":: svsettle: note: package attribution through libalpm ");
    let p1 = a.service_pkg("foo-svc", "1.0-1", "foo", 1);
    let b1 = a.service_pkg("bar-svc", "0.9-3", "bar", 1);
    a.upgrade(&[&p1, &b1]);
    a.up("foo", 1);
    a.up("bar", 1);
    let p2 = a.service_pkg("foo-svc", "1.1-1", "foo", 2);
    a.upgrade(&[&p2]);
    a.up("foo", 2);
    a.remove(&["bar-svc"]);

    let h = a.svsettle(&["history"]);
    h.ok();
    let tail = |l: &str| l.splitn(3, ' ').nth(2).unwrap_or("").to_string();
    let lines: Vec<String> = h.stdout.lines().map(tail).collect();
    for want in [
        "created foo (enabled) [foo-svc 1.0-1]",
        "created bar (enabled) [bar-svc 0.9-3]",
        "restarted foo: run changed [foo-svc 1.1-1]",
        "removed bar: stock service removed [bar-svc 0.9-3]",
    ] {
        assert!(
            lines.iter().any(|l| l == want),
            "history lacks {want:?}\n{}",
            h.stdout
        );
    }
    a.svsettle(&["history", "foo", "--json"])
        .ok()
        .stdout_has("\"package\": \"foo-svc 1.1-1\"");

    // status names the package too: an admin edit meets a packaged change
    let mut run = fs::read_to_string(a.live("foo").join("run")).unwrap();
    run.push_str("# local tweak\n");
    fs::write(a.live("foo").join("run"), run).unwrap();
    let p3 = a.service_pkg("foo-svc", "1.2-1", "foo", 3);
    let out = a.upgrade(&[&p3]);
    assert_eq!(Arch::summary(&out), ":: svsettle: conflict foo");
    out.has_line(
        ":: svsettle: conflict foo: run changed in stock and in live; live kept \
         (svsettle diff foo; svsettle resolve foo --keep-live|--take-stock) [foo-svc 1.2-1]",
    );
    a.svsettle(&["status"]).ok().has_line(
        "  foo [foo-svc 1.2-1]: run (live kept; svsettle diff foo, svsettle resolve foo --keep-live|--take-stock)",
    );
}

/// A package whose service the tests upgrade while something is wrong.
fn installed_svc_a(a: &Arch) -> u32 {
    let p1 = a.service_pkg("svc-a", "1-1", "svc-a", 1);
    a.upgrade(&[&p1]);
    a.up("svc-a", 1)
}

#[test]
fn pacman_hook_exits_0_while_another_reconcile_holds_the_lock() {
    let a = Arch::new();
    let pid = installed_svc_a(&a);
    let lock_path = a.root.p("/var/lib/svsettle/reconcile.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .expect("open lock");
    let mut lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .expect("take the reconcile lock");
    {
        use std::io::Write;
        lock.set_len(0).unwrap();
        writeln!(*lock, "{}", std::process::id()).unwrap();
    }

    let p2 = a.service_pkg("svc-a", "2-1", "svc-a", 2);
    let out = a.upgrade(&[&p2]);
    assert_eq!(
        Arch::summary(&out),
        format!(
            ":: svsettle: another svsettle reconcile is running (pid {}); svc-a stays queued: \
             run svsettle reconcile --pending when it is done",
            std::process::id()
        )
    );
    assert_eq!(
        s6_pid(&a.live("svc-a")),
        Some(pid),
        "svc-a changed under the lock"
    );
    let st = a.svsettle(&["status"]);
    st.ok().stdout_has("pending: 1 (svc-a");
    st.stdout_has("hook pacman: not reconciled: another svsettle reconcile was running");

    drop(lock);
    a.svsettle(&["reconcile", "--pending"])
        .ok()
        .stdout_has("restarted svc-a: run changed");
    assert_ne!(a.up("svc-a", 2), pid);
    a.svsettle(&["status"]).ok().has_line("pending: none");
}

#[test]
fn pacman_hook_exits_0_with_a_broken_config() {
    let a = Arch::new();
    let pid = installed_svc_a(&a);
    let good = a.root.read("/etc/svsettle.toml");
    a.root
        .write("/etc/svsettle.toml", &format!("{good}bogus = 1\n"));

    let p2 = a.service_pkg("svc-a", "2-1", "svc-a", 2);
    let out = a.upgrade(&[&p2]);
    let lines = out.lines_starting(":: svsettle: ");
    assert!(
        lines.iter().any(
            |l| l.starts_with(":: svsettle: error: config /etc/svsettle.toml:")
                && l.contains("bogus")
        ),
        "{out:?}"
    );
    assert!(
        lines.iter().any(|l| l
            == ":: svsettle: nothing reconciled; svc-a stays queued: fix the configuration, \
                then run svsettle reconcile --pending"),
        "{out:?}"
    );
    assert_eq!(s6_pid(&a.live("svc-a")), Some(pid));
    // status names the broken file
    a.svsettle(&["status"]).code(2).stderr_has("bogus");

    a.root.write("/etc/svsettle.toml", &good);
    let st = a.svsettle(&["status"]);
    st.ok().stdout_has("pending: 1 (svc-a");
    st.stdout_has("hook pacman: not reconciled: config /etc/svsettle.toml:");
    a.svsettle(&["reconcile", "--pending"])
        .ok()
        .stdout_has("restarted svc-a: run changed");
    assert_ne!(a.up("svc-a", 2), pid);
}

#[test]
fn pacman_hook_exits_0_with_a_malformed_stock_service() {
    let a = Arch::new();
    let good = a.service_pkg("svc-ok", "1-1", "svc-ok", 1);
    let bad = a.build(
        "svc-bad",
        "1-1",
        &[
            Item::File(
                "usr/share/s6/sv/svc-bad/finish".into(),
                "#!/bin/sh\n".into(),
                0o755,
            ),
            Item::Symlink(
                "usr/share/s6/sv/svc-bad/run".into(),
                "../../../../../../etc/shadow".into(),
            ),
        ],
        None,
    );
    let out = a.upgrade(&[&good, &bad]);
    assert_eq!(
        Arch::summary(&out),
        ":: svsettle: created svc-ok (enabled); failed svc-bad"
    );
    let detail = out
        .lines_starting(":: svsettle: failed svc-bad: ")
        .pop()
        .unwrap_or_else(|| panic!("no failure detail\n{out:?}"));
    assert!(
        detail.contains("/usr/share/s6/sv/svc-bad/run")
            && detail.contains("outside the stock tree"),
        "{detail}"
    );
    a.up("svc-ok", 1);
    assert!(!a.live("svc-bad").exists());
    assert!(!a.root.exists("/run/service/svc-bad"));
    let st = a.svsettle(&["status"]);
    st.ok().stdout_has("pending: 1 (svc-bad");
    st.stdout_has("s6/svc-bad: ");
    st.stdout_has("outside the stock tree");
}

#[test]
fn pacman_lock_defers_a_manual_reconcile_and_wait_waits() {
    let a = Arch::new();
    // A real transaction: the package's post_install scriptlet runs inside it, while
    // pacman holds db.lck, and tries a manual reconcile.
    let install = "post_install() {\n  /usr/bin/svsettle reconcile --pending\n  echo \"manual reconcile exited $?\"\n}\n";
    let p = a.build(
        "svc-s",
        "1-1",
        &[Item::File(
            "usr/share/s6/sv/svc-s/run".into(),
            a.run_script("svc-s", 1),
            0o755,
        )],
        Some(install),
    );
    let out = a.upgrade(&[&p]);
    out.stdout_has(
        "deferred: a package transaction is in progress: pacman (/var/lib/pacman/db.lck exists)",
    );
    out.stdout_has("manual reconcile exited 3");
    assert_eq!(Arch::summary(&out), ":: svsettle: created svc-s (enabled)");
    let pid = a.up("svc-s", 1);

    // The same lock file left behind (as during a long transaction), from outside.
    let lck = a.root.p("/var/lib/pacman/db.lck");
    fs::write(&lck, "").unwrap();
    fs::write(
        a.root.p("/usr/share/s6/sv/svc-s/run"),
        a.run_script("svc-s", 2),
    )
    .unwrap();
    a.svsettle(&["enqueue", "/usr/share/s6/sv/svc-s/run"]).ok();
    a.svsettle(&["reconcile", "--pending"])
        .code(3)
        .stdout_has("deferred: a package transaction is in progress: pacman (")
        .stdout_has("db.lck exists");
    assert_eq!(s6_pid(&a.live("svc-s")), Some(pid));

    let mut child = Command::new(util::bin())
        .arg("--root")
        .arg(&a.root.path)
        .args(["reconcile", "--pending", "--wait"])
        .env_clear()
        .env("PATH", util::test_path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn reconcile --wait");
    // It must still be waiting while db.lck exists: poll a few times.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "reconcile --wait returned while db.lck exists"
        );
    }
    assert_eq!(s6_pid(&a.live("svc-s")), Some(pid));
    fs::remove_file(&lck).unwrap();
    wait_for("reconcile --wait to finish", WAIT, || {
        child.try_wait().expect("try_wait").is_some()
    });
    let output = child.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.lines().any(|l| l == "restarted svc-s: run changed"),
        "{stdout}"
    );
    let pid = a.up("svc-s", 2);

    // A `reconcile --wait` started inside a real transaction (from a scriptlet, in
    // the background) holds the reconcile lock and waits for pacman's db.lck: the
    // hook then only queues, and the waiter reconciles once pacman is done. Exactly
    // one of them restarts svc-s, once.
    let install = "post_upgrade() {\n  /usr/bin/svsettle reconcile --pending --wait \
                   > /var/log/waiter.log 2>&1 < /dev/null &\n  echo $! > /var/log/waiter.pid\n}\n";
    let p3 = a.build(
        "svc-s",
        "3-1",
        &[Item::File(
            "usr/share/s6/sv/svc-s/run".into(),
            a.run_script("svc-s", 3),
            0o755,
        )],
        Some(install),
    );
    let out = a.upgrade(&[&p3]);
    let waiter: i32 = a.root.read("/var/log/waiter.pid").trim().parse().unwrap();
    struct Reap(i32);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _reap = Reap(waiter);
    wait_for("the waiting reconcile to finish", WAIT, || {
        fs::read_to_string(format!("/proc/{waiter}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    });
    let waiter_log = a.root.read("/var/log/waiter.log");
    let by_hook = Arch::summary(&out) == ":: svsettle: restarted svc-s (run changed)";
    let by_waiter = waiter_log
        .lines()
        .any(|l| l.starts_with("restarted svc-s: run changed"));
    assert!(
        by_hook != by_waiter,
        "exactly one reconciler must restart svc-s\n{out:?}\nwaiter: {waiter_log}"
    );
    if by_waiter {
        out.stdout_has(":: svsettle: another svsettle reconcile is running (pid ");
    }
    assert_ne!(a.up("svc-s", 3), pid);
    assert_eq!(a.starts("svc-s").len(), 3, "{:?}", a.starts("svc-s"));
}

#[test]
fn pacman_hook_with_an_empty_environment_still_finds_the_supervisor() {
    let a = Arch::new();
    let pid = installed_svc_a(&a);
    let p2 = a.service_pkg("svc-a", "2-1", "svc-a", 2);
    let out = a.pacman_in(&["-U", &p2.display().to_string()], false);
    out.ok();
    a.assert_hook_ran(&out);
    assert_eq!(
        Arch::summary(&out),
        ":: svsettle: restarted svc-a (run changed)"
    );
    assert_ne!(a.up("svc-a", 2), pid);
}
