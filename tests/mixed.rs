//! A mixed machine: the s6 and runit domains configured side by side, a real
//! s6-svscan and a real runsvdir running, and one `reconcile --pending` for changes in
//! both stock trees. Both domains hold a service named `web`: a change to one of them
//! must touch that one only.
//!
//! Services record their starts as in the scenarios (`TAG PID` lines), in
//! `/starts/DOMAIN.NAME` and `/starts/DOMAIN.NAME.log`.

use crate::scenarios::{Flavor, LIMIT, action_lines};
use crate::util::*;
use std::collections::BTreeMap;
use std::fs;

/// Both domains, s6 first.
const BOTH: [Flavor; 2] = [Flavor::S6, Flavor::Runit];

/// A root with both domains and both scanners. The scanners are declared first so
/// they are killed before the root is deleted.
struct Machine {
    s6: Supervisor,
    runit: Supervisor,
    root: Root,
}

/// A service or logger of one domain (`(Flavor::S6, "web/log")`).
type Svc = (Flavor, &'static str);

impl Machine {
    fn new() -> Machine {
        Machine::with_runit("")
    }

    /// Both domains, the runit one configured with `runit_keys` as well.
    fn with_runit(runit_keys: &str) -> Machine {
        let root = Root::new(
            &["s6", "runit"],
            &format!(
                "[domain.s6]\nenable-new = true\n[domain.runit]\nenable-new = true\n{runit_keys}"
            ),
        );
        fs::create_dir_all(root.p("/starts")).expect("mkdir starts");
        let s6 = Flavor::S6.start(&root);
        let runit = Flavor::Runit.start(&root);
        Machine { s6, runit, root }
    }

    fn svsettle(&self, args: &[&str]) -> Out {
        self.root.svsettle(args)
    }

    fn sup(&self, f: Flavor) -> &Supervisor {
        match f {
            Flavor::S6 => &self.s6,
            Flavor::Runit => &self.runit,
        }
    }

    /// Host path of the starts file of a service (`web`) or its logger (`web/log`).
    fn starts_file(&self, f: Flavor, svc: &str) -> std::path::PathBuf {
        let file = match svc.strip_suffix("/log") {
            Some(name) => format!("{name}.log"),
            None => svc.to_string(),
        };
        self.root.p(&format!("/starts/{}.{file}", f.domain()))
    }

    /// Writes (or rewrites) the stock `run` (or `log/run` for `NAME/log`) of a
    /// service: it records its start as `tag`.
    fn stock_script(&self, (f, svc): Svc, tag: &str) {
        let file = self.starts_file(f, svc);
        let (name, rel, body) = match svc.strip_suffix("/log") {
            Some(name) => (name, "log/run", "exec cat > /dev/null"),
            None => (svc, "run", "exec sleep 86400"),
        };
        let script = format!(
            "#!/bin/sh\necho \"{tag} $$\" >> '{}'\n{body}\n",
            file.display()
        );
        self.root.stock(f.stock(), name, &[(rel, &script)]);
    }

    /// The starts recorded for a service or logger: (tag, pid), oldest first.
    fn starts(&self, (f, svc): Svc) -> Vec<(String, u32)> {
        fs::read_to_string(self.starts_file(f, svc))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let (tag, pid) = l.rsplit_once(' ').unwrap_or((l, "0"));
                (tag.to_string(), pid.parse().unwrap_or(0))
            })
            .collect()
    }

    fn pid(&self, (f, svc): Svc) -> Option<u32> {
        f.pid(&self.root, svc)
    }

    /// Waits until the service or logger is up with a pid other than `old` (any pid
    /// when `old` is 0) and has recorded that start; returns the pid.
    #[track_caller]
    fn wait_started(&self, s: Svc, old: u32) -> u32 {
        let mut pid = None;
        wait_for(
            &format!("{}/{} up with a pid other than {old}", s.0.domain(), s.1),
            LIMIT,
            || {
                pid = self.pid(s).filter(|&p| p != old);
                pid.is_some_and(|p| self.starts(s).last().map(|x| x.1) == Some(p))
            },
        );
        pid.unwrap_or_default()
    }
}

