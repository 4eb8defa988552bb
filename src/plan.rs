//! The pure three-way planner: from (stock, base, live, running state, policy) of one
//! service to a [`ServicePlan`]. No I/O happens here; table tests cover every case.
//!
//! Per path (invariant 4): live == stock → nothing; live == base → take stock;
//! stock == base → keep live; otherwise a conflict (live kept, stock reported).
//! Without a base (adoption) a live entry equal to stock records the base silently,
//! a missing one is added and a different one is a conflict, never an overwrite.
//! `log/…` is judged apart from the rest: only the part that changed restarts.

use crate::tree::{Entry, Tree, is_logger};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What the supervisor says about one part (service or its logger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Run {
    Up,
    Down,
    /// No supervisor runs it (not linked, or no scanner).
    Unsupervised,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub main: Run,
    pub log: Run,
}

impl State {
    pub const UNSUPERVISED: State = State {
        main: Run::Unsupervised,
        log: Run::Unsupervised,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanPolicy {
    pub restart_on_change: bool,
    pub enable_new: bool,
    pub excluded: bool,
}

pub struct Input<'a> {
    pub domain: &'a str,
    pub name: &'a str,
    pub stock: Option<&'a Tree>,
    pub base: Option<&'a Tree>,
    pub live: Option<&'a Tree>,
    pub state: State,
    pub policy: PlanPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Live already matches (possibly after recording a base): nothing to do.
    Nothing,
    /// New stock service: build it beside the live tree and rename it into place.
    Create,
    /// Change files of an existing live service in place.
    Update,
    /// Stock service gone and live unmodified: stop, unlink, delete.
    Remove,
    /// Stock service gone but the admin modified live: keep it, forget the base.
    KeepModified,
    /// Only conflicts: nothing to change, conflicts to report.
    Conflict,
    /// `restart = "manual"` and the service is up: left alone until restarted by hand.
    Deferred,
    /// Listed in the domain's `exclude`.
    Excluded,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Nothing => "nothing",
            Action::Create => "create",
            Action::Update => "update",
            Action::Remove => "remove",
            Action::KeepModified => "keep-modified",
            Action::Conflict => "conflict",
            Action::Deferred => "deferred",
            Action::Excluded => "excluded",
        }
    }
}

/// One change to a live service directory, in execution order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Make `path` be `entry` (write file, make or chmod directory, place symlink).
    Put { path: String, entry: Entry },
    /// Remove `path` (recursively when a directory).
    Delete { path: String },
}

