//! Property tests of the pure planner: random stock, base and live trees over a small
//! alphabet of paths, contents, modes and types (files, directories, symlinks, type
//! changes, missing entries, missing trees), every running state and policy.
//!
//! The plan's ops are applied to the live tree in memory, the way `apply` writes them
//! (deletes remove a whole subtree; a put needs every ancestor to be a real directory
//! and never replaces a directory by a file), and then:
//! - (a) no admin change is lost: every live entry that differs from the base is left
//!   as it is, and every stock change not applied is reported as a conflict;
//! - (b) planning again from the result and the new base changes nothing (no ops;
//!   `Nothing` or `Conflict` only);
//! - (c) identical content never restarts, and a restart always has a changed, running
//!   part behind it;
//! - (d) every op can be executed: none writes through a symlink or a file, none puts a
//!   file where a directory stays;
//! - (e) an unmodified live tree ends equal to stock.

use crate::plan::{Action, Op, PlanPolicy, Run, ServicePlan, State, plan_foo};
use crate::tree::{Entry, Tree, hash_bytes, is_logger};
use proptest::prelude::*;

/// The paths every generated tree draws from (parents listed before children).
const PATHS: &[&str] = &[
    "run",
    "finish",
    "down",
    "env",
    "env/A",
    "env/B",
    "env/sub",
    "env/sub/X",
    "log",
    "log/run",
    "log/env",
    "log/env/Y",
];

/// Every entry a path may hold.
fn entries() -> Vec<Entry> {
    let f = |mode: u32, content: &str| Entry::File {
        mode,
        hash: hash_bytes(content.as_bytes()),
        size: content.len() as u64,
    };
    vec![
        f(0o755, "a"),
        f(0o644, "a"),
        f(0o755, "b"),
        f(0o644, "c"),
        Entry::Dir { mode: 0o755 },
        Entry::Dir { mode: 0o700 },
        Entry::Symlink {
            target: "/lib/x".into(),
        },
        Entry::Symlink {
            target: "../y".into(),
        },
    ]
}

/// How one path of stock or live relates to the base: mostly the same entry, so that
/// the interesting equalities of a three-way merge come up often.
#[derive(Debug, Clone, Copy)]
enum Derive {
    Same,
    Missing,
    Entry(usize),
}

fn derive() -> impl Strategy<Value = Derive> {
    prop_oneof![
        5 => Just(Derive::Same),
        1 => Just(Derive::Missing),
        3 => (0..entries().len()).prop_map(Derive::Entry),
    ]
}

/// A base entry: none, or one of [`entries`].
fn base_entry() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![1 => Just(None), 3 => (0..entries().len()).prop_map(Some)]
}

fn run_state() -> impl Strategy<Value = Run> {
    prop_oneof![Just(Run::Up), Just(Run::Down), Just(Run::Unsupervised)]
}