fn name(f: Flavor, svc: &str) -> String {
    format!("{}/{svc}", f.domain())
}

/// Changes in both stock trees, enqueued together, settled by one reconcile: in each
/// domain exactly the changed parts get new pids, the removed service goes, the new one
/// comes up under its own domain's scanner, and the rest keep their pids.
#[test]
fn s6_and_runit_reconciled_in_one_run() {
    let m = Machine::new();
    let s6 = Flavor::S6;
    let rt = Flavor::Runit;
    // every service and logger the first reconcile creates
    let all: [Svc; 11] = [
        (s6, "web"),
        (s6, "web/log"),
        (s6, "db"),
        (s6, "cron"),
        (s6, "gone"),
        (s6, "gone/log"),
        (rt, "web"),
        (rt, "web/log"),
        (rt, "mail"),
        (rt, "mail/log"),
        (rt, "ntp"),
    ];
    for s in all {
        m.stock_script(s, "v1");
    }
    m.svsettle(&["enqueue", s6.stock(), rt.stock()]).ok();
    let out = m.svsettle(&["reconcile", "--pending"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        [
            "created cron (enabled)",
            "created db (enabled)",
            "created gone (enabled)",
            "created mail (enabled)",
            "created ntp (enabled)",
            "created web (enabled)",
            "created web (enabled)",
        ],
        "{}",
        out.stdout
    );
    let before: BTreeMap<String, u32> = all
        .iter()
        .map(|&s| (name(s.0, s.1), m.wait_started(s, 0)))
        .collect();

    // s6: db's run and web's logger change, gone is removed;
    // runit: web's run and mail's logger change, fresh is new
    let changed: [Svc; 4] = [(s6, "db"), (s6, "web/log"), (rt, "web"), (rt, "mail/log")];
    for s in changed {
        m.stock_script(s, "v2");
    }
    fs::remove_dir_all(m.root.p(&format!("{}/gone", s6.stock()))).expect("remove stock gone");
    m.stock_script((rt, "fresh"), "v1");
    let paths = [
        format!("{}/db/run", s6.stock()),
        format!("{}/web/log/run", s6.stock()),
        format!("{}/gone", s6.stock()),
        format!("{}/web/run", rt.stock()),
        format!("{}/mail/log/run", rt.stock()),
        format!("{}/fresh", rt.stock()),
    ];
    let mut args = vec!["enqueue"];
    args.extend(paths.iter().map(String::as_str));
    m.svsettle(&args).ok();
    let st = m.svsettle(&["--json", "status"]);
    st.ok();
    let v: serde_json::Value = serde_json::from_str(&st.stdout).expect("status --json");
    let mut pending: Vec<String> = v["pending"]
        .as_array()
        .unwrap_or_else(|| panic!("status --json lacks pending: {}", st.stdout))
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["domain"].as_str().unwrap_or("?"),
                p["service"].as_str().unwrap_or("(whole domain)")
            )
        })
        .collect();
    pending.sort();
    pending.dedup();
    assert_eq!(
        pending,
        [
            "runit/fresh",
            "runit/mail",
            "runit/web",
            "s6/db",
            "s6/gone",
            "s6/web",
        ],
        "{}",
        st.stdout
    );

    let out = m.svsettle(&["reconcile", "--pending"]);
    out.ok().lacks("failed").lacks("conflict");
    assert_eq!(
        action_lines(&out),
        [
            "created fresh (enabled)",
            "removed gone: stock service removed",
            "restarted db: run changed",
            "restarted mail/log: log/run changed",
            "restarted web/log: log/run changed",
            "restarted web: run changed",
        ],
        "{}",
        out.stdout
    );

    // exactly the changed parts restarted, once each, into their new script
    for s in changed {
        let old = before[&name(s.0, s.1)];
        let pid = m.wait_started(s, old);
        assert_eq!(
            m.starts(s),
            [("v1".to_string(), old), ("v2".to_string(), pid)],
            "{} must have restarted exactly once",
            name(s.0, s.1)
        );
        assert!(
            !alive(old),
            "{}: old process {old} still runs",
            name(s.0, s.1)
        );
    }
    // everything else in both domains kept its pid
    for s in all {
        if changed.contains(&s) || s.1.starts_with("gone") {
            continue;
        }
        assert_eq!(
            m.pid(s),
            Some(before[&name(s.0, s.1)]),
            "{} must keep its pid",
            name(s.0, s.1)
        );
        assert_eq!(m.starts(s).len(), 1, "{} restarted", name(s.0, s.1));
    }
    // live follows stock in the domain that changed, and only there
    for (f, rel) in [(s6, "db/run"), (s6, "web/log/run"), (rt, "web/run")] {
        assert_eq!(
            m.root.read(&format!("{}/{rel}", f.live())),
            m.root.read(&format!("{}/{rel}", f.stock())),
            "{}",
            name(f, rel)
        );
    }
    assert!(
        m.root
            .read(&format!("{}/web/run", s6.live()))
            .contains("echo \"v1 $$\""),
        "s6's web/run must not have changed"
    );

    // gone: stopped, out of s6's scan directory, deleted
    assert!(!m.root.exists(&format!("{}/gone", s6.scan())));
    assert!(!m.root.exists(&format!("{}/gone", s6.live())));
    for s in ["gone", "gone/log"] {
        let old = before[&name(s6, s)];
        wait_for(&format!("old s6/{s} process {old} to end"), LIMIT, || {
            !alive(old)
        });
    }
    wait_for("the supervisors of s6/gone to go", LIMIT, || {
        m.s6.count_running("s6-supervise", "gone") == 0
            && m.s6.count_running("s6-supervise", "gone/log") == 0
    });

    // fresh: created in runit's trees only, run by runsvdir
    assert!(m.root.exists(&format!("{}/fresh", rt.scan())));
    assert!(!m.root.exists(&format!("{}/fresh", s6.live())));
    assert!(!m.root.exists(&format!("{}/fresh", s6.scan())));
    let fresh = m.wait_started((rt, "fresh"), 0);
    assert_eq!(m.starts((rt, "fresh")), [("v1".to_string(), fresh)]);

    // one supervisor per service, under its own domain's scanner
    for (f, names) in [
        (s6, &["web", "db", "cron"][..]),
        (rt, &["web", "mail", "ntp", "fresh"][..]),
    ] {
        for n in names {
            assert_eq!(
                f.supervisors(m.sup(f), n),
                1,
                "supervisors of {}",
                name(f, n)
            );
        }
    }
    assert_eq!(Flavor::Runit.supervisors(&m.runit, "db"), 0);
    assert_eq!(Flavor::S6.supervisors(&m.s6, "fresh"), 0);

    // history says which domain each action was in
    let h = m.svsettle(&["--json", "history", "-n", "6"]);
    h.ok();
    let rows: serde_json::Value = serde_json::from_str(&h.stdout).expect("history --json");
    let mut got: Vec<String> = rows
        .as_array()
        .unwrap_or_else(|| panic!("history --json: {}", h.stdout))
        .iter()
        .map(|r| {
            format!(
                "{}: {}",
                r["domain"].as_str().unwrap_or("?"),
                r["detail"].as_str().unwrap_or("?")
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "runit: created fresh (enabled)",
            "runit: restarted mail/log: log/run changed",
            "runit: restarted web: run changed",
            "s6: removed gone: stock service removed",
            "s6: restarted db: run changed",
            "s6: restarted web/log: log/run changed",
        ],
        "{}",
        h.stdout
    );

    let st = m.svsettle(&["status"]);
    st.ok()
        .has_line("pending: none")
        .has_line("conflicts: none")
        .lacks("interrupted");
    let again = m.svsettle(&["reconcile", "--all"]);
    again.ok().has_line("unchanged: 7 services left untouched");
    assert_eq!(
        action_lines(&again),
        Vec::<String>::new(),
        "{}",
        again.stdout
    );
}

