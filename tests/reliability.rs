//! Reliability and security, as a sysadmin running svsettle as root during upgrades
//! would check them:
//!
//! - `hostile_input`: one table of malformed and hostile input (paths, hook stdin,
//!   names, special files, symlinks, sizes, permissions, type changes, a live
//!   directory swapped for a symlink, bad configs, future and corrupt databases,
//!   temporary-name collisions). Every svsettle run of every case is checked for its
//!   exit code and its message (naming the thing and the cause), and for nothing
//!   changed outside the live tree, the scan directory and the state directory; a
//!   valid service beside the bad input is still created.
//! - `concurrency`: 32 enqueue and hook processes at once with reconcilers running,
//!   over many rounds: every hint recorded exactly once or merged, nothing "locked"
//!   reaching the user, one reconciler at a time with a clear message for the other.
//! - `full_disk`: a live tree on a small tmpfs in a mount namespace.
//! - `supervisor_*`: real s6-svscan faults (no scanner, a service ignoring SIGTERM,
//!   a crash-looping service, the s6 programs missing from PATH).

use crate::util::*;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const STOCK: &str = "/usr/share/s6/sv";
const LIVE: &str = "/etc/s6/sv";
const SCAN: &str = "/run/service";
const STATE: &str = "/var/lib/svsettle";
/// What svsettle may write: everything else under the root must stay as it was.
const WRITABLE: [&str; 3] = [LIVE, SCAN, STATE];

const GOOD_RUN: &str = "#!/bin/sh\nexec sleep 1000\n";
const CREATED_GOOD: &str = "created good (not enabled: enable-new = false)";
/// The hook's one-line summary names it so.
const HOOK_CREATED_GOOD: &str = "created good (not enabled";

/// Bounded waits (the machine is shared and may be slow).
const LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------
// The hostile-input table
// ---------------------------------------------------------------------------------

type Act = Box<dyn Fn(&Root) + Send + Sync>;

enum Step {
    /// Runs svsettle (behind `wrap`, if any) and checks its exit code, that stdout or
    /// stderr holds every `want`, and that nothing outside the writable trees changed.
    Run {
        wrap: Vec<&'static str>,
        args: Vec<OsString>,
        stdin: Option<Vec<u8>>,
        code: i32,
        want: Vec<String>,
    },
    /// Changes the root between runs (as a package or an admin would), or checks it.
    Do(Act),
}

struct Case {
    name: &'static str,
    config: String,
    setup: Act,
    steps: Vec<Step>,
    /// The valid service `good` must exist in live at the end (false: a config or
    /// database refusal stops everything, and then nothing at all may be written).
    good: bool,
}

impl Case {
    fn new(
        name: &'static str,
        setup: impl Fn(&Root) + Send + Sync + 'static,
        steps: Vec<Step>,
    ) -> Case {
        Case {
            name,
            config: String::new(),
            setup: Box::new(setup),
            steps,
            good: true,
        }
    }
    fn config(mut self, toml: &str) -> Case {
        self.config = toml.to_string();
        self
    }
    fn refused_whole(mut self) -> Case {
        self.good = false;
        self
    }
}

fn os(s: &str) -> OsString {
    OsString::from(s)
}

fn sv(args: &[&str], code: i32, want: &[&str]) -> Step {
    sv_os(args.iter().map(|a| os(a)).collect(), code, want)
}

fn sv_os(args: Vec<OsString>, code: i32, want: &[&str]) -> Step {
    Step::Run {
        wrap: Vec::new(),
        args,
        stdin: None,
        code,
        want: want.iter().map(|s| s.to_string()).collect(),
    }
}

/// `svsettle hook pacman` with `stdin`: always exit 0.
fn hook(stdin: Vec<u8>, want: &[&str]) -> Step {
    Step::Run {
        wrap: Vec::new(),
        args: vec![os("hook"), os("pacman")],
        stdin: Some(stdin),
        code: 0,
        want: want.iter().map(|s| s.to_string()).collect(),
    }
}

fn act(f: impl Fn(&Root) + Send + Sync + 'static) -> Step {
    Step::Do(Box::new(f))
}

/// A malformed path handed to `enqueue` next to a good one: refused with `why` (exit
/// 1), the good one recorded and reconciled, the bad one never queued.
fn enqueue_case(name: &'static str, raw: OsString, why: &'static str) -> Case {
    let shown = raw.to_string_lossy().escape_debug().to_string();
    let refused = format!("svsettle: refused {shown}: ");
    Case::new(
        name,
        |_| {},
        vec![
            Step::Run {
                wrap: Vec::new(),
                args: vec![os("enqueue"), os("/usr/share/s6/sv/good/run"), raw],
                stdin: None,
                code: 1,
                want: vec![refused, why.to_string()],
            },
            act(|r| assert_eq!(r.sql(STATE, "SELECT count(*) FROM hint"), "1")),
            sv(&["reconcile"], 0, &[CREATED_GOOD]),
            act(|r| assert_eq!(r.sql(STATE, "SELECT count(*) FROM hint"), "0")),
        ],
    )
}

/// A path outside every stock tree: reported and ignored (exit 0), nothing queued.
fn ignored_case(name: &'static str, raw: &'static str) -> Case {
    let msg = format!("svsettle: ignored {raw}: not under a configured stock tree");
    Case::new(
        name,
        |_| {},
        vec![
            sv(
                &["enqueue", "/usr/share/s6/sv/good/run", raw],
                0,
                &[msg.as_str()],
            ),
            act(|r| assert_eq!(r.sql(STATE, "SELECT count(*) FROM hint"), "1")),
            sv(&["reconcile"], 0, &[CREATED_GOOD]),
        ],
    )
}

/// Hook stdin: the hook exits 0, refuses what is malformed, creates `good`.
fn hook_case(name: &'static str, stdin: Vec<u8>, want: &[&str]) -> Case {
    let mut w: Vec<&str> = want.to_vec();
    w.push(HOOK_CREATED_GOOD);
    Case::new(name, |_| {}, vec![hook(stdin, &w)])
}

/// A broken stock service `evil` beside `good`: the whole domain is hinted and
/// reconciled; evil fails with every `want` in its message, good is created.
fn stock_case(
    name: &'static str,
    setup: impl Fn(&Root) + Send + Sync + 'static,
    want: &[&str],
) -> Case {
    let mut w = vec!["failed evil: s6/evil: ", CREATED_GOOD];
    w.extend_from_slice(want);
    Case::new(
        name,
        setup,
        vec![
            sv(&["enqueue", STOCK], 0, &[]),
            sv(&["reconcile"], 1, &w),
            act(|r| assert!(!r.exists("/etc/s6/sv/evil"), "evil was created")),
        ],
    )
}

/// A bad service directory name in the stock tree: reported by the domain walk.
fn stock_name_case(name: &'static str, dir: &'static [u8], want: &[&str]) -> Case {
    let mut w = vec![CREATED_GOOD];
    w.extend_from_slice(want);
    Case::new(
        name,
        move |r| {
            let d = r.p(STOCK).join(std::ffi::OsStr::from_bytes(dir));
            fs::create_dir_all(&d).expect("mkdir");
            fs::write(d.join("run"), "#!/bin/sh\n").expect("write");
        },
        vec![sv(&["reconcile", "--all"], 1, &w)],
    )
}