/// Drops what a real directory walk could never return: an entry whose parent is
/// missing or is not a directory.
fn normalise(raw: Tree) -> Tree {
    let mut out = Tree::new();
    for (path, entry) in raw {
        let parent_ok = match path.rsplit_once('/') {
            None => true,
            Some((parent, _)) => matches!(out.get(parent), Some(Entry::Dir { .. })),
        };
        if parent_ok {
            out.insert(path, entry);
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Triple {
    stock: Option<Tree>,
    base: Option<Tree>,
    live: Option<Tree>,
    state: State,
    policy: PlanPolicy,
}

fn triple() -> impl Strategy<Value = Triple> {
    let per_path = (base_entry(), derive(), derive());
    (
        prop::collection::vec(per_path, PATHS.len()),
        // whole trees missing: stock removed, base unknown (adoption), live removed
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.1),
        run_state(),
        run_state(),
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(
                cols,
                no_stock,
                no_base,
                no_live,
                main,
                log,
                restart_on_change,
                enable_new,
                excluded,
            )| {
                let all = entries();
                let (mut b, mut s, mut l) = (Tree::new(), Tree::new(), Tree::new());
                for (path, (be, sd, ld)) in PATHS.iter().zip(cols) {
                    let base = be.map(|i| all[i].clone());
                    let pick = |d: Derive| match d {
                        Derive::Same => base.clone(),
                        Derive::Missing => None,
                        Derive::Entry(i) => Some(all[i].clone()),
                    };
                    if let Some(e) = &base {
                        b.insert(path.to_string(), e.clone());
                    }
                    if let Some(e) = pick(sd) {
                        s.insert(path.to_string(), e);
                    }
                    if let Some(e) = pick(ld) {
                        l.insert(path.to_string(), e);
                    }
                }
                Triple {
                    stock: (!no_stock).then(|| normalise(s)),
                    base: (!no_base).then(|| normalise(b)),
                    live: (!no_live).then(|| normalise(l)),
                    state: State { main, log },
                    policy: PlanPolicy {
                        restart_on_change,
                        enable_new,
                        excluded,
                    },
                }
            },
        )
}

fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Executes ops on an in-memory live tree with the rules the real filesystem imposes.
fn execute(start: &Tree, ops: &[Op]) -> Result<Tree, String> {
    let mut t = start.clone();
    for op in ops {
        let path = op.path();
        for a in ancestors(path) {
            if !matches!(t.get(a), Some(Entry::Dir { .. })) {
                return Err(format!(
                    "{op:?}: ancestor {a} is {:?}, not a directory (would write through it or fail half-way)",
                    t.get(a)
                ));
            }
        }
        match op {
            Op::Delete { path } => {
                let prefix = format!("{path}/");
                t.retain(|k, _| k != path && !k.starts_with(&prefix));
            }
            Op::Put { path, entry } => {
                let here_is_dir = matches!(t.get(path), Some(Entry::Dir { .. }));
                match entry {
                    Entry::Dir { .. } if t.contains_key(path) && !here_is_dir => {
                        return Err(format!("{op:?}: a non-directory is in the way"));
                    }
                    Entry::File { .. } | Entry::Symlink { .. } if here_is_dir => {
                        return Err(format!("{op:?}: a directory is in the way of a file"));
                    }
                    _ => {}
                }
                t.insert(path.clone(), entry.clone());
            }
        }
    }
    Ok(t)
}

/// The live tree once the plan is carried out (`None`: the service is gone).
fn outcome(p: &ServicePlan, live: Option<&Tree>) -> Result<Option<Tree>, String> {
    match p.action {
        Action::Create => execute(&Tree::new(), &p.ops).map(Some),
        Action::Update => execute(live.ok_or("update without a live tree")?, &p.ops).map(Some),
        Action::Remove => Ok(None),
        _ => Ok(live.cloned()),
    }
}

fn union<'a>(trees: &[Option<&'a Tree>]) -> std::collections::BTreeSet<&'a String> {
    trees.iter().flatten().flat_map(|t| t.keys()).collect()
}