/// Two services of the same name: a reconcile of `DOMAIN/NAME` acts on that domain
/// only, a plain `NAME` on both; a conflict in one domain holds back that service
/// alone while the same change is applied in the other.
#[test]
fn same_name_in_both_domains() {
    let m = Machine::new();
    for f in BOTH {
        m.stock_script((f, "web"), "v1");
    }
    m.svsettle(&["enqueue", Flavor::S6.stock(), Flavor::Runit.stock()])
        .ok();
    m.svsettle(&["reconcile", "--pending"]).ok();
    let pids: BTreeMap<&str, u32> = BOTH
        .iter()
        .map(|&f| (f.domain(), m.wait_started((f, "web"), 0)))
        .collect();

    // both stock copies change; the admin also edited s6's live run
    for f in BOTH {
        m.stock_script((f, "web"), "v2");
    }
    let admin = format!(
        "#!/bin/sh\necho \"admin $$\" >> '{}'\nexec sleep 86400\n",
        m.starts_file(Flavor::S6, "web").display()
    );
    m.root
        .write_exec(&format!("{}/web/run", Flavor::S6.live()), &admin);

    // DOMAIN/NAME: the runit one only
    let out = m.svsettle(&["reconcile", "runit/web"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        ["restarted web: run changed"],
        "{}",
        out.stdout
    );
    let rt_pid = m.wait_started((Flavor::Runit, "web"), pids["runit"]);
    assert_eq!(m.pid((Flavor::S6, "web")), Some(pids["s6"]));

    // NAME: both domains; s6's is a conflict (live kept, not restarted), runit's is
    // already settled
    let out = m.svsettle(&["reconcile", "web"]);
    out.ok();
    assert_eq!(
        action_lines(&out),
        [
            "conflict web: run changed in stock and in live; live kept (svsettle diff web; svsettle resolve web --keep-live|--take-stock)"
        ],
        "{}",
        out.stdout
    );
    out.has_line("unchanged: 1 service left untouched");
    assert_eq!(m.pid((Flavor::S6, "web")), Some(pids["s6"]));
    assert_eq!(m.pid((Flavor::Runit, "web")), Some(rt_pid));
    assert_eq!(
        m.root.read(&format!("{}/web/run", Flavor::S6.live())),
        admin
    );

    // diff and resolve find the conflict in s6, the only domain that has one
    m.svsettle(&["diff", "s6/web"])
        .ok()
        .stdout_has("+echo \"admin $$\"");
    m.svsettle(&["diff", "runit/web"])
        .ok()
        .has_line("web: live matches stock");
    m.svsettle(&["resolve", "web", "--take-stock"])
        .ok()
        .has_line("restarted web: run changed");
    let s6_pid = m.wait_started((Flavor::S6, "web"), pids["s6"]);
    assert_eq!(
        m.starts((Flavor::S6, "web")),
        [("v1".to_string(), pids["s6"]), ("v2".to_string(), s6_pid)]
    );
    assert_eq!(m.pid((Flavor::Runit, "web")), Some(rt_pid));
    assert_eq!(
        m.starts((Flavor::Runit, "web")),
        [
            ("v1".to_string(), pids["runit"]),
            ("v2".to_string(), rt_pid)
        ]
    );
    m.svsettle(&["reconcile", "--all"])
        .ok()
        .has_line("unchanged: 2 services left untouched");
}

/// A service of one domain that fails to come up fails alone: the other domain's
/// change in the same run is applied, the rest keep their pids, the run exits 1 and
/// the failure is reported under its domain until a later reconcile settles it.
#[test]
fn failure_in_one_domain_leaves_the_other_settled() {
    let m = Machine::with_runit("start-timeout = 1\n");
    let s6 = Flavor::S6;
    let rt = Flavor::Runit;
    let all: [Svc; 4] = [(s6, "web"), (s6, "db"), (rt, "mail"), (rt, "ntp")];
    for s in all {
        m.stock_script(s, "v1");
    }
    m.svsettle(&["enqueue", s6.stock(), rt.stock()]).ok();
    m.svsettle(&["reconcile", "--pending"]).ok();
    let before: BTreeMap<String, u32> = all
        .iter()
        .map(|&s| (name(s.0, s.1), m.wait_started(s, 0)))
        .collect();

    // s6's web changes; runit's mail gets a check that never passes (sv -w up times out)
    m.stock_script((s6, "web"), "v2");
    m.stock_script((rt, "mail"), "v2");
    m.root
        .stock(rt.stock(), "mail", &[("check", "#!/bin/sh\nexit 1\n")]);
    m.svsettle(&[
        "enqueue",
        &format!("{}/web/run", s6.stock()),
        &format!("{}/mail", rt.stock()),
    ])
    .ok();
    let out = m.svsettle(&["reconcile", "--pending"]);
    out.code(1)
        .has_line("restarted web: run changed")
        .stdout_has("failed mail: ")
        .stdout_has("`sv -w 1 up ");
    assert_eq!(
        out.lines_starting("failed").len(),
        1,
        "only mail fails\n{}",
        out.stdout
    );
    let web = m.wait_started((s6, "web"), before["s6/web"]);
    assert_eq!(
        m.starts((s6, "web")),
        [
            ("v1".to_string(), before["s6/web"]),
            ("v2".to_string(), web)
        ]
    );
    for s in [(s6, "db"), (rt, "ntp")] {
        assert_eq!(
            m.pid(s),
            Some(before[&name(s.0, s.1)]),
            "{}",
            name(s.0, s.1)
        );
    }
    m.svsettle(&["status"])
        .ok()
        .stdout_has("problems since the last clean reconcile:")
        .stdout_has("runit/mail")
        .lacks("s6/web");

    // the package fixes mail: the next reconcile settles it, the rest stays as it is
    fs::remove_file(m.root.p(&format!("{}/mail/check", rt.stock()))).expect("rm check");
    m.stock_script((rt, "mail"), "v3");
    m.svsettle(&["enqueue", &format!("{}/mail", rt.stock())])
        .ok();
    // (the run first finishes the failed update, whose service runs by now, then
    // applies the fix: mail's line may come twice)
    let out = m.svsettle(&["reconcile", "--pending"]);
    out.ok().lacks("failed");
    let lines = action_lines(&out);
    assert!(
        !lines.is_empty()
            && lines
                .iter()
                .all(|l| l == "restarted mail: check and run changed"),
        "{}",
        out.stdout
    );
    wait_for("runit/mail to run v3", LIMIT, || {
        m.pid((rt, "mail"))
            .is_some_and(|p| m.starts((rt, "mail")).last() == Some(&("v3".to_string(), p)))
    });
    let tags: Vec<String> = m.starts((rt, "mail")).into_iter().map(|s| s.0).collect();
    assert_eq!(tags, ["v1", "v2", "v3"], "mail: one start per version");
    assert_eq!(
        m.root.read(&format!("{}/mail/run", rt.live())),
        m.root.read(&format!("{}/mail/run", rt.stock()))
    );
    assert!(!m.root.exists(&format!("{}/mail/check", rt.live())));
    assert_eq!(m.pid((s6, "web")), Some(web));
    m.svsettle(&["status"]).ok().lacks("problems");
    let again = m.svsettle(&["reconcile", "--all"]);
    again.ok().has_line("unchanged: 4 services left untouched");
}