impl Op {
    pub fn path(&self) -> &str {
        match self {
            Op::Put { path, .. } | Op::Delete { path } => path,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub path: String,
    pub stock: Option<Entry>,
    pub base: Option<Entry>,
    pub live: Option<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePlan {
    pub domain: String,
    pub name: String,
    pub action: Action,
    pub ops: Vec<Op>,
    pub conflicts: Vec<Conflict>,
    /// Base to record once applied; `None` forgets the service.
    pub new_base: Option<Tree>,
    pub restart_main: bool,
    pub restart_log: bool,
    /// Link a created service into the scan directory.
    pub link: bool,
    pub state: State,
    /// Paths where the admin's live version was kept over an unchanged stock.
    pub kept: Vec<String>,
    /// For `KeepModified` and `Deferred`: why.
    pub note: Option<String>,
}

impl ServicePlan {
    fn new(input: &Input, action: Action) -> ServicePlan {
        ServicePlan {
            domain: input.domain.to_string(),
            name: input.name.to_string(),
            action,
            ops: Vec::new(),
            conflicts: Vec::new(),
            new_base: input.base.cloned(),
            restart_main: false,
            restart_log: false,
            link: false,
            state: input.state,
            kept: Vec::new(),
            note: None,
        }
    }

    /// Paths the plan changes, directories left out when files name the change.
    pub fn changed_paths(&self) -> Vec<&str> {
        let mut files: Vec<&str> = self
            .ops
            .iter()
            .filter(|op| {
                !matches!(
                    op,
                    Op::Put {
                        entry: Entry::Dir { .. },
                        ..
                    }
                )
            })
            .map(Op::path)
            .collect();
        if files.is_empty() {
            files = self.ops.iter().map(Op::path).collect();
        }
        // a type change is a delete and a put of the same path: name it once
        files.sort_unstable();
        files.dedup();
        files
    }

    /// Whether applying this plan touches the live tree or the supervisor.
    pub fn acts(&self) -> bool {
        matches!(
            self.action,
            Action::Create | Action::Update | Action::Remove
        )
    }

    /// "run changed", "run, finish and log/run changed", "3 files changed".
    pub fn change_words(&self) -> String {
        let paths = self.changed_paths();
        let list = match paths.len() {
            0 => "nothing".to_string(),
            1 => paths[0].to_string(),
            2..=4 => format!(
                "{} and {}",
                paths[..paths.len() - 1].join(", "),
                paths[paths.len() - 1]
            ),
            n => format!("{}, {} and {} more", paths[0], paths[1], n - 2),
        };
        format!("{list} changed")
    }
}

/// Plans one service.
pub fn plan(input: &Input) -> ServicePlan {
    if input.policy.excluded {
        return ServicePlan::new(input, Action::Excluded);
    }
    match (input.stock, input.base, input.live) {
        (None, None, _) => {
            let mut p = ServicePlan::new(input, Action::Nothing);
            p.new_base = None;
            p
        }
        (Some(stock), base, None) => {
            if base.is_some() {
                let mut p = ServicePlan::new(input, Action::Conflict);
                p.note = Some(
                    "the live directory was removed by the admin; stock not copied back".into(),
                );
                p.conflicts.push(Conflict {
                    path: ".".into(),
                    stock: None,
                    base: None,
                    live: None,
                });
                return p;
            }
            let mut p = ServicePlan::new(input, Action::Create);
            p.ops = stock
                .iter()
                .map(|(k, v)| Op::Put {
                    path: k.clone(),
                    entry: v.clone(),
                })
                .collect();
            p.new_base = Some(stock.clone());
            p.link = input.policy.enable_new;
            p
        }
        (None, Some(base), live) => {
            let modified: Vec<String> = match live {
                None => Vec::new(),
                Some(live) => union(base, live, live)
                    .into_iter()
                    .filter(|k| base.get(k) != live.get(k))
                    .collect(),
            };
            let mut p = ServicePlan::new(
                input,
                if modified.is_empty() {
                    Action::Remove
                } else {
                    Action::KeepModified
                },
            );
            p.new_base = None;
            if !modified.is_empty() {
                p.note = Some(format!("modified by the admin: {}", modified.join(", ")));
                p.kept = modified;
            }
            p
        }
        (Some(stock), base, Some(live)) => merge(input, stock, base, live),
    }
}

fn union(a: &Tree, b: &Tree, c: &Tree) -> BTreeSet<String> {
    a.keys().chain(b.keys()).chain(c.keys()).cloned().collect()
}

fn merge(input: &Input, stock: &Tree, base: Option<&Tree>, live: &Tree) -> ServicePlan {
    let empty = Tree::new();
    let adopting = base.is_none();
    let b_tree = base.unwrap_or(&empty);
    let mut new_base = Tree::new();
    let mut puts = Vec::new();
    let mut deletes = Vec::new();
    let mut conflicts = Vec::new();
    let mut kept = Vec::new();
    for path in union(stock, b_tree, live) {
        let (s, b, l) = (stock.get(&path), b_tree.get(&path), live.get(&path));
        let take = |puts: &mut Vec<Op>, deletes: &mut Vec<Op>| {
            if let Some(l) = l {
                // a change to or from a directory needs the old entry gone first;
                // files and symlinks are replaced by rename
                let is_dir = |e: &Entry| matches!(e, Entry::Dir { .. });
                if s.is_none_or(|s| is_dir(s) != is_dir(l)) {
                    deletes.push(Op::Delete { path: path.clone() });
                }
            }
            if let Some(s) = s {
                puts.push(Op::Put {
                    path: path.clone(),
                    entry: s.clone(),
                });
            }
        };
        if l == s {
            // nothing to do
        } else if !adopting && l == b {
            take(&mut puts, &mut deletes);
        } else if !adopting && s == b {
            kept.push(path.clone());
        } else if adopting && l.is_none() {
            take(&mut puts, &mut deletes);
        } else if adopting && s.is_none() {
            // the admin's own file; not part of any base
            continue;
        } else {
            conflicts.push(Conflict {
                path: path.clone(),
                stock: s.cloned(),
                base: b.cloned(),
                live: l.cloned(),
            });
            if let Some(b) = b {
                new_base.insert(path, b.clone());
            }
            continue;
        }
        if let Some(s) = s {
            new_base.insert(path, s.clone());
        }
    }
    // Never delete a directory that still holds something we keep.
    let keeps: Vec<String> = live
        .keys()
        .filter(|k| !deletes.iter().any(|d: &Op| d.path() == k.as_str()))
        .cloned()
        .collect();
    deletes.retain(|d| {
        let prefix = format!("{}/", d.path());
        !keeps.iter().any(|k| k.starts_with(&prefix))
    });
    // A put goes through only if every ancestor is a real directory once the plan is
    // carried out and no directory that stays is where a file goes: otherwise it would
    // write through the admin's symlink (outside the tree) or fail half-way. Such a
    // path is a conflict instead (puts are in path order: parents come first).
    let mut after = live.clone();
    for d in &deletes {
        let prefix = format!("{}/", d.path());
        after.retain(|k, _| k != d.path() && !k.starts_with(&prefix));
    }
    let mut feasible = Vec::new();
    for op in puts {
        let Op::Put { path, entry } = &op else {
            continue;
        };
        let parents_ok = path
            .match_indices('/')
            .all(|(i, _)| matches!(after.get(&path[..i]), Some(Entry::Dir { .. })));
        let dir_in_way = !matches!(entry, Entry::Dir { .. })
            && matches!(after.get(path), Some(Entry::Dir { .. }));
        let other_in_way = matches!(entry, Entry::Dir { .. })
            && after
                .get(path)
                .is_some_and(|e| !matches!(e, Entry::Dir { .. }));
        if parents_ok && !dir_in_way && !other_in_way {
            after.insert(path.clone(), entry.clone());
            feasible.push(op);
            continue;
        }
        let (s, b, l) = (stock.get(path), b_tree.get(path), live.get(path));
        conflicts.push(Conflict {
            path: path.clone(),
            stock: s.cloned(),
            base: b.cloned(),
            live: l.cloned(),
        });
        match b {
            Some(b) => new_base.insert(path.clone(), b.clone()),
            None => new_base.remove(path),
        };
    }
    let puts = feasible;
    conflicts.sort_by(|a, b| a.path.cmp(&b.path));
    // deepest first for deletes; parents before children for puts
    deletes.sort_by(|a, b| b.path().cmp(a.path()));
    let mut ops = deletes;
    ops.extend(puts);

    let action = match (ops.is_empty(), conflicts.is_empty()) {
        (true, true) => Action::Nothing,
        (true, false) => Action::Conflict,
        (false, _) => Action::Update,
    };
    let mut p = ServicePlan::new(input, action);
    p.conflicts = conflicts;
    p.kept = kept;
    if action != Action::Update {
        p.new_base = Some(new_base);
        return p;
    }
    let main_changed = ops.iter().any(|o| !is_logger(o.path()));
    let log_changed = ops.iter().any(|o| is_logger(o.path()));
    let main_up = input.state.main == Run::Up;
    let log_up = input.state.log == Run::Up;
    if !input.policy.restart_on_change && ((main_changed && main_up) || (log_changed && log_up)) {
        p.action = Action::Deferred;
        p.ops = ops;
        p.note = Some(
            "restart = \"manual\" and the service is up: stop it, reconcile, then start it".into(),
        );
        return p;
    }
    p.ops = ops;
    p.new_base = Some(new_base);
    p.restart_main = main_changed && main_up;
    p.restart_log = log_changed && log_up;
    p
}

/// Plans service `s6/foo` (for the table and property tests).
#[cfg(test)]
pub fn plan_foo(
    stock: Option<&Tree>,
    base: Option<&Tree>,
    live: Option<&Tree>,
    state: State,
    policy: PlanPolicy,
) -> ServicePlan {
    plan(&Input {
        domain: "s6",
        name: "foo",
        stock,
        base,
        live,
        state,
        policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(content: &str) -> Entry {
        Entry::File {
            mode: 0o755,
            hash: crate::tree::hash_bytes(content.as_bytes()),
            size: content.len() as u64,
        }
    }
    fn d() -> Entry {
        Entry::Dir { mode: 0o755 }
    }
    fn tree(entries: &[(&str, Entry)]) -> Tree {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
    const UP: State = State {
        main: Run::Up,
        log: Run::Up,
    };
    const DOWN: State = State {
        main: Run::Down,
        log: Run::Down,
    };
    const ON_CHANGE: PlanPolicy = PlanPolicy {
        restart_on_change: true,
        enable_new: false,
        excluded: false,
    };

    use super::plan_foo as run;

    struct Case {
        name: &'static str,
        stock: Option<Tree>,
        base: Option<Tree>,
        live: Option<Tree>,
        state: State,
        policy: PlanPolicy,
        action: Action,
        ops: &'static [&'static str],
        conflicts: &'static [&'static str],
        restart: (bool, bool),
    }

    #[test]
    fn table() {
        let v1 = tree(&[("run", f("1")), ("finish", f("f"))]);
        let v2 = tree(&[("run", f("2")), ("finish", f("f"))]);
        let with_log =
            |run: &str, log: &str| tree(&[("run", f(run)), ("log", d()), ("log/run", f(log))]);
        let admin = tree(&[("run", f("admin")), ("finish", f("f"))]);
        let admin_finish_new = tree(&[("run", f("1")), ("finish", f("f2"))]);
        let admin_plus = tree(&[("run", f("1")), ("finish", f("f")), ("down", f(""))]);
        let cases = vec![
            Case {
                name: "identical",
                stock: Some(v1.clone()),
                base: Some(v1.clone()),
                live: Some(v1.clone()),
                state: UP,
                policy: ON_CHANGE,
                action: Action::Nothing,
                ops: &[],
                conflicts: &[],
                restart: (false, false),
            },
            Case {
                name: "stock changed, up",
                stock: Some(v2.clone()),
                base: Some(v1.clone()),
                live: Some(v1.clone()),
                state: UP,
                policy: ON_CHANGE,
                action: Action::Update,
                ops: &["run"],
                conflicts: &[],
                restart: (true, false),
            },
            Case {
                name: "stock changed, down",
                stock: Some(v2.clone()),
                base: Some(v1.clone()),
                live: Some(v1.clone()),
                state: DOWN,
                policy: ON_CHANGE,
                action: Action::Update,
                ops: &["run"],
                conflicts: &[],
                restart: (false, false),
            },
            Case {
                name: "stock changed, unsupervised",
                stock: Some(v2.clone()),
                base: Some(v1.clone()),
                live: Some(v1.clone()),
                state: State::UNSUPERVISED,
                policy: ON_CHANGE,
                action: Action::Update,
                ops: &["run"],
                conflicts: &[],
                restart: (false, false),
            },
            Case {
                name: "admin edit only",
                stock: Some(v1.clone()),
                base: Some(v1.clone()),
                live: Some(admin.clone()),
                state: UP,
                policy: ON_CHANGE,
                action: Action::Nothing,
                ops: &[],
                conflicts: &[],
                restart: (false, false),
            },
            Case {
                name: "admin run + stock finish",
                stock: Some(admin_finish_new.clone()),
                base: Some(v1.clone()),
                live: Some(admin.clone()),
                state: UP,
                policy: ON_CHANGE,
                action: Action::Update,
                ops: &["finish"],
                conflicts: &[],
                restart: (true, false),
            },
            Case {
                name: "both changed run",
                stock: Some(v2.clone()),
                base: Some(v1.clone()),
                live: Some(admin.clone()),
                state: UP,
                policy: ON_CHANGE,
                action: Action::Conflict,
                ops: &[],
                conflicts: &["run"],
                restart: (false, false),
            },
            Case {
                name: "both changed run the same way",
                stock: Some(v2.clone()),
                base: Some(v1.clone()),
                live: Some(v2.clone()),
                state: UP,
                policy: ON_CHANGE,
                action: Action::Nothing,
                ops: &[],
                conflicts: &[],
                restart: (false, false),
            },
            Case {
                name: "admin added down file",
                stock: Some(v2.clone()),
                base: Some(v1.clone()),
                live: Some(admin_plus.clone()),
                state: UP,
                policy: ON_CHANGE,
                action: Action::Update,
                ops: &["run"],
                conflicts: &[],
                restart: (true, false),
            },
            Case {
                name: "logger only",
                stock: Some(with_log("1", "2")),
                base: Some(with_log("1", "1")),
                live: Some(with_log("1", "1")),
                state: UP,
                policy: ON_CHANGE,
                action: Action::Update,
                ops: &["log/run"],
                conflicts: &[],
                restart: (false, true),
            },
            Case {
                name: "main only with logger",
                stock: Some(with_log("2", "1")),
                base: Some(with_log("1", "1")),
                live: Some(with_log("1", "1")),
                state: UP,
                policy: ON_CHANGE,
                action: Action::Update,
                ops: &["run"],
                conflicts: &[],
                restart: (true, false),
            },
            Case {
                name: "new service",
                stock: Some(v1.clone()),
                base: None,
                live: None,
                state: State::UNSUPERVISED,
                policy: ON_CHANGE,
                action: Action::Create,
                ops: &["finish", "run"],
                conflicts: &[],
                restart: (false, false),
            },
            Case {
                name: "adopt equal",
                stock: Some(v1.clone()),
                base: None,
                live: Some(v1.clone()),
                state: UP,
                policy: ON_CHANGE,
                action: Action::Nothing,
                ops: &[],
                conflicts: &[],
                restart: (false, false),
            },
            Case {
                name: "adopt different",
                stock: Some(v2.clone()),
                base: None,
                live: Some(v1.clone()),
                state: UP,
                policy: ON_CHANGE,
                action: Action::Conflict,
                ops: &[],
                conflicts: &["run"],
                restart: (false, false),
            },
            Case {
                name: "adopt missing file",
                stock: Some(admin_plus.clone()),
                base: None,
                live: Some(v1.clone()),
                state: UP,
                policy: ON_CHANGE,
                action: Action::Update,
                ops: &["down"],
                conflicts: &[],
                restart: (true, false),
            },
            Case {
                name: "adopt admin-only file",
                stock: Some(v1.clone()),
                base: None,
                live: Some(admin_plus.clone()),
                state: UP,
                policy: ON_CHANGE,
                action: Action::Nothing,
                ops: &[],
                conflicts: &[],
                restart: (false, false),
            },
            Case {
                name: "removed, unmodified",
                stock: None,
                base: Some(v1.clone()),
                live: Some(v1.clone()),
                state: UP,
                policy: ON_CHANGE,
                action: Action::Remove,
                ops: &[],
                conflicts: &[],
                restart: (false, false),
            },
            Case {
                name: "removed, modified",
                stock: None,
                base: Some(v1.clone()),
                live: Some(admin.clone()),
                state: UP,
                policy: ON_CHANGE,
                action: Action::KeepModified,
                ops: &[],
                conflicts: &[],
                restart: (false, false),
            },
            Case {
                name: "removed, live gone",
                stock: None,
                base: Some(v1.clone()),
                live: None,
                state: State::UNSUPERVISED,
                policy: ON_CHANGE,
                action: Action::Remove,
                ops: &[],
                conflicts: &[],
                restart: (false, false),
            },
            Case {
                name: "not managed",
                stock: None,
                base: None,
                live: Some(v1.clone()),
                state: UP,
                policy: ON_CHANGE,
                action: Action::Nothing,
                ops: &[],
                conflicts: &[],
                restart: (false, false),
            },
            Case {
                name: "live removed by admin",
                stock: Some(v2.clone()),
                base: Some(v1.clone()),
                live: None,
                state: State::UNSUPERVISED,
                policy: ON_CHANGE,
                action: Action::Conflict,
                ops: &[],
                conflicts: &["."],
                restart: (false, false),
            },
            Case {
                name: "manual, up",
                stock: Some(v2.clone()),
                base: Some(v1.clone()),
                live: Some(v1.clone()),
                state: UP,
                policy: PlanPolicy {
                    restart_on_change: false,
                    ..ON_CHANGE
                },
                action: Action::Deferred,
                ops: &["run"],
                conflicts: &[],
                restart: (false, false),
            },
            Case {
                name: "manual, down",
                stock: Some(v2.clone()),
                base: Some(v1.clone()),
                live: Some(v1.clone()),
                state: DOWN,
                policy: PlanPolicy {
                    restart_on_change: false,
                    ..ON_CHANGE
                },
                action: Action::Update,
                ops: &["run"],
                conflicts: &[],
                restart: (false, false),
            },
            Case {
                name: "excluded",
                stock: Some(v2.clone()),
                base: Some(v1.clone()),
                live: Some(v1.clone()),
                state: UP,
                policy: PlanPolicy {
                    excluded: true,
                    ..ON_CHANGE
                },
                action: Action::Excluded,
                ops: &[],
                conflicts: &[],
                restart: (false, false),
            },
            Case {
                name: "stock dropped a file",
                stock: Some(tree(&[("run", f("1"))])),
                base: Some(v1.clone()),
                live: Some(v1.clone()),
                state: UP,
                policy: ON_CHANGE,
                action: Action::Update,
                ops: &["finish"],
                conflicts: &[],
                restart: (true, false),
            },
            Case {
                name: "file becomes directory",
                stock: Some(tree(&[("run", f("1")), ("env", d()), ("env/A", f("a"))])),
                base: Some(tree(&[("run", f("1")), ("env", f("x"))])),
                live: Some(tree(&[("run", f("1")), ("env", f("x"))])),
                state: DOWN,
                policy: ON_CHANGE,
                action: Action::Update,
                ops: &["env", "env", "env/A"],
                conflicts: &[],
                restart: (false, false),
            },
            Case {
                name: "dir dropped, admin file inside kept",
                stock: Some(tree(&[("run", f("1"))])),
                base: Some(tree(&[("run", f("1")), ("env", d()), ("env/A", f("a"))])),
                live: Some(tree(&[
                    ("run", f("1")),
                    ("env", d()),
                    ("env/A", f("a")),
                    ("env/B", f("b")),
                ])),
                state: DOWN,
                policy: ON_CHANGE,
                action: Action::Update,
                ops: &["env/A"],
                conflicts: &[],
                restart: (false, false),
            },
        ];
        for c in cases {
            let p = run(
                c.stock.as_ref(),
                c.base.as_ref(),
                c.live.as_ref(),
                c.state,
                c.policy,
            );
            assert_eq!(p.action, c.action, "{}: action", c.name);
            let ops: Vec<&str> = p.ops.iter().map(Op::path).collect();
            assert_eq!(ops, c.ops, "{}: ops", c.name);
            let conflicts: Vec<&str> = p.conflicts.iter().map(|c| c.path.as_str()).collect();
            assert_eq!(conflicts, c.conflicts, "{}: conflicts", c.name);
            assert_eq!(
                (p.restart_main, p.restart_log),
                c.restart,
                "{}: restart",
                c.name
            );
        }
    }

    #[test]
    fn bases_recorded() {
        let v1 = tree(&[("run", f("1"))]);
        let v2 = tree(&[("run", f("2"))]);
        let admin = tree(&[("run", f("a"))]);
        // adoption of an equal tree records the base
        assert_eq!(
            run(Some(&v1), None, Some(&v1), UP, ON_CHANGE).new_base,
            Some(v1.clone())
        );
        // a conflict keeps the old base for that path, so it stays a conflict
        assert_eq!(
            run(Some(&v2), Some(&v1), Some(&admin), UP, ON_CHANGE).new_base,
            Some(v1.clone())
        );
        // an adoption conflict records no base for that path
        assert_eq!(
            run(Some(&v2), None, Some(&admin), UP, ON_CHANGE).new_base,
            Some(Tree::new())
        );
        // keep-live moves the base along with stock
        assert_eq!(
            run(Some(&v1), Some(&v1), Some(&admin), UP, ON_CHANGE).new_base,
            Some(v1.clone())
        );
        // removal forgets
        assert_eq!(
            run(None, Some(&v1), Some(&v1), UP, ON_CHANGE).new_base,
            None
        );
        // deferred keeps the old base so the change is seen again
        let manual = PlanPolicy {
            restart_on_change: false,
            ..ON_CHANGE
        };
        assert_eq!(
            run(Some(&v2), Some(&v1), Some(&v1), UP, manual).new_base,
            Some(v1.clone())
        );
        // create links only when enable-new says so
        assert!(!run(Some(&v1), None, None, State::UNSUPERVISED, ON_CHANGE).link);
        assert!(
            run(
                Some(&v1),
                None,
                None,
                State::UNSUPERVISED,
                PlanPolicy {
                    enable_new: true,
                    ..ON_CHANGE
                }
            )
            .link
        );
    }

    #[test]
    fn words() {
        let v1 = tree(&[("run", f("1")), ("finish", f("f"))]);
        let v2 = tree(&[("run", f("2")), ("finish", f("g"))]);
        let p = run(Some(&v2), Some(&v1), Some(&v1), UP, ON_CHANGE);
        assert_eq!(p.change_words(), "finish and run changed");
    }
}