/// A config the program refuses as a whole: exit 2 naming the file and the key, and
/// nothing written anywhere (not even the state directory).
fn config_case(name: &'static str, toml: &'static str, want: &[&str]) -> Case {
    let mut w = vec!["svsettle: config"];
    w.extend_from_slice(want);
    Case::new(
        name,
        |_| {},
        vec![
            sv(&["reconcile", "--all"], 2, &w),
            sv(&["enqueue", "/usr/share/s6/sv/good"], 2, &w),
            act(|r| assert!(!r.exists(STATE), "state directory created")),
        ],
    )
    .config(toml)
    .refused_whole()
}

/// A usage error on the command line: exit 2, nothing done; the next run still works.
fn cli_case(name: &'static str, args: &'static [&'static str], want: &[&str]) -> Case {
    Case::new(
        name,
        |_| {},
        vec![
            sv(args, 2, want),
            act(|r| assert!(!r.exists("/etc/s6/sv/good"), "acted despite a usage error")),
            sv(&["reconcile", "--all"], 0, &[CREATED_GOOD]),
        ],
    )
}

fn stock_file(r: &Root, svc: &str, rel: &str, content: &str) {
    r.write_exec(&format!("{STOCK}/{svc}/{rel}"), content);
}

fn evil(r: &Root) -> PathBuf {
    let d = r.p(STOCK).join("evil");
    fs::create_dir_all(&d).expect("mkdir evil");
    fs::write(d.join("run"), "#!/bin/sh\nexec sleep 1000\n").expect("write");
    d
}

fn mknod(path: &Path, kind: nix::sys::stat::SFlag, dev: u64) {
    nix::sys::stat::mknod(
        path,
        kind,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        dev,
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

/// `foo` with `run` and `env/A`, created by a first reconcile of foo alone (so that
/// `good` is created later, in the run under test).
fn foo_created(r: &Root) {
    stock_file(r, "foo", "run", "#!/bin/sh\n# v1\n");
    r.write(&format!("{STOCK}/foo/env/A"), "a\n");
}

fn first_foo() -> Step {
    sv(
        &["reconcile", "foo"],
        0,
        &["created foo (not enabled: enable-new = false)"],
    )
}

fn live_is(r: &Root, rel: &str, content: &str) {
    assert_eq!(r.read(&format!("{LIVE}/{rel}")), content, "live {rel}");
}

/// Unreadable for root: CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped from the
/// bounding set (root reads a mode-000 file otherwise).
const NO_DAC: [&str; 3] = [
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
];

fn cases() -> Vec<Case> {
    let long = format!("/usr/share/s6/sv/{}/run", "x".repeat(300));
    vec![
        // ---- path traversal and malformed paths given to enqueue ----
        enqueue_case(
            "enqueue ..",
            os("/usr/share/s6/sv/../../../etc/passwd"),
            "contains '..'",
        ),
        enqueue_case(
            "enqueue stock tree/..",
            os("/usr/share/s6/sv/.."),
            "contains '..'",
        ),
        enqueue_case(
            "enqueue relative path",
            os("usr/share/s6/sv/evil/run"),
            "not an absolute path",
        ),
        enqueue_case(
            "enqueue //",
            os("/usr/share/s6/sv//evil/run"),
            "contains '//'",
        ),
        enqueue_case(
            "enqueue /./",
            os("/usr/share/s6/sv/./evil/run"),
            "contains '.'",
        ),
        enqueue_case(
            "enqueue trailing /..",
            os("/usr/share/s6/sv/good/run/.."),
            "contains '..'",
        ),
        enqueue_case(
            "enqueue trailing junk after a newline",
            os("/usr/share/s6/sv/good/run\n; rm -rf /"),
            "contains a control character",
        ),
        enqueue_case(
            "enqueue tab in a name",
            os("/usr/share/s6/sv/ev\til/run"),
            "contains a control character",
        ),
        enqueue_case("enqueue empty path", os(""), "empty path"),
        enqueue_case(
            "enqueue non-UTF-8 path",
            OsString::from_vec(b"/usr/share/s6/sv/ev\xffil/run".to_vec()),
            "not valid UTF-8",
        ),
        enqueue_case(
            "enqueue leading-dot service",
            os("/usr/share/s6/sv/.hidden/run"),
            "service name \".hidden\" starts with '.'",
        ),
        enqueue_case(
            "enqueue svsettle temporary name",
            os("/usr/share/s6/sv/.svsettle-new.good/run"),
            "starts with '.'",
        ),
        enqueue_case(
            "enqueue over-long service name",
            os(&long),
            "is 300 bytes long (limit 128)",
        ),
        ignored_case("enqueue outside every stock tree", "/etc/passwd"),
        ignored_case("enqueue sibling of the stock tree", "/usr/share/s6/svx/evil/run"),
        // ---- the pacman hook's stdin ----
        hook_case(
            "hook stdin with NUL bytes",
            b"usr/share/s6/sv/good/run\0usr/share/s6/sv/../../etc/shadow\0".to_vec(),
            &[":: svsettle: refused /usr/share/s6/sv/../../etc/shadow: contains '..'"],
        ),
        hook_case(
            "hook stdin without a trailing newline",
            b"usr/share/s6/sv/good/\nusr/share/s6/sv/good/run".to_vec(),
            &[],
        ),
        hook_case(
            "hook stdin with absolute paths",
            b"/usr/share/s6/sv/good/run\n/etc/shadow\n".to_vec(),
            &[],
        ),
        hook_case(
            "hook stdin with CRLF line ends",
            b"usr/share/s6/sv/good/run\r\nusr/share/s6/sv/good/\n".to_vec(),
            &[":: svsettle: refused /usr/share/s6/sv/good/run\\r: contains a control character"],
        ),
        hook_case(
            "hook stdin with non-UTF-8 bytes",
            b"usr/share/s6/sv/\xff\xfe/run\nusr/share/s6/sv/good/\n".to_vec(),
            &[": not valid UTF-8"],
        ),
        hook_case(
            "hook stdin with relative traversal",
            b"usr/share/s6/sv/../../../../etc/shadow\nusr/share/s6/sv/good/run\n".to_vec(),
            &[":: svsettle: refused /usr/share/s6/sv/../../../../etc/shadow: contains '..'"],
        ),
        Case::new(
            "hook stdin with 100,000 lines",
            |_| {},
            vec![
                hook(hundred_thousand_lines(), &[
                    ":: svsettle: refused /usr/share/s6/sv/../x0: contains '..'",
                    ":: svsettle: refused /usr/share/s6/sv/../x80000: contains '..'",
                    HOOK_CREATED_GOOD,
                    "; 50 services unchanged",
                ]),
                act(|r| assert_eq!(r.sql(STATE, "SELECT count(*) FROM hint"), "0")),
            ],
        ),
        // ---- service names in the stock tree ----
        stock_name_case(
            "stock name with a newline",
            b"bad\nname",
            &["failed bad\\nname: stock /usr/share/s6/sv: service name \"bad\\nname\" contains a control character"],
        ),
        stock_name_case(
            "stock name over-long",
            &[b'y'; 200],
            &["is 200 bytes long (limit 128)"],
        ),
        stock_name_case(
            "stock name not UTF-8",
            b"bad\xff",
            &["failed bad\u{fffd}: stock /usr/share/s6/sv: name is not valid UTF-8"],
        ),
        Case::new(
            "stock name with a leading dot",
            |r| stock_file(r, ".hidden", "run", "#!/bin/sh\n"),
            vec![
                sv(&["reconcile", ".hidden"], 2, &["service name \".hidden\" starts with '.'"]),
                sv(&["reconcile", "--all"], 0, &[CREATED_GOOD]),
                act(|r| assert!(!r.exists("/etc/s6/sv/.hidden"))),
            ],
        ),
        Case::new(
            "stock dir named like a temporary directory",
            |r| stock_file(r, ".svsettle-new.good", "run", "#!/bin/sh\n# impostor\n"),
            vec![
                sv(&["reconcile", "--all"], 0, &[CREATED_GOOD]),
                act(|r| live_is(r, "good/run", GOOD_RUN)),
            ],
        ),
        // ---- entries inside a stock service ----
        stock_case(
            "stock entry with the reserved prefix",
            |r| {
                fs::write(evil(r).join(".svsettle-stage"), "x").expect("write");
            },
            &["uses the prefix .svsettle- reserved for svsettle's temporary files"],
        ),
        stock_case(
            "stock entry with a newline",
            |r| {
                fs::write(evil(r).join("ru\nn"), "x").expect("write");
            },
            &["evil/ru\nn: file name \"ru\\nn\" contains a control character"],
        ),
        stock_case(
            "stock entry not UTF-8",
            |r| {
                fs::write(evil(r).join(std::ffi::OsStr::from_bytes(b"r\xffn")), "x")
                    .expect("write");
            },
            &["is not valid UTF-8"],
        ),
        stock_case(
            "stock service dir is a symlink (absolute)",
            |r| symlink(r.p("/etc"), r.p(STOCK).join("evil")).expect("symlink"),
            &["stock service directory", "/usr/share/s6/sv/evil is a symlink (refusing to follow it)"],
        ),
        stock_case(
            "stock service dir is a symlink (relative)",
            |r| symlink("good", r.p(STOCK).join("evil")).expect("symlink"),
            &["is a symlink (refusing to follow it)"],
        ),
        stock_case(
            "stock symlink escaping the stock tree",
            |r| symlink("../../../../../etc/shadow", evil(r).join("finish")).expect("symlink"),
            &["stock symlink", "evil/finish -> ../../../../../etc/shadow: points outside the stock tree"],
        ),
        stock_case(
            "stock symlink at a device",
            |r| symlink("/dev/sda", evil(r).join("finish")).expect("symlink"),
            &["evil/finish -> /dev/sda: points into /dev"],
        ),
        stock_case(
            "stock symlink into /proc",
            |r| symlink("/proc/self/environ", evil(r).join("env")).expect("symlink"),
            &["evil/env -> /proc/self/environ: points into /proc"],
        ),
        Case::new(
            "stock absolute symlink copied, never followed",
            |r| {
                stock_file(r, "linked", "run", "#!/bin/sh\n");
                symlink("/lib/runit/finish-missing", r.p(STOCK).join("linked/finish"))
                    .expect("symlink");
            },
            vec![
                sv(&["reconcile", "--all"], 0, &[CREATED_GOOD, "created linked"]),
                act(|r| {
                    let l = r.p(LIVE).join("linked/finish");
                    assert_eq!(
                        fs::read_link(&l).expect("live link"),
                        Path::new("/lib/runit/finish-missing")
                    );
                }),
            ],
        ),
        stock_case(
            "stock fifo",
            |r| nix::unistd::mkfifo(&evil(r).join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo"),
            &["stock entry", "evil/fifo is a fifo; only files, directories and symlinks are supported"],
        ),
        stock_case(
            "stock socket",
            |r| {
                std::os::unix::net::UnixListener::bind(evil(r).join("control")).expect("bind");
            },
            &["evil/control is a socket"],
        ),
        stock_case(
            "stock character device",
            |r| mknod(&evil(r).join("null"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::makedev(1, 3)),
            &["evil/null is a device node"],
        ),
        stock_case(
            "stock block device",
            |r| mknod(&evil(r).join("disk"), nix::sys::stat::SFlag::S_IFBLK, nix::sys::stat::makedev(7, 0)),
            &["evil/disk is a device node"],
        ),
        stock_case(
            "stock file over max-file-size",
            |r| fs::write(evil(r).join("data"), vec![b'x'; 4096]).expect("write"),
            &["stock file", "evil/data is 4096 bytes (limit 1024)"],
        )
        .config("max-file-size = 1024\n"),
        stock_case(
            "stock nested too deep",
            |r| {
                let mut d = evil(r);
                for i in 0..20 {
                    d = d.join(format!("d{i}"));
                }
                fs::create_dir_all(&d).expect("mkdir");
            },
            &["nested deeper than 16 levels"],
        ),
        stock_case(
            "stock with too many entries",
            |r| {
                let d = evil(r).join("many");
                fs::create_dir(&d).expect("mkdir");
                for i in 0..10_001 {
                    fs::write(d.join(i.to_string()), "").expect("write");
                }
            },
            &["more than 10000 entries"],
        ),
        Case {
            steps: vec![
                sv(&["enqueue", STOCK], 0, &[]),
                Step::Run {
                    wrap: NO_DAC.to_vec(),
                    args: vec![os("reconcile")],
                    stdin: None,
                    code: 1,
                    want: vec![
                        "failed evil: s6/evil: cannot read".into(),
                        "evil/run: Permission denied".into(),
                        CREATED_GOOD.into(),
                    ],
                },
            ],
            ..Case::new(
                "stock file unreadable (mode 000, no DAC override)",
                |r| {
                    let d = evil(r);
                    fs::set_permissions(d.join("run"), fs::Permissions::from_mode(0o000))
                        .expect("chmod");
                },
                Vec::new(),
            )
        },
        Case {
            steps: vec![
                sv(&["enqueue", STOCK], 0, &[]),
                Step::Run {
                    wrap: NO_DAC.to_vec(),
                    args: vec![os("reconcile")],
                    stdin: None,
                    code: 1,
                    want: vec![
                        "failed evil: s6/evil: cannot read directory".into(),
                        "evil/env: Permission denied".into(),
                        CREATED_GOOD.into(),
                    ],
                },
            ],
            ..Case::new(
                "stock directory unreadable (mode 000, no DAC override)",
                |r| {
                    let d = evil(r).join("env");
                    fs::create_dir(&d).expect("mkdir");
                    fs::set_permissions(&d, fs::Permissions::from_mode(0o000)).expect("chmod");
                },
                Vec::new(),
            )
        },
        // ---- type changes and swapped directories between reconciles ----
        Case::new(
            "stock file replaced by a directory and back",
            foo_created,
            vec![
                first_foo(),
                act(|r| {
                    fs::remove_file(r.p("/usr/share/s6/sv/foo/run")).expect("rm");
                    r.write_exec("/usr/share/s6/sv/foo/run/inner", "x\n");
                }),
                sv(&["reconcile", "--all"], 0, &[
                    "updated foo (not running): run and run/inner changed",
                    CREATED_GOOD,
                ]),
                act(|r| live_is(r, "foo/run/inner", "x\n")),
                act(|r| {
                    fs::remove_dir_all(r.p("/usr/share/s6/sv/foo/run")).expect("rm");
                    r.write_exec("/usr/share/s6/sv/foo/run", "#!/bin/sh\n# v3\n");
                }),
                sv(&["reconcile", "--all"], 0, &["updated foo (not running): run and run/inner changed"]),
                act(|r| live_is(r, "foo/run", "#!/bin/sh\n# v3\n")),
            ],
        ),
        Case::new(
            "live service dir replaced by a symlink to <root>/etc",
            foo_created,
            vec![
                first_foo(),
                act(|r| {
                    fs::remove_dir_all(r.p("/etc/s6/sv/foo")).expect("rm");
                    symlink(r.p("/etc"), r.p("/etc/s6/sv/foo")).expect("symlink");
                    r.write_exec("/usr/share/s6/sv/foo/run", "#!/bin/sh\n# v2\n");
                    r.write("/usr/share/s6/sv/foo/finish", "#!/bin/sh\n");
                }),
                sv(&["reconcile", "--all"], 1, &[
                    "failed foo: s6/foo: live service directory",
                    "/etc/s6/sv/foo is a symlink (refusing to follow it)",
                    CREATED_GOOD,
                ]),
                act(|r| {
                    assert!(r.p("/etc/s6/sv/foo").symlink_metadata().unwrap().file_type().is_symlink());
                    assert!(!r.exists("/etc/run") && !r.exists("/etc/finish"));
                }),
            ],
        ),
        Case::new(
            "live service dir replaced by a file",
            foo_created,
            vec![
                first_foo(),
                act(|r| {
                    fs::remove_dir_all(r.p("/etc/s6/sv/foo")).expect("rm");
                    r.write("/etc/s6/sv/foo", "not a directory\n");
                    r.write_exec("/usr/share/s6/sv/foo/run", "#!/bin/sh\n# v2\n");
                }),
                sv(&["reconcile", "--all"], 1, &[
                    "failed foo: s6/foo: live service directory",
                    "/etc/s6/sv/foo is not a directory",
                    CREATED_GOOD,
                ]),
                act(|r| live_is(r, "foo", "not a directory\n")),
            ],
        ),
        Case::new(
            "live subdirectory replaced by a symlink to <root>/etc",
            foo_created,
            vec![
                first_foo(),
                act(|r| {
                    fs::remove_dir_all(r.p("/etc/s6/sv/foo/env")).expect("rm");
                    symlink(r.p("/etc"), r.p("/etc/s6/sv/foo/env")).expect("symlink");
                    r.write("/usr/share/s6/sv/foo/env/B", "b\n");
                }),
                sv(&["reconcile", "--all"], 0, &[
                    "conflict foo: env/B changed in stock and in live; live kept",
                    CREATED_GOOD,
                ]),
                act(|r| assert!(!r.exists("/etc/B"), "wrote through the admin's symlink")),
                sv(&["reconcile", "--all"], 0, &["conflict foo: env/B"]),
            ],
        ),
        Case::new(
            "live service dir removed by the admin",
            foo_created,
            vec![
                first_foo(),
                act(|r| {
                    fs::remove_dir_all(r.p("/etc/s6/sv/foo")).expect("rm");
                    r.write_exec("/usr/share/s6/sv/foo/run", "#!/bin/sh\n# v2\n");
                }),
                sv(&["reconcile", "--all"], 0, &[
                    "conflict foo: the live directory was removed by the admin; stock not copied back; see svsettle resolve foo",
                    CREATED_GOOD,
                ]),
                act(|r| assert!(!r.exists("/etc/s6/sv/foo"))),
            ],
        ),
        // ---- temporary-name collisions ----
        Case::new(
            "stale temporaries in the live tree and scan directory",
            |r| {
                r.write("/etc/s6/sv/.svsettle-new.ghost/run", "stale\n");
                r.write("/etc/s6/sv/.svsettle-del.gone", "stale\n");
                symlink("../nowhere", r.p("/etc/s6/sv/.svsettle-link.1")).expect("symlink");
                fs::create_dir_all(r.p(SCAN)).expect("mkdir scan");
                symlink("../../etc/s6/sv/nowhere", r.p("/run/service/.svsettle-link.7")).expect("symlink");
            },
            vec![
                sv(&["-v", "reconcile", "--all"], 0, &[
                    "note: removed leftover",
                    "/etc/s6/sv/.svsettle-new.ghost",
                    "/run/service/.svsettle-link.7",
                    CREATED_GOOD,
                ]),
                act(|r| {
                    assert!(names_starting(&r.p(LIVE), ".svsettle-").is_empty());
                    assert!(names_starting(&r.p(SCAN), ".svsettle-").is_empty());
                }),
            ],
        ),
        Case::new(
            "a file squatting the staging name inside a live service",
            foo_created,
            vec![
                first_foo(),
                act(|r| {
                    r.write("/etc/s6/sv/foo/.svsettle-stage", "squatter\n");
                    r.write_exec("/usr/share/s6/sv/foo/run", "#!/bin/sh\n# v2\n");
                }),
                sv(&["reconcile", "--all"], 0, &["updated foo (not running): run changed", CREATED_GOOD]),
                act(|r| {
                    live_is(r, "foo/run", "#!/bin/sh\n# v2\n");
                    assert!(!r.exists("/etc/s6/sv/foo/.svsettle-stage"));
                }),
            ],
        ),
        Case::new(
            "a symlink squatting the staging name points at <root>/etc",
            foo_created,
            vec![
                first_foo(),
                act(|r| {
                    symlink(r.p("/etc"), r.p("/etc/s6/sv/foo/.svsettle-stage")).expect("symlink");
                    r.write_exec("/usr/share/s6/sv/foo/run", "#!/bin/sh\n# v2\n");
                }),
                sv(&["reconcile", "--all"], 0, &["updated foo (not running): run changed", CREATED_GOOD]),
                act(|r| live_is(r, "foo/run", "#!/bin/sh\n# v2\n")),
            ],
        ),
        // ---- configuration ----
        config_case("config unknown top-level key", "bogus = 1\n", &[
            "/etc/svsettle.toml",
            "unknown field `bogus`",
        ]),
        config_case(
            "config unknown domain key",
            "[domain.s6]\nenable_new = true\n",
            &["/etc/svsettle.toml", "unknown field `enable_new`"],
        ),
        config_case(
            "config wrong type (string for a boolean)",
            "[domain.s6]\nenable-new = \"yes\"\n",
            &["/etc/svsettle.toml", "enable-new", "invalid type: string \"yes\", expected a boolean"],
        ),
        config_case(
            "config wrong type (string for seconds)",
            "[domain.s6]\nstop-timeout = \"30s\"\n",
            &["stop-timeout", "invalid type: string \"30s\""],
        ),
        config_case(
            "config negative size",
            "max-file-size = -1\n",
            &["max-file-size", "invalid value: integer `-1`"],
        ),
        config_case(
            "config syntax error",
            "[domain.s6\nenable-new = true\n",
            &["/etc/svsettle.toml", "TOML parse error"],
        ),
        config_case(
            "config relative live path",
            "[domain.s6]\nlive = \"etc/s6/sv\"\n",
            &["domain.s6.live = \"etc/s6/sv\": must be an absolute path"],
        ),
        config_case(
            "config state-dir with ..",
            "state-dir = \"/var/lib/../../etc\"\n",
            &["state-dir = \"/var/lib/../../etc\": must not contain . or .."],
        ),
        // ---- the database ----
        Case::new(
            "database from a future schema version",
            |_| {},
            vec![
                sv(&["enqueue", "/usr/share/s6/sv/foo"], 0, &[]),
                act(|r| {
                    r.sql(STATE, "PRAGMA user_version = 99");
                }),
                sv(&["reconcile", "--all"], 2, &[
                    "/var/lib/svsettle/state.db has schema version 99, newer than this svsettle knows (",
                    "upgrade svsettle",
                ]),
                sv(&["enqueue", "/usr/share/s6/sv/good"], 2, &["schema version 99"]),
                sv(&["status"], 2, &["schema version 99"]),
                hook(b"usr/share/s6/sv/good/run\n".to_vec(), &[":: svsettle: error:", "schema version 99"]),
                act(|r| {
                    assert_eq!(r.sql(STATE, "PRAGMA user_version"), "99");
                    assert_eq!(r.sql(STATE, "SELECT count(*) FROM hint"), "1");
                    assert!(names_starting(&r.p(STATE), "state.db.corrupt").is_empty());
                }),
            ],
        )
        .refused_whole(),
        db_case("database truncated", |db| {
            let f = fs::OpenOptions::new().write(true).open(db).expect("open db");
            f.set_len(1000).expect("truncate");
        }),
        db_case("database overwritten with garbage", |db| {
            fs::write(db, (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>())
                .expect("write");
        }),
        db_case("database pages corrupted behind a valid header", |db| {
            let mut data = fs::read(db).expect("read db");
            assert!(data.len() > 8192, "database unexpectedly small");
            for (i, b) in data.iter_mut().enumerate().skip(4096) {
                *b = (i * 31 % 256) as u8;
            }
            fs::write(db, data).expect("write");
        }),
        Case::new(
            "database corrupt, found by enqueue",
            foo_created,
            vec![
                first_foo(),
                act(|r| {
                    let db = r.p("/var/lib/svsettle/state.db");
                    fs::write(&db, b"SQLite format 3\0 but not really").expect("write");
                }),
                sv(&["enqueue", "/usr/share/s6/sv/good"], 0, &[
                    "svsettle: warning: the database was corrupt and was moved aside to",
                ]),
                sv(&["status"], 0, &[
                    "problems since the last clean reconcile:",
                    "/var/lib/svsettle/state.db was corrupt",
                    "moved aside to",
                ]),
                sv(&["reconcile", "--all"], 0, &[CREATED_GOOD]),
                act(|r| {
                    live_is(r, "foo/run", "#!/bin/sh\n# v1\n");
                    assert_eq!(
                        r.sql(STATE, "SELECT service FROM base ORDER BY service"),
                        "foo\ngood"
                    );
                }),
            ],
        ),
        Case::new(
            "database path is a directory",
            |r| fs::create_dir_all(r.p("/var/lib/svsettle/state.db")).expect("mkdir"),
            vec![
                sv(&["reconcile", "--all"], 2, &["cannot open database", "/var/lib/svsettle/state.db"]),
                act(|r| fs::remove_dir(r.p("/var/lib/svsettle/state.db")).expect("rmdir")),
                sv(&["reconcile", "--all"], 0, &[CREATED_GOOD]),
            ],
        ),
        // ---- command-line names ----
        cli_case("reconcile a traversal name", &["reconcile", "../../etc"], &[
            "service name \"../etc\" contains '/'",
        ]),
        cli_case("reconcile a name with a newline", &["reconcile", "good\nrm"], &[
            "service name \"good\\nrm\" contains a control character",
        ]),
        cli_case("diff a traversal name", &["diff", "s6/../../etc"], &[
            "service name \"../../etc\" contains '/'",
        ]),
        cli_case("resolve a traversal name", &["resolve", "s6/../x", "--keep-live"], &[
            "service name \"../x\" contains '/'",
        ]),
        cli_case("reconcile an unknown service", &["reconcile", "nosuch"], &[
            "unknown service nosuch: not in any configured stock or live tree",
        ]),
        Case::new(
            "scan entry in the way of a new service's link",
            |r| {
                stock_file(r, "svc", "run", "#!/bin/sh\n");
                r.write("/run/service/svc/run", "the admin's own\n");
            },
            vec![
                sv(&["reconcile", "--all"], 1, &[
                    "failed svc: created svc, but cannot enable it: cannot place",
                    "/run/service/svc",
                    "created good (enabled)",
                ]),
                act(|r| assert_eq!(r.read("/run/service/svc/run"), "the admin's own\n")),
            ],
        )
        .config("[domain.s6]\nenable-new = true\n"),
    ]
}

/// 100,000 hook lines: `good`, 50 services that do not exist, and every 10,000th line
/// a traversal.
fn hundred_thousand_lines() -> Vec<u8> {
    let mut s = String::with_capacity(4 << 20);
    s.push_str("usr/share/s6/sv/good/run\n");
    for i in 1..100_000 {
        if i % 10_000 == 0 {
            s.push_str(&format!("usr/share/s6/sv/../x{}\n", i - 10_000));
        } else {
            s.push_str(&format!("usr/share/s6/sv/none{}/f{i}\n", i % 50));
        }
    }
    s.into_bytes()
}

/// A database damaged by `damage` after `foo` was created and then edited by the
/// admin: detected, moved aside, and `reconcile --all` rebuilds from disk without
/// losing the admin's edit (adoption: live differs from stock, so a conflict).
fn db_case(name: &'static str, damage: fn(&Path)) -> Case {
    Case::new(
        name,
        foo_created,
        vec![
            first_foo(),
            act(move |r| {
                r.write_exec("/etc/s6/sv/foo/run", "#!/bin/sh\n# the admin's\n");
                let db = r.p("/var/lib/svsettle/state.db");
                for ext in ["-wal", "-shm"] {
                    let _ = fs::remove_file(format!("{}{ext}", db.display()));
                }
                damage(&db);
            }),
            sv(
                &["reconcile", "--all"],
                0,
                &[
                    "warning: the database was corrupt and was moved aside to",
                    "/var/lib/svsettle/state.db.corrupt-",
                    "conflict foo: run changed in stock and in live; live kept",
                    CREATED_GOOD,
                ],
            ),
            act(|r| {
                live_is(r, "foo/run", "#!/bin/sh\n# the admin's\n");
                live_is(r, "foo/env/A", "a\n");
                assert_eq!(names_starting(&r.p(STATE), "state.db.corrupt-").len(), 1);
                assert_eq!(
                    r.sql(STATE, "SELECT service FROM base ORDER BY service"),
                    "foo\ngood"
                );
                assert_eq!(
                    r.sql(STATE, "SELECT service || ' ' || path FROM conflict"),
                    "foo run"
                );
            }),
        ],
    )
}

fn run_case(c: &Case) {
    let root = Root::new(&["s6"], "");
    // the case's settings first, so top-level keys stay top-level
    root.write(
        "/etc/svsettle.toml",
        &format!(
            "{}\n[domain.runit]\nenabled = false\n[domain.s6-rc]\nenabled = false\n",
            c.config
        ),
    );
    // the parents of the writable trees exist, as on any system
    for d in ["/etc/s6", "/var/lib", "/run"] {
        fs::create_dir_all(root.p(d)).expect("mkdir");
    }
    root.stock(STOCK, "good", &[("run", GOOD_RUN)]);
    (c.setup)(&root);
    for (i, step) in c.steps.iter().enumerate() {
        match step {
            Step::Do(f) => f(&root),
            Step::Run {
                wrap,
                args,
                stdin,
                code,
                want,
            } => {
                let before = root.snapshot(&WRITABLE);
                let out = root.svsettle_raw(wrap, args, &[], stdin.as_deref());
                let all = format!("{}\n{}", out.stdout, out.stderr);
                let explain = || {
                    format!(
                        "step {i}: {}\nexit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                        out.argv.join(" ").escape_debug(),
                        out.code,
                        out.stdout,
                        out.stderr
                    )
                };
                assert_eq!(out.code, *code, "exit code\n{}", explain());
                for w in want {
                    assert!(
                        all.contains(w.as_str()),
                        "output lacks {w:?}\n{}",
                        explain()
                    );
                }
                for bad in ["panicked", "database is locked", "RUST_BACKTRACE"] {
                    assert!(!all.contains(bad), "output has {bad:?}\n{}", explain());
                }
                let after = root.snapshot(&WRITABLE);
                let gone: Vec<_> = before.difference(&after).map(|(p, _)| p).collect();
                let new: Vec<_> = after.difference(&before).map(|(p, _)| p).collect();
                assert!(
                    gone.is_empty() && new.is_empty(),
                    "changed outside the live tree, scan and state directories: removed or changed {gone:?}, added or changed {new:?}\n{}",
                    explain()
                );
            }
        }
    }
    let good = root.p("/etc/s6/sv/good/run");
    if c.good {
        assert_eq!(
            fs::read_to_string(&good).ok().as_deref(),
            Some(GOOD_RUN),
            "the valid service good was not created\n{}",
            root.listing()
        );
    } else {
        assert!(!good.exists(), "good was created despite a refusal");
    }
}

#[test]
fn hostile_input() {
    require("setpriv");
    require("sqlite3");
    let cases = cases();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names must be distinct");
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    // independent roots: a few at a time (most of the time is spent waiting on fsync)
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(c) = cases.get(i) else { break };
                    if let Err(e) = catch_unwind(AssertUnwindSafe(|| run_case(c))) {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("=== case {:?}\n{msg}", c.name));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    println!("hostile input: {} cases passed", cases.len());
}

// ---------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------

/// svsettle started in the background (stdout and stderr captured).
fn spawn_sv(root: &Root, args: &[&str], stdin: Option<&[u8]>) -> Child {
    let mut cmd = Command::new(bin());
    cmd.arg("--root")
        .arg(&root.path)
        .args(args)
        .env_clear()
        .env("PATH", test_path())
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn svsettle");
    if let Some(data) = stdin {
        use std::io::Write;
        let mut s = child.stdin.take().expect("stdin");
        s.write_all(data).expect("write stdin");
    }
    child
}

/// Waits for a background svsettle: (what, exit code, stdout + stderr).
fn finish(what: String, child: Child) -> (String, i32, String) {
    let out = child.wait_with_output().expect("wait");
    (
        what,
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Rounds of the concurrency test, each in a fresh root (the first writers race to
/// create the database too).
const ROUNDS: usize = 20;
/// Enqueue and hook processes started at once in each round.
const PROCS: usize = 32;
const SERVICES: usize = 4;

#[test]
fn concurrency() {
    require("sqlite3");
    for round in 0..ROUNDS {
        concurrency_round(round);
    }
    println!("concurrency: {ROUNDS} rounds of {PROCS} enqueue/hook processes and 2 reconcilers");
}

fn concurrency_round(round: usize) {
    let root = Root::new(&["s6"], "");
    for i in 0..SERVICES {
        root.stock(STOCK, &format!("s{i}"), &[("run", GOOD_RUN)]);
    }
    // a broken stock service: its hints stay queued (it fails every run), so every
    // hint recorded for it can be counted afterwards
    root.stock(STOCK, "bad", &[("run", GOOD_RUN)]);
    nix::unistd::mkfifo(
        &root.p("/usr/share/s6/sv/bad/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");

    // ---- phase 1: everything at once ----
    let mut kids: Vec<(String, Child)> = Vec::new();
    kids.push((
        "reconcile --all".into(),
        spawn_sv(&root, &["reconcile", "--all"], None),
    ));
    let (mut enqueuers, mut hooks) = (0, 0);
    for p in 0..PROCS {
        let svc = format!("s{}", p % SERVICES);
        if p % 2 == 0 {
            enqueuers += 1;
            let args = [
                "enqueue".to_string(),
                format!("{STOCK}/{svc}/run"),
                format!("{STOCK}/bad/p{p}"),
                format!("{STOCK}/bad/shared"),
            ];
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kids.push((format!("enqueue #{p}"), spawn_sv(&root, &args, None)));
        } else {
            hooks += 1;
            let stdin = format!(
                "usr/share/s6/sv/{svc}/run\nusr/share/s6/sv/bad/p{p}\nusr/share/s6/sv/bad/shared\n"
            );
            kids.push((
                format!("hook pacman #{p}"),
                spawn_sv(&root, &["hook", "pacman"], Some(stdin.as_bytes())),
            ));
        }
        if p == PROCS / 2 {
            kids.push(("reconcile".into(), spawn_sv(&root, &["reconcile"], None)));
        }
    }
    let results: Vec<(String, i32, String)> = kids.into_iter().map(|(w, c)| finish(w, c)).collect();
    let root_str = root.path.display().to_string();
    for (what, code, out) in &results {
        let ctx = format!("round {round}, {what}: exit {code}\n{out}");
        // (the random name of the temporary root cannot match)
        let text = out.replace(&root_str, "ROOT").to_lowercase();
        for bad in ["locked", "busy", "panicked", "error"] {
            assert!(!text.contains(bad), "{bad:?} reached the user: {ctx}");
        }
        if what.starts_with("reconcile") {
            match code {
                0 | 1 => {}
                3 => assert!(
                    out.contains("deferred: another svsettle reconcile is running (pid "),
                    "{ctx}"
                ),
                _ => panic!("unexpected exit code: {ctx}"),
            }
            if *code == 1 {
                assert!(out.contains("failed bad: "), "{ctx}");
            }
        } else {
            assert_eq!(*code, 0, "{ctx}");
        }
    }
    // every hint for bad recorded exactly once, or merged where it is the same hint
    // (same path, source and transaction: the enqueuers' shared path); the retry hint
    // a whole-domain walk leaves for a failed service is not one of them
    let rows = root.sql(
        STATE,
        "SELECT path, count(*) FROM hint WHERE service = 'bad' AND source <> 'retry' GROUP BY path ORDER BY path",
    );
    let got: BTreeMap<String, usize> = rows
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(p, n)| (p.to_string(), n.parse().expect("count")))
        .collect();
    let mut want: BTreeMap<String, usize> = (0..PROCS)
        .map(|p| (format!("{STOCK}/bad/p{p}"), 1))
        .collect();
    want.insert(format!("{STOCK}/bad/shared"), 1 + hooks);
    assert_eq!(got, want, "round {round}: hints for bad");
    assert_eq!(
        root.sql(
            STATE,
            "SELECT count(*) FROM hint WHERE service = 'bad' AND source <> 'retry'"
        ),
        (enqueuers + 1 + 2 * hooks).to_string()
    );

    // ---- phase 2: one reconciler at a time, deterministically ----
    // A waits for a package transaction (pacman's db.lck) while holding the lock.
    root.write("/var/lib/pacman/db.lck", "");
    let a = spawn_sv(&root, &["reconcile", "--wait"], None);
    let a_pid = a.id().to_string();
    wait_for("the first reconciler to take the lock", LIMIT, || {
        fs::read_to_string(root.p(STATE).join("reconcile.lock")).is_ok_and(|s| s.trim() == a_pid)
    });
    let b = root.svsettle(&["reconcile"]);
    b.code(3).stdout_has(&format!(
        "deferred: another svsettle reconcile is running (pid {a_pid})"
    ));
    let h = root.svsettle_stdin(&["hook", "pacman"], b"usr/share/s6/sv/s0/run\n");
    h.ok().stdout_has(&format!(
        "another svsettle reconcile is running (pid {a_pid}); s0 stays queued"
    ));
    let c = spawn_sv(&root, &["reconcile", "--wait"], None);
    fs::remove_file(root.p("/var/lib/pacman/db.lck")).expect("rm db.lck");
    for (what, code, out) in [finish("A".into(), a), finish("C".into(), c)] {
        assert_eq!(code, 1, "round {round}: reconcile --wait {what}\n{out}");
        assert!(out.contains("failed bad: "), "round {round}: {what}\n{out}");
        assert!(!out.to_lowercase().contains("locked"), "{out}");
    }
    for i in 0..SERVICES {
        assert_eq!(
            root.read(&format!("{LIVE}/s{i}/run")),
            GOOD_RUN,
            "round {round}: s{i}"
        );
    }
    assert_eq!(
        root.sql(STATE, "SELECT count(*) FROM hint WHERE service <> 'bad'"),
        "0",
        "round {round}: hints left for good services"
    );
}

// ---------------------------------------------------------------------------------
// Full disk
// ---------------------------------------------------------------------------------

/// A mount namespace holding a small tmpfs over a directory, kept alive by a
/// `sleep`; killed by pid when dropped (the mount goes with it).
struct TmpfsNs {
    child: Child,
    dir: PathBuf,
}

impl TmpfsNs {
    fn start(dir: &Path, size: &str) -> TmpfsNs {
        let unshare = require("unshare");
        require("nsenter");
        fs::create_dir_all(dir).expect("mkdir");
        let script = "mount -t tmpfs -o size=\"$2\",mode=0755 svsettle-test \"$1\" && echo mounted && exec sleep 600";
        let mut child = Command::new(unshare)
            .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(dir)
            .arg(size)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn unshare");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim(), "mounted", "tmpfs not mounted in the namespace");
        TmpfsNs {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// A host path as seen inside the namespace.
    fn inside(&self, host: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{}", self.child.id(), host.display()))
    }

    /// nsenter into the namespace, then `argv`.
    fn argv(&self, argv: &[&str]) -> Vec<String> {
        let mut v = vec![
            "-t".to_string(),
            self.child.id().to_string(),
            "-m".to_string(),
            "--".to_string(),
        ];
        v.extend(argv.iter().map(|s| s.to_string()));
        v
    }

    fn svsettle(&self, root: &Root, args: &[&str]) -> Out {
        let bin = bin();
        let root_arg = root.path.display().to_string();
        let mut argv = vec![bin.to_str().expect("utf-8 path"), "--root", &root_arg];
        argv.extend_from_slice(args);
        root.run_cmd(&require("nsenter"), &self.argv(&argv), &[], None)
    }

    fn resize(&self, root: &Root, size: &str) {
        let opt = format!("remount,size={size}");
        let dir = self.dir.display().to_string();
        root.run_cmd(
            &require("nsenter"),
            &self.argv(&["mount", "-o", &opt, &dir]),
            &[],
            None,
        )
        .ok();
    }
}

impl Drop for TmpfsNs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn full_disk() {
    let root = Root::new(&["s6"], "");
    fs::create_dir_all(root.p("/var/lib")).expect("mkdir");
    let ns = TmpfsNs::start(&root.p(LIVE), "128k");
    let live = |rel: &str| ns.inside(&root.p(LIVE).join(rel));
    let read_live =
        |rel: &str| fs::read_to_string(live(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));

    root.stock(
        STOCK,
        "foo",
        &[("run", "#!/bin/sh\n# v1\n"), ("conf", "v1\n")],
    );
    ns.svsettle(&root, &["reconcile", "--all"])
        .ok()
        .has_line("created foo (not enabled: enable-new = false)");
    assert!(
        !root.p(LIVE).join("foo").exists(),
        "the live tree is not on the namespace's tmpfs"
    );

    // v2 of foo and a new service bar each carry 256 KiB: neither fits in 128 KiB
    let big = "x".repeat(256 << 10);
    root.stock(
        STOCK,
        "foo",
        &[
            ("run", "#!/bin/sh\n# v2\n"),
            ("conf", "v2\n"),
            ("big", &big),
        ],
    );
    root.stock(STOCK, "bar", &[("run", "#!/bin/sh\n"), ("big", &big)]);
    root.stock(STOCK, "good", &[("run", GOOD_RUN)]);
    ns.svsettle(
        &root,
        &[
            "enqueue",
            "/usr/share/s6/sv/foo/big",
            "/usr/share/s6/sv/bar",
            "/usr/share/s6/sv/good",
        ],
    )
    .ok();
    let before = root.snapshot(&WRITABLE);
    let out = ns.svsettle(&root, &["reconcile"]);
    out.code(1)
        .stdout_has("failed foo: rolled back, live unchanged: cannot stage big: cannot write ")
        .stdout_has("/etc/s6/sv/foo/.svsettle-stage/")
        .stdout_has("failed bar: nothing was created: cannot write ")
        .stdout_has("/etc/s6/sv/.svsettle-new.bar/big")
        .has_line(CREATED_GOOD);
    for l in out.lines_starting("failed ") {
        assert!(l.contains("No space left on device"), "{l}");
    }
    assert_eq!(
        before,
        root.snapshot(&WRITABLE),
        "wrote outside the writable trees"
    );
    // foo fully old, bar absent, no temporaries
    assert_eq!(read_live("foo/run"), "#!/bin/sh\n# v1\n");
    assert_eq!(read_live("foo/conf"), "v1\n");
    assert!(!live("foo/big").exists() && !live("bar").exists());
    assert!(
        names_starting(&ns.inside(&root.p(LIVE)), ".svsettle-").is_empty(),
        "temporaries left on the full disk"
    );
    // the journal rolled back; the hints of the failed services stay queued
    let st = root.svsettle(&["--json", "status"]);
    st.ok();
    let v: serde_json::Value = serde_json::from_str(&st.stdout).expect("status json");
    assert_eq!(v["interrupted"], serde_json::json!([]), "{}", st.stdout);
    let pending: Vec<&str> = v["pending"]
        .as_array()
        .expect("pending")
        .iter()
        .filter_map(|p| p["service"].as_str())
        .collect();
    assert_eq!(pending, ["bar", "foo"], "{}", st.stdout);

    // space freed: the next reconcile of the queued hints completes
    ns.resize(&root, "4m");
    ns.svsettle(&root, &["reconcile"])
        .ok()
        .has_line("updated foo (not running): big, conf and run changed")
        .has_line("created bar (not enabled: enable-new = false)");
    assert_eq!(read_live("foo/run"), "#!/bin/sh\n# v2\n");
    assert_eq!(read_live("foo/big"), big);
    assert_eq!(read_live("bar/big"), big);
    assert!(names_starting(&ns.inside(&root.p(LIVE)), ".svsettle-").is_empty());
}

// ---------------------------------------------------------------------------------
// Supervisor faults (real s6-svscan)
// ---------------------------------------------------------------------------------

/// A run script that records each start as `TAG PID` in `/starts/NAME` inside the
/// root, then runs `tail` (default: a long sleep).
fn run_script(root: &Root, name: &str, tag: &str, tail: &str) -> String {
    let starts = root.p("/starts");
    fs::create_dir_all(&starts).expect("mkdir starts");
    format!(
        "#!/bin/sh\necho \"{tag} $$\" >> {}/{name}\n{tail}\n",
        starts.display()
    )
}

fn starts(root: &Root, name: &str) -> Vec<String> {
    fs::read_to_string(root.p("/starts").join(name))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// svsettle behind `timeout`, so a hang fails the test with exit 124 instead of
/// blocking it.
fn bounded(root: &Root, args: &[&str], env: &[(&str, &str)]) -> Out {
    let args: Vec<OsString> = args.iter().map(|a| os(a)).collect();
    let out = root.svsettle_raw(&["timeout", "120"], &args, env, None);
    assert_ne!(
        out.code, 124,
        "svsettle hung: {:?}\n{}",
        out.argv, out.stdout
    );
    out
}

#[test]
fn supervisor_not_running() {
    let root = Root::new(&["s6"], "[domain.s6]\nenable-new = true\n");
    root.stock(
        STOCK,
        "foo",
        &[("run", &run_script(&root, "foo", "v1", "exec sleep 1000"))],
    );
    let mut sup = start_s6_svscan(&root, SCAN);
    root.svsettle(&["reconcile", "--all"])
        .ok()
        .has_line("created foo (enabled)");
    let foo = root.p(LIVE).join("foo");
    wait_for("foo up", LIMIT, || s6_pid(&foo).is_some());
    // the scanner and every supervisor die; supervise/ stays behind, stale
    sup.stop();
    root.stock(
        STOCK,
        "foo",
        &[("run", &run_script(&root, "foo", "v2", "exec sleep 1000"))],
    );
    root.stock(STOCK, "bar", &[("run", GOOD_RUN)]);
    let out = bounded(&root, &["reconcile", "--all"], &[]);
    out.ok()
        .has_line("updated foo (not running): run changed")
        .has_line("created bar (enabled)");
    assert!(root.read(&format!("{LIVE}/foo/run")).contains("v2"));
    // the link waits for the next scanner
    assert!(root.p("/run/service/bar").symlink_metadata().is_ok());
    // and the next scanner runs the new versions
    let _sup = start_s6_svscan(&root, SCAN);
    wait_for("foo v2 up", LIMIT, || {
        starts(&root, "foo")
            .last()
            .is_some_and(|l| l.starts_with("v2 "))
    });
}

#[test]
fn supervisor_stop_timeout() {
    let root = Root::new(
        &["s6"],
        "[domain.s6]\nenable-new = true\nstop-timeout = 1\n",
    );
    // ignores SIGTERM (the disposition survives exec)
    let stubborn = |tag: &str| run_script(&root, "hang", tag, "trap '' TERM\nexec sleep 1000");
    root.stock(STOCK, "hang", &[("run", &stubborn("v1"))]);
    root.stock(
        STOCK,
        "other",
        &[("run", &run_script(&root, "other", "v1", "exec sleep 1000"))],
    );
    let _sup = start_s6_svscan(&root, SCAN);
    root.svsettle(&["reconcile", "--all"]).ok();
    let (hang, other) = (root.p(LIVE).join("hang"), root.p(LIVE).join("other"));
    wait_for("both up", LIMIT, || {
        s6_pid(&hang).is_some() && s6_pid(&other).is_some()
    });
    let old = s6_pid(&hang).expect("pid");
    root.stock(STOCK, "hang", &[("run", &stubborn("v2"))]);
    root.stock(
        STOCK,
        "other",
        &[("run", &run_script(&root, "other", "v2", "exec sleep 1000"))],
    );
    bounded(&root, &["reconcile", "--all"], &[])
        .ok()
        .has_line("restarted hang: run changed")
        .has_line("restarted other: run changed");
    assert!(!alive(old), "the stubborn v1 process survived");
    wait_for("hang v2 up", LIMIT, || {
        starts(&root, "hang")
            .last()
            .is_some_and(|l| l.starts_with("v2 "))
    });
    assert_eq!(
        starts(&root, "hang").len(),
        2,
        "{:?}",
        starts(&root, "hang")
    );
    assert!(
        starts(&root, "other")
            .last()
            .is_some_and(|l| l.starts_with("v2 "))
    );
}

#[test]
fn supervisor_crash_during_update() {
    let root = Root::new(&["s6"], "[domain.s6]\nenable-new = true\n");
    // crash-loops: records which run script ran with which data file, then exits 1;
    // s6-supervise restarts it about once a second
    let crashy = |tag: &str| {
        run_script(
            &root,
            "crashy",
            &format!("{tag} $(cat data)"),
            "sleep 0.2; exit 1",
        )
    };
    root.stock(STOCK, "crashy", &[("run", &crashy("v1")), ("data", "A")]);
    root.stock(
        STOCK,
        "other",
        &[("run", &run_script(&root, "other", "v1", "exec sleep 1000"))],
    );
    let _sup = start_s6_svscan(&root, SCAN);
    root.svsettle(&["reconcile", "--all"]).ok();
    wait_for("crashy to have crashed and restarted", LIMIT, || {
        starts(&root, "crashy").len() >= 2
    });
    root.stock(STOCK, "crashy", &[("run", &crashy("v2")), ("data", "B")]);
    root.stock(
        STOCK,
        "other",
        &[("run", &run_script(&root, "other", "v2", "exec sleep 1000"))],
    );
    // down between crashes but wanted up: stopped for the update, started once after
    bounded(&root, &["reconcile", "--all"], &[])
        .ok()
        .has_line("restarted crashy: data and run changed")
        .has_line("restarted other: run changed");
    wait_for("crashy v2 to run", LIMIT, || {
        starts(&root, "crashy").iter().any(|l| l.starts_with("v2 "))
    });
    // never a mix of the old run script with the new data or the other way round
    for l in starts(&root, "crashy") {
        assert!(
            l.starts_with("v1 A ") || l.starts_with("v2 B "),
            "mixed start: {l}"
        );
    }
}

#[test]
fn supervisor_programs_missing() {
    let root = Root::new(&["s6"], "");
    root.stock(STOCK, "foo", &[("run", GOOD_RUN)]);
    fs::create_dir_all(root.p("/empty-bin")).expect("mkdir");
    let path = root.p("/empty-bin").display().to_string();
    let env = [("PATH", path.as_str())];
    root.svsettle_env(&["enqueue", "/usr/share/s6/sv/foo"], &env)
        .ok();
    // exit 0: a domain whose supervisor programs are missing is skipped, not an error
    bounded(&root, &["-v", "reconcile"], &env)
        .ok()
        .stdout_has("note: domain s6 skipped: s6-svc, s6-svstat, s6-svscanctl not found on PATH")
        .stdout_has("note: 1 hint(s) for s6/foo kept: domain skipped");
    let hook = root.svsettle_raw(
        &[],
        &[os("hook"), os("pacman")],
        &env,
        Some(b"usr/share/s6/sv/foo/run\n"),
    );
    hook.ok().stdout_has(
        "domain s6 skipped (s6-svc, s6-svstat, s6-svscanctl not found on PATH): foo stays queued",
    );
    assert!(
        !root.exists("/etc/s6/sv/foo"),
        "acted without the supervisor programs"
    );
    root.svsettle_env(&["status"], &env)
        .ok()
        .stdout_has("domain s6: skipped (s6-svc, s6-svstat, s6-svscanctl not found on PATH)")
        .stdout_has("pending: 1 (foo)");
    // with the programs back, the kept hints are reconciled
    root.svsettle(&["reconcile"])
        .ok()
        .has_line("created foo (not enabled: enable-new = false)");
}