fn check(t: &Triple) -> Result<(), TestCaseError> {
    let (stock, base, live) = (t.stock.as_ref(), t.base.as_ref(), t.live.as_ref());
    let p = plan_foo(stock, base, live, t.state, t.policy);
    let after = outcome(&p, live).map_err(|e| TestCaseError::fail(format!("(d) {e}\n{p:#?}")))?;
    let conflicted = |path: &str| p.conflicts.iter().any(|c| c.path == path || c.path == ".");

    // (c) restarts need a changed, running part; identical content never restarts
    if stock.is_some() && stock == live {
        prop_assert!(p.ops.is_empty(), "(c) ops for identical content: {p:#?}");
        prop_assert!(!p.restart_main && !p.restart_log, "(c) restart: {p:#?}");
    }
    if p.restart_main {
        prop_assert!(t.state.main == Run::Up, "(c) restart of a main not up");
        prop_assert!(p.ops.iter().any(|o| !is_logger(o.path())), "(c) {p:#?}");
    }
    if p.restart_log {
        prop_assert!(t.state.log == Run::Up, "(c) restart of a logger not up");
        prop_assert!(p.ops.iter().any(|o| is_logger(o.path())), "(c) {p:#?}");
    }
    if matches!(
        p.action,
        Action::Excluded
            | Action::Nothing
            | Action::Conflict
            | Action::KeepModified
            | Action::Remove
    ) {
        prop_assert!(p.ops.is_empty(), "no ops for {:?}: {p:#?}", p.action);
    }

    let empty = Tree::new();
    let b = base.unwrap_or(&empty);
    // (a) every live entry the admin changed is left as it is
    if let (Some(live), Some(after)) = (live, after.as_ref()) {
        for path in union(&[Some(live), Some(b)]) {
            if live.get(path) != b.get(path) {
                prop_assert_eq!(
                    after.get(path),
                    live.get(path),
                    "(a) admin change of {} lost\nafter: {:#?}\nplan: {:#?}",
                    path,
                    after,
                    p
                );
            }
        }
    }
    // (a) every stock change is applied or reported as a conflict
    if let (Some(stock), Some(after)) = (stock, after.as_ref())
        && matches!(
            p.action,
            Action::Update | Action::Create | Action::Nothing | Action::Conflict
        )
    {
        let l = live.unwrap_or(&empty);
        for path in union(&[Some(stock), Some(b)]) {
            let s = stock.get(path);
            if s == b.get(path) || s == after.get(path) || conflicted(path) {
                continue;
            }
            // a directory stock dropped stays for the admin's files inside it
            let prefix = format!("{path}/");
            let holds_admin = s.is_none()
                && matches!(after.get(path), Some(Entry::Dir { .. }))
                && after
                    .keys()
                    .any(|k| k.starts_with(&prefix) && l.get(k) != b.get(k));
            prop_assert!(
                holds_admin,
                "(a) stock change of {} neither applied nor reported\nafter: {:#?}\nplan: {:#?}",
                path,
                after,
                p
            );
        }
    }

    // (e) an unmodified live tree ends equal to stock
    if p.action == Action::Update && live == base && p.conflicts.is_empty() {
        prop_assert_eq!(after.as_ref(), stock, "(e) {:#?}", p);
    }

    // (b) planning again from the result changes nothing
    if matches!(
        p.action,
        Action::Create
            | Action::Update
            | Action::Remove
            | Action::KeepModified
            | Action::Nothing
            | Action::Conflict
    ) {
        let again = plan_foo(
            stock,
            p.new_base.as_ref(),
            after.as_ref(),
            t.state,
            t.policy,
        );
        prop_assert!(
            again.ops.is_empty() && matches!(again.action, Action::Nothing | Action::Conflict),
            "(b) not idempotent\nfirst: {:#?}\nafter: {:#?}\nagain: {:#?}",
            p,
            after,
            again
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn plan_properties(t in triple()) {
        check(&t)?;
    }
}

/// Cases the properties found, kept as plain regressions.
#[test]
fn found_cases() {
    let all = entries();
    let (file_a, file_b, dir, link) = (&all[0], &all[2], &all[4], &all[6]);
    let tree = |v: &[(&str, &Entry)]| -> Tree {
        v.iter()
            .map(|(k, e)| (k.to_string(), (*e).clone()))
            .collect()
    };
    let cases = [
        // the admin replaced env/ by a symlink; stock adds env/B: never write through it
        (
            tree(&[
                ("run", file_a),
                ("env", dir),
                ("env/A", file_a),
                ("env/B", file_a),
            ]),
            tree(&[("run", file_a), ("env", dir), ("env/A", file_a)]),
            tree(&[("run", file_a), ("env", link)]),
        ),
        // stock turns env/ into a file; the admin added env/B inside it
        (
            tree(&[("run", file_a), ("env", file_b)]),
            tree(&[("run", file_a), ("env", dir), ("env/A", file_a)]),
            tree(&[
                ("run", file_a),
                ("env", dir),
                ("env/A", file_a),
                ("env/B", file_a),
            ]),
        ),
        // the admin deleted env/; stock adds env/B
        (
            tree(&[("run", file_a), ("env", dir), ("env/B", file_a)]),
            tree(&[("run", file_a), ("env", dir)]),
            tree(&[("run", file_a)]),
        ),
    ];
    for (stock, base, live) in cases {
        let t = Triple {
            stock: Some(stock),
            base: Some(base),
            live: Some(live),
            state: State {
                main: Run::Up,
                log: Run::Up,
            },
            policy: PlanPolicy {
                restart_on_change: true,
                enable_new: false,
                excluded: false,
            },
        };
        if let Err(e) = check(&t) {
            panic!("{e}");
        }
    }
}
