//! One reconcile run: lock, settle gate, finish what a crash left in the journal,
//! choose the services (pending hints, all, or named), plan each from disk (stock,
//! base, live, supervisor state), journal the plans, apply them through the domain's
//! backend and record each outcome. Reconciliation is level-based: hints only say
//! where to look; `--all` re-derives everything from disk.

use crate::apply::{self, Contents, Exec};
use crate::backends::{self, Backend};
use crate::config::{Config, Domain};
use crate::crash_point;
use crate::lock::Lock;
use crate::plan::{self, Action, Input, PlanPolicy, ServicePlan, State};
use crate::queue::{Db, Outcome, StatCache, Step};
use crate::tree::{self, Stock};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
pub enum Selection {
    Pending,
    All,
    Services(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub selection: Selection,
    pub dry_run: bool,
    pub wait: bool,
    /// Check for a running package transaction first (manual runs; hooks skip it).
    pub settle_gate: bool,
    /// What started the run, for history (`manual`, `hook pacman`).
    pub trigger: String,
}

/// One line of the report: what happened to one service, in a sysadmin's words.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub domain: String,
    pub service: String,
    /// restarted | updated | created | removed | kept | conflict | pending | excluded | failed
    pub kind: &'static str,
    pub text: String,
    pub package: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub lines: Vec<Line>,
    pub unchanged: usize,
    pub notes: Vec<String>,
    /// Shown even without `-v`: something was wrong and was repaired (corrupt database).
    pub warnings: Vec<String>,
    /// Set when the run did nothing because a transaction or another reconciler runs.
    pub deferred: Option<String>,
    pub dry_run: bool,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.lines.iter().filter(|l| l.kind == "failed").count()
    }
    fn line(
        &mut self,
        plan_domain: &str,
        service: &str,
        kind: &'static str,
        text: String,
        package: Option<String>,
    ) {
        self.lines.push(Line {
            domain: plan_domain.to_string(),
            service: service.to_string(),
            kind,
            text,
            package,
        });
    }
    fn fail(&mut self, domain: &str, service: &str, err: &anyhow::Error) {
        self.line(
            domain,
            service,
            "failed",
            format!("failed {service}: {err:#}"),
            None,
        );
    }
}

/// A service chosen for this run and the newest hint that named it.
struct Target {
    name: String,
    max_hint: i64,
}

pub fn reconcile(cfg: &Config, opts: &Options) -> Result<Report> {
    let mut report = Report {
        dry_run: opts.dry_run,
        ..Report::default()
    };
    for d in &cfg.domains {
        if let Some(why) = &d.skipped {
            report
                .notes
                .push(format!("domain {} skipped: {why}", d.name));
        }
    }
    let state = &cfg.state_dir.host;
    let _lock = if opts.dry_run {
        None
    } else {
        match Lock::acquire(state, opts.wait)? {
            Some(l) => Some(l),
            None => {
                let who = Lock::holder(state)
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default();
                report.deferred = Some(format!(
                    "another svsettle reconcile is running{who}; its run will see these hints"
                ));
                return Ok(report);
            }
        }
    };
    if opts.settle_gate
        && let Some(pm) = crate::settle::transaction_in_progress(&cfg.root)
    {
        if !opts.wait {
            report.deferred = Some(format!(
                "a package transaction is in progress: {pm}; reconcile after it (or use --wait)"
            ));
            return Ok(report);
        }
        while crate::settle::transaction_in_progress(&cfg.root).is_some() {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    if opts.dry_run {
        let db = Db::open_read_only(state)?;
        return run_plans(cfg, opts, db, report);
    }
    let mut db = Db::open(state)?;
    if let Some(aside) = &db.moved_aside {
        report.warnings.push(format!(
            "the database was corrupt and was moved aside to {}; bases are re-learned from disk (reconcile --all)",
            aside.display()
        ));
    }
    recover(cfg, &mut db, &mut report)?;
    run_plans(cfg, opts, Some(db), report)
}

/// Finishes every journaled service (roll forward from the journaled step), then
/// removes leftovers nobody owns.
fn recover(cfg: &Config, db: &mut Db, report: &mut Report) -> Result<()> {
    // Backends that switch a whole batch (s6-rc) first repair an interrupted switch
    // and say which run's batch is current.
    let mut batch_runs: BTreeMap<String, Option<i64>> = BTreeMap::new();
    for d in cfg.active_domains() {
        let backend = backends::for_domain(d);
        if backend.restarts_in_place() {
            continue;
        }
        match backend.recover_batch() {
            Ok(r) => {
                report.notes.extend(r.notes);
                batch_runs.insert(d.name.clone(), r.current_run);
            }
            Err(e) => report.notes.push(format!(
                "domain {}: cannot check for an interrupted switch: {e:#}",
                d.name
            )),
        }
    }
    let entries = db.journal()?;
    for entry in entries {
        let p = &entry.plan;
        let Some(domain) = cfg.domain(&p.domain) else {
            report.notes.push(format!(
                "journal entry for {}/{} names a domain no longer configured; dropped",
                p.domain, p.name
            ));
            db.journal_drop(&p.domain, &p.name)?;
            continue;
        };
        if domain.skipped.is_some() {
            continue;
        }
        let backend = backends::for_domain(domain);
        if !backend.restarts_in_place() {
            match batch_runs.get(&p.domain) {
                // could not check: left journaled
                None => continue,
                Some(current) if entry.step == Step::Planned && *current != Some(entry.run) => {
                    db.journal_drop(&p.domain, &p.name)?;
                    report.notes.push(format!(
                        "interrupted {} of {} was never switched to; planned again",
                        p.action.as_str(),
                        p.name
                    ));
                    continue;
                }
                Some(_) => {}
            }
        }
        if backend.restarts_in_place() && p.action == Action::Update && entry.step < Step::Staged {
            let changed = live_changed_since_planned(db, domain, p);
            if !changed.is_empty() {
                // Nothing was written yet and the admin changed live since the plan was
                // made: rolling forward would overwrite that silently (invariant 4).
                report.notes.push(format!(
                    "interrupted update of {} given up: live {} changed since it was planned; planned again",
                    p.name,
                    changed.join(", ")
                ));
                let res = Exec {
                    db,
                    domain,
                    backend: backend.as_ref(),
                }
                .abandon_update(p);
                if let Err(e) = res {
                    report.fail(&p.domain, &p.name, &e);
                }
                continue;
            }
        }
        let mut contents = Contents::new();
        let mut missing = None;
        for hash in apply::needed_hashes(p) {
            match db.blob(hash)? {
                Some(data) => {
                    contents.insert(hash.to_string(), data);
                }
                None => missing = Some(hash.to_string()),
            }
        }
        if let Some(hash) = missing {
            let err = anyhow::anyhow!(
                "cannot finish the interrupted {}: content {hash} missing from the database",
                p.action.as_str()
            );
            report.fail(&p.domain, &p.name, &err);
            continue;
        }
        report.notes.push(format!(
            "finishing interrupted {} of {} (journaled step: {})",
            p.action.as_str(),
            p.name,
            entry.step.as_str()
        ));
        let res = Exec {
            db,
            domain,
            backend: backend.as_ref(),
        }
        .execute(p, &contents, entry.step);
        finish(db, report, entry.run, p, entry.max_hint, res, &[])?;
    }
    for d in cfg.active_domains() {
        for leftover in apply::sweep(&d.live.host)?
            .into_iter()
            .chain(apply::sweep(&d.scan.host)?)
        {
            report
                .notes
                .push(format!("removed leftover {}", leftover.display()));
        }
    }
    Ok(())
}

/// Paths an interrupted update would write whose live entry is no longer the one the
/// plan took it for: a plan only writes where live equals the base (nothing, when
/// adopting), except on recorded conflicts, which `resolve --take-stock` overwrites on
/// purpose. Empty when live cannot be read (the update then rolls forward as journaled).
fn live_changed_since_planned(db: &Db, domain: &Domain, p: &ServicePlan) -> Vec<String> {
    let Ok(base) = db.base(&p.domain, &p.name) else {
        return Vec::new();
    };
    let Ok(Some(live)) = tree::read_live(&domain.live.host, &p.name) else {
        return Vec::new();
    };
    let conflicts: BTreeSet<String> = db
        .conflicts()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.domain == p.domain && c.service == p.name)
        .map(|c| c.conflict.path)
        .collect();
    let base = base.unwrap_or_default();
    let mut changed: Vec<String> = p
        .ops
        .iter()
        .map(|op| op.path())
        .filter(|path| !conflicts.contains(*path) && live.get(*path) != base.get(*path))
        .map(String::from)
        .collect();
    changed.dedup();
    changed
}

/// Records the outcome of an executed plan and reports it.
fn finish(
    db: &mut Db,
    report: &mut Report,
    run: i64,
    plan: &ServicePlan,
    max_hint: i64,
    res: Result<apply::Done>,
    blobs: &[(&str, &[u8])],
) -> Result<()> {
    let package = db
        .hint_packages(&plan.domain, &plan.name)?
        .into_iter()
        .next();
    match res {
        Ok(done) => {
            let (kind, text) = describe(plan, Some(done.verb), false);
            crash_point!("commit.before");
            db.commit_service(
                &Outcome {
                    run,
                    plan,
                    max_hint,
                    action: kind,
                    detail: &text,
                    ok: true,
                    package: package.as_deref(),
                    history: true,
                },
                blobs,
            )?;
            report.line(&plan.domain, &plan.name, kind, text, package);
            if !plan.conflicts.is_empty() {
                let (_, text) = describe_conflicts(plan);
                report.line(&plan.domain, &plan.name, "conflict", text, None);
            }
        }
        Err(e) => {
            let text = format!("failed {}: {e:#}", plan.name);
            let _ = db.record_problem(
                "reconcile",
                Some(&plan.domain),
                Some(&plan.name),
                &format!("{e:#}"),
            );
            db.commit_service(
                &Outcome {
                    run,
                    plan,
                    max_hint,
                    action: "failed",
                    detail: &text,
                    ok: false,
                    package: package.as_deref(),
                    history: true,
                },
                &[],
            )
            .or_else(|_| {
                db.record_problem(
                    "reconcile",
                    Some(&plan.domain),
                    Some(&plan.name),
                    "cannot record history",
                )
            })?;
            report.lines.push(Line {
                domain: plan.domain.clone(),
                service: plan.name.clone(),
                kind: "failed",
                text,
                package,
            });
        }
    }
    Ok(())
}

fn describe_conflicts(plan: &ServicePlan) -> (&'static str, String) {
    let paths: Vec<&str> = plan.conflicts.iter().map(|c| c.path.as_str()).collect();
    if paths == ["."] {
        return (
            "conflict",
            format!(
                "conflict {}: {}; see svsettle resolve {}",
                plan.name,
                plan.note.as_deref().unwrap_or(""),
                plan.name
            ),
        );
    }
    (
        "conflict",
        format!(
            "conflict {}: {} changed in stock and in live; live kept (svsettle diff {}; svsettle resolve {} --keep-live|--take-stock)",
            plan.name,
            paths.join(", "),
            plan.name,
            plan.name
        ),
    )
}

/// The report line for a plan: `done` is the verb of what was done, `None` in a dry run.
fn describe(plan: &ServicePlan, done: Option<&'static str>, dry: bool) -> (&'static str, String) {
    let n = &plan.name;
    let w = |now: &str, would: &str| {
        if dry {
            would.to_string()
        } else {
            now.to_string()
        }
    };
    match plan.action {
        Action::Update => {
            let verb = done.unwrap_or(if plan.restart_main {
                "restarted"
            } else if plan.restart_log {
                "restarted logger of"
            } else if plan.state.main == plan::Run::Down {
                "updated (down, left down)"
            } else {
                "updated"
            });
            let kind = if verb.starts_with("restarted") {
                "restarted"
            } else {
                "updated"
            };
            let text = match verb {
                "restarted" => format!(
                    "{} {n}: {}",
                    w("restarted", "would restart"),
                    plan.change_words()
                ),
                "restarted logger of" => format!(
                    "{} {n}/log: {}",
                    w("restarted", "would restart"),
                    plan.change_words()
                ),
                "updated (down, left down)" => format!(
                    "{} {n} (down, left down): {}",
                    w("updated", "would update"),
                    plan.change_words()
                ),
                _ if plan.state.main == plan::Run::Unsupervised => {
                    format!(
                        "{} {n} (not running): {}",
                        w("updated", "would update"),
                        plan.change_words()
                    )
                }
                _ => format!(
                    "{} {n}: {}",
                    w("updated", "would update"),
                    plan.change_words()
                ),
            };
            (kind, text)
        }
        Action::Create => {
            let how = if plan.link {
                "enabled"
            } else {
                "not enabled: enable-new = false"
            };
            (
                "created",
                format!("{} {n} ({how})", w("created", "would create")),
            )
        }
        Action::Remove => (
            "removed",
            format!(
                "{} {n}: stock service removed",
                w("removed", "would remove")
            ),
        ),
        Action::KeepModified => (
            "kept",
            format!(
                "kept {n}: stock service removed, but live was modified by the admin ({})",
                plan.kept.join(", ")
            ),
        ),
        Action::Conflict => describe_conflicts(plan),
        Action::Deferred => (
            "pending",
            format!(
                "pending {n}: {}; restart = \"manual\" and it is up: stop it, reconcile, then start it",
                plan.change_words()
            ),
        ),
        Action::Excluded => (
            "excluded",
            format!("excluded {n}: listed in exclude, not touched"),
        ),
        Action::Nothing => ("unchanged", format!("unchanged {n}")),
    }
}

fn targets(
    cfg: &Config,
    db: Option<&Db>,
    sel: &Selection,
    report: &mut Report,
) -> Result<BTreeMap<String, Vec<Target>>> {
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let domain_services = |d: &Domain, report: &mut Report| -> Result<Vec<String>> {
        let (mut names, bad) = tree::list_services(&d.stock.host)?;
        for (name, why) in bad {
            report.line(
                &d.name,
                &name,
                "failed",
                format!(
                    "failed {}: stock {}: {why}",
                    name.escape_debug(),
                    d.stock.inner.display()
                ),
                None,
            );
        }
        if let Some(db) = db {
            names.extend(db.base_services(&d.name)?);
        }
        names.sort();
        names.dedup();
        Ok(names)
    };
    match sel {
        Selection::Pending => {
            let Some(db) = db else {
                return Ok(BTreeMap::new());
            };
            for p in db.pending()? {
                let Some(d) = cfg.domain(&p.domain) else {
                    report.notes.push(format!(
                        "{} hint(s) for domain {} which is not configured; kept",
                        p.hints, p.domain
                    ));
                    continue;
                };
                if d.skipped.is_some() {
                    report.notes.push(format!(
                        "{} hint(s) for {}/{} kept: domain skipped",
                        p.hints, p.domain, p.service
                    ));
                    continue;
                }
                let entry = out.entry(p.domain.clone()).or_default();
                if p.service.is_empty() {
                    for name in domain_services(d, report)? {
                        entry.entry(name).or_insert(0);
                    }
                    entry.insert(String::new(), p.max_hint);
                } else {
                    let m = entry.entry(p.service.clone()).or_insert(0);
                    *m = (*m).max(p.max_hint);
                }
            }
        }
        Selection::All => {
            let max = db.map(|db| db.max_hint_id()).transpose()?.unwrap_or(0);
            for d in cfg.active_domains() {
                let entry = out.entry(d.name.clone()).or_default();
                for name in domain_services(d, report)? {
                    entry.insert(name, max);
                }
                entry.insert(String::new(), max);
            }
        }
        Selection::Services(names) => {
            let max = db.map(|db| db.max_hint_id()).transpose()?.unwrap_or(0);
            for spec in names {
                let (dom, name) = match spec.split_once('/') {
                    Some((d, n)) => (Some(d), n),
                    None => (None, spec.as_str()),
                };
                crate::names::check_service_name(name)?;
                let mut found = false;
                for d in cfg
                    .active_domains()
                    .filter(|d| dom.is_none_or(|x| x == d.name))
                {
                    let known = d.stock.host.join(name).symlink_metadata().is_ok()
                        || d.live.host.join(name).symlink_metadata().is_ok()
                        || db
                            .map(|db| db.base(&d.name, name))
                            .transpose()?
                            .flatten()
                            .is_some();
                    if known {
                        out.entry(d.name.clone())
                            .or_default()
                            .insert(name.to_string(), max);
                        found = true;
                    }
                }
                if !found {
                    bail!("unknown service {spec}: not in any configured stock or live tree");
                }
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|(d, m)| {
            (
                d,
                m.into_iter()
                    .map(|(name, max_hint)| Target { name, max_hint })
                    .collect(),
            )
        })
        .collect())
}

/// Stands in for the supervisor when only the conflicts of a plan are wanted.
struct NoSupervisor;

impl Backend for NoSupervisor {
    fn status(&self, _: &str) -> Result<State> {
        Ok(State::UNSUPERVISED)
    }
    fn stop(&self, _: &str, _: backends::Part) -> Result<()> {
        Ok(())
    }
    fn start(&self, _: &str, _: backends::Part) -> Result<()> {
        Ok(())
    }
    fn is_linked(&self, _: &str) -> bool {
        false
    }
    fn link(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn unlink(&self, _: &str) -> Result<()> {
        Ok(())
    }
}

/// How `resolve` settles the conflicts of a service before planning it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Plan from what is on disk.
    AsIs,
    /// Pretend live still has the base version of each conflicting path.
    TakeStock,
    /// Pretend the base already has the stock version of each conflicting path.
    KeepLive,
}

/// Plans one service from disk. Supervisor state is asked only when the plan acts.
fn plan_service(
    domain: &Domain,
    backend: &dyn Backend,
    db: Option<&Db>,
    name: &str,
    max_size: u64,
    settle: Settle,
) -> Result<(ServicePlan, Option<Stock>)> {
    plan_service_cached(domain, backend, db, name, max_size, settle, None)
}

/// What the planning of one domain's targets shares: the stat cache and the new
/// snapshots to store in it, and the recorded bases read ahead in one query.
struct DomainCache<'a> {
    cache: Option<&'a StatCache>,
    /// Snapshots of the targets (encoded), read ahead in one query.
    snapshots: std::collections::HashMap<String, Vec<u8>>,
    updates: Vec<(String, Option<tree::Snapshot>)>,
    /// Base JSON by service, for every target (absent: no base).
    bases: Option<std::collections::HashMap<String, String>>,
}

/// [`plan_service`], reading stock through the stat cache when there is one.
fn plan_service_cached(
    domain: &Domain,
    backend: &dyn Backend,
    db: Option<&Db>,
    name: &str,
    max_size: u64,
    settle: Settle,
    cache: Option<&mut DomainCache>,
) -> Result<(ServicePlan, Option<Stock>)> {
    let (stat_cache, mut bases) = match cache {
        Some(c) => (
            c.cache.map(|_| (&mut c.snapshots, &mut c.updates)),
            c.bases.as_mut(),
        ),
        None => (None, None),
    };
    let stock = match stat_cache {
        None => tree::read_stock(&domain.stock.host, name, max_size)?,
        Some((snapshots, updates)) => {
            let old = snapshots
                .remove(name)
                .and_then(|data| tree::Snapshot::decode(&data));
            match tree::read_stock_cached(&domain.stock.host, name, max_size, old.as_ref())? {
                Some((stock, snap)) => {
                    if snap.supersedes(old.as_ref()) {
                        updates.push((name.to_string(), Some(snap)));
                    }
                    Some(stock)
                }
                None => {
                    if old.is_some() {
                        updates.push((name.to_string(), None));
                    }
                    None
                }
            }
        }
    };
    let mut base = match bases.as_mut() {
        // read ahead: a base stored exactly as stock serializes is stock's tree
        Some(texts) => match texts.remove(name) {
            None => None,
            Some(text) => match &stock {
                Some(s) if serde_json::to_string(&s.tree).is_ok_and(|j| j == text) => {
                    Some(s.tree.clone())
                }
                _ => Some(Db::parse_base(&domain.name, name, &text)?),
            },
        },
        None => db
            .map(|db| db.base(&domain.name, name))
            .transpose()?
            .flatten(),
    };
    if settle == Settle::AsIs
        && let (Some(s), Some(b)) = (&stock, &base)
        && s.tree == *b
        && tree::live_exists(&domain.live.host, name)?
    {
        // Stock is what was applied last: every live path keeps what it has, whatever
        // the admin did there, so live is not read: nothing to do (what planning
        // against a live equal to the base gives).
        if domain.policy.exclude.iter().any(|e| e == name) {
            let live = base.clone();
            return plan_service_from(domain, backend, name, stock, base, live);
        }
        let p = ServicePlan {
            domain: domain.name.clone(),
            name: name.to_string(),
            action: Action::Nothing,
            ops: Vec::new(),
            conflicts: Vec::new(),
            new_base: base,
            restart_main: false,
            restart_log: false,
            link: false,
            state: State::UNSUPERVISED,
            kept: Vec::new(),
            note: None,
        };
        return Ok((p, stock));
    }
    let mut live = tree::read_live(&domain.live.host, name)?;
    if settle != Settle::AsIs {
        let (first, _) = plan_service_from(
            domain,
            &NoSupervisor,
            name,
            stock.clone(),
            base.clone(),
            live.clone(),
        )?;
        for c in &first.conflicts {
            match (settle, c.path.as_str()) {
                // the admin removed the live directory: create it again
                (Settle::TakeStock, ".") => base = None,
                (Settle::TakeStock, path) => {
                    if let Some(l) = live.as_mut() {
                        match &c.base {
                            Some(e) => l.insert(path.to_string(), e.clone()),
                            None => l.remove(path),
                        };
                    }
                }
                (_, ".") => {}
                (_, path) => {
                    let b = base.get_or_insert_with(tree::Tree::new);
                    match &c.stock {
                        Some(e) => b.insert(path.to_string(), e.clone()),
                        None => b.remove(path),
                    };
                }
            }
        }
    }
    plan_service_from(domain, backend, name, stock, base, live)
}

fn plan_service_from(
    domain: &Domain,
    backend: &dyn Backend,
    name: &str,
    stock: Option<Stock>,
    base: Option<tree::Tree>,
    live: Option<tree::Tree>,
) -> Result<(ServicePlan, Option<Stock>)> {
    let policy = PlanPolicy {
        restart_on_change: domain.policy.restart == crate::config::RestartPolicy::OnChange,
        enable_new: domain.policy.enable_new,
        excluded: domain.policy.exclude.iter().any(|e| e == name),
    };
    let input = |state| Input {
        domain: &domain.name,
        name,
        stock: stock.as_ref().map(|s| &s.tree),
        base: base.as_ref(),
        live: live.as_ref(),
        state,
        policy,
    };
    let mut p = plan::plan(&input(State::UNSUPERVISED));
    if p.action == Action::Update {
        let state = backend
            .status(name)
            .with_context(|| format!("cannot ask the supervisor about {name}"))?;
        if state != State::UNSUPERVISED {
            p = plan::plan(&input(state));
        }
    }
    Ok((p, stock))
}

fn run_plans(
    cfg: &Config,
    opts: &Options,
    mut db: Option<Db>,
    mut report: Report,
) -> Result<Report> {
    let chosen = targets(cfg, db.as_ref(), &opts.selection, &mut report)?;
    let journaled: BTreeSet<(String, String)> = match &db {
        Some(db) if !opts.dry_run => db
            .journal()?
            .into_iter()
            .map(|e| (e.plan.domain, e.plan.name))
            .collect(),
        _ => BTreeSet::new(),
    };
    let run = match (&mut db, opts.dry_run) {
        (Some(db), false) => db.start_run(&opts.trigger)?,
        _ => 0,
    };
    // a dry run writes nothing, not even the cache
    let mut stat_cache = match opts.dry_run {
        false => StatCache::open(&cfg.state_dir.host),
        true => None,
    };
    for (dname, targets) in chosen {
        let Some(domain) = cfg.domain(&dname) else {
            continue;
        };
        let backend = backends::for_domain(domain);
        let mut plans: Vec<(ServicePlan, Option<Stock>, i64)> = Vec::new();
        let mut domain_hint = None;
        let names: Vec<&str> = targets
            .iter()
            .filter(|t| !t.name.is_empty())
            .map(|t| t.name.as_str())
            .collect();
        let mut dcache = Some(DomainCache {
            cache: stat_cache.as_ref(),
            snapshots: stat_cache
                .as_ref()
                .map(|c| c.get_many(&dname, &names))
                .unwrap_or_default(),
            updates: Vec::new(),
            bases: db
                .as_ref()
                .map(|db| db.base_texts(&dname, &names))
                .transpose()?,
        });
        for t in targets {
            if t.name.is_empty() {
                domain_hint = Some(t.max_hint);
                continue;
            }
            if journaled.contains(&(dname.clone(), t.name.clone())) {
                report.fail(
                    &dname,
                    &t.name,
                    &anyhow::anyhow!(
                        "an interrupted change could not be finished; see svsettle status"
                    ),
                );
                continue;
            }
            match plan_service_cached(
                domain,
                backend.as_ref(),
                db.as_ref(),
                &t.name,
                cfg.max_file_size,
                Settle::AsIs,
                dcache.as_mut(),
            ) {
                Ok((p, stock)) => {
                    // stock content is needed only to write it
                    let stock = stock.filter(|_| p.acts());
                    plans.push((p, stock, t.max_hint))
                }
                Err(e) => {
                    let e = e.context(format!("{}/{}", dname, t.name));
                    if let Some(db) = db.as_mut().filter(|_| !opts.dry_run) {
                        let _ = db.record_problem(
                            &opts.trigger,
                            Some(&dname),
                            Some(&t.name),
                            &format!("{e:#}"),
                        );
                    }
                    report.lines.push(Line {
                        domain: dname.clone(),
                        service: t.name.clone(),
                        kind: "failed",
                        text: format!("failed {}: {e:#}", t.name),
                        package: None,
                    });
                }
            }
        }
        if let Some(updates) = dcache.map(|c| c.updates).filter(|u| !u.is_empty())
            && let Some(cache) = stat_cache.as_mut()
        {
            let rows: Vec<(&str, Option<&tree::Snapshot>)> = updates
                .iter()
                .map(|(name, snap)| (name.as_str(), snap.as_ref()))
                .collect();
            cache.put(&dname, &rows);
        }
        if opts.dry_run {
            for (p, _, _) in &plans {
                if p.action == Action::Nothing {
                    report.unchanged += 1;
                    continue;
                }
                let (kind, text) = describe(p, None, true);
                report.line(&p.domain, &p.name, kind, text, None);
                if p.action == Action::Update && !p.conflicts.is_empty() {
                    report.line(
                        &p.domain,
                        &p.name,
                        "conflict",
                        describe_conflicts(p).1,
                        None,
                    );
                }
            }
            continue;
        }
        let Some(db) = db.as_mut() else { continue };
        apply_domain(cfg, domain, backend.as_ref(), db, run, plans, &mut report)?;
        if let Some(max) = domain_hint {
            // A service that failed during a whole-domain walk keeps a hint of its own,
            // so the next `--pending` retries it.
            let retry: Vec<crate::queue::NewHint> = report
                .lines
                .iter()
                .filter(|l| l.kind == "failed" && l.domain == dname && !l.service.is_empty())
                .map(|l| crate::queue::NewHint {
                    domain: dname.clone(),
                    service: l.service.clone(),
                    path: domain.stock.inner.join(&l.service).display().to_string(),
                    source: "retry".into(),
                    txn: format!("run-{run}"),
                    package: None,
                })
                .collect();
            if !retry.is_empty() {
                db.enqueue(&retry)?;
            }
            db.clear_domain_hints(&dname, max)?;
        }
    }
    if let Some(db) = db.as_mut().filter(|_| !opts.dry_run) {
        let summary = summary_words(&report);
        db.finish_run(run, &summary)?;
        if report.failed() == 0 {
            db.clear_problems()?;
        }
    }
    Ok(report)
}

/// Journals, applies and records every plan of one domain.
fn apply_domain(
    cfg: &Config,
    domain: &Domain,
    backend: &dyn Backend,
    db: &mut Db,
    run: i64,
    plans: Vec<(ServicePlan, Option<Stock>, i64)>,
    report: &mut Report,
) -> Result<()> {
    // Services that need no action are recorded together: one transaction.
    let mut quiet = Vec::new();
    let mut acting = Vec::new();
    for (p, stock, max_hint) in plans {
        if p.acts() {
            acting.push((p, stock, max_hint))
        } else {
            quiet.push((p, max_hint))
        }
    }
    let recorded: BTreeSet<(String, String)> = db
        .conflicts()?
        .into_iter()
        .filter(|c| c.domain == domain.name)
        .map(|c| (c.service, c.conflict.path))
        .collect();
    let mut texts = Vec::with_capacity(quiet.len());
    let mut blobs = Vec::new();
    let packages = db.newest_hint_packages(&domain.name)?;
    for (p, _) in &quiet {
        let (kind, text) = describe(p, None, false);
        let package = packages.get(&p.name).cloned();
        blobs.extend(conflict_blobs(domain, p));
        let known = p.action == Action::Conflict
            && p.conflicts.len() == recorded.iter().filter(|(s, _)| *s == p.name).count()
            && p.conflicts
                .iter()
                .all(|c| recorded.contains(&(p.name.clone(), c.path.clone())));
        texts.push((kind, text, package, !(p.action == Action::Nothing || known)));
    }
    let outcomes: Vec<Outcome> = quiet
        .iter()
        .zip(&texts)
        .map(|((p, max_hint), (kind, text, package, history))| Outcome {
            run,
            plan: p,
            max_hint: *max_hint,
            action: kind,
            detail: text,
            ok: true,
            package: package.as_deref(),
            history: *history,
        })
        .collect();
    let blob_refs: Vec<(&str, &[u8])> = blobs
        .iter()
        .map(|(h, d)| (h.as_str(), d.as_slice()))
        .collect();
    db.commit_services(&outcomes, &blob_refs)?;
    for ((p, _), (kind, text, package, _)) in quiet.iter().zip(texts) {
        if p.action == Action::Nothing {
            report.unchanged += 1;
        } else {
            report.line(&p.domain, &p.name, kind, text, package);
        }
    }
    if acting.is_empty() {
        return Ok(());
    }
    let mut contents_of = Vec::new();
    for (p, stock, _) in &acting {
        let mut c = Contents::new();
        if let Some(stock) = stock {
            for h in apply::needed_hashes(p) {
                if let Some(data) = stock.contents.get(h) {
                    c.insert(h.to_string(), data.clone());
                }
            }
        }
        fill_contents(cfg, domain, db, p, &mut c)?;
        contents_of.push(c);
    }
    {
        let journal: Vec<(&ServicePlan, i64)> = acting.iter().map(|(p, _, m)| (p, *m)).collect();
        let blobs: Vec<(&str, &[u8])> = contents_of
            .iter()
            .flat_map(|c| c.iter().map(|(h, d)| (h.as_str(), d.as_slice())))
            .collect();
        db.journal_plans(run, &journal, &blobs)?;
    }
    crash_point!("journal.after-plan");
    let batch: Vec<(&ServicePlan, &Contents)> = acting
        .iter()
        .zip(&contents_of)
        .map(|((p, _, _), c)| (p, c))
        .collect();
    // plans the backend leaves out fail at once, before anything is switched
    let mut refused: BTreeSet<String> = BTreeSet::new();
    let committed = {
        let mut refuse = |p: &ServicePlan, cause: String| -> Result<()> {
            let max_hint = acting
                .iter()
                .find(|(a, _, _)| a.name == p.name)
                .map_or(0, |(_, _, m)| *m);
            db.journal_drop(&p.domain, &p.name)?;
            finish(
                db,
                report,
                run,
                p,
                max_hint,
                Err(anyhow::anyhow!(cause)),
                &[],
            )?;
            refused.insert(p.name.clone());
            Ok(())
        };
        backend.commit_batch(run, &batch, &mut refuse)
    };
    let acting: Vec<_> = acting
        .iter()
        .zip(&contents_of)
        .filter(|((p, _, _), _)| !refused.contains(&p.name))
        .collect();
    let committed = match committed {
        Ok(c) => c,
        Err(e) => {
            for ((p, _, max_hint), _) in &acting {
                db.journal_drop(&p.domain, &p.name)?;
                finish(
                    db,
                    report,
                    run,
                    p,
                    *max_hint,
                    Err(anyhow::anyhow!("{e:#}")),
                    &[],
                )?;
            }
            return Ok(());
        }
    };
    report.notes.extend(committed.notes);
    // New services are built together (one sync of their content, one journal
    // transaction per step) and recorded together (one transaction).
    let creates: Vec<(&ServicePlan, &Contents)> = acting
        .iter()
        .filter(|((p, _, _), _)| p.action == Action::Create)
        .map(|((p, _, _), c)| (p, *c))
        .collect();
    let mut created = Exec {
        db,
        domain,
        backend,
    }
    .create_batch(&creates)
    .into_iter();
    let mut done_creates = Vec::new();
    for ((p, _, max_hint), contents) in acting {
        let mut res = if p.action == Action::Create {
            created
                .next()
                .unwrap_or_else(|| Err(anyhow::anyhow!("internal: create not carried out")))
        } else {
            Exec {
                db,
                domain,
                backend,
            }
            .execute(p, contents, Step::Planned)
        };
        if res.is_ok()
            && let Some(cause) = committed.troubled.get(&p.name)
        {
            db.journal_drop(&p.domain, &p.name)?;
            res = Err(anyhow::anyhow!("{cause}"));
        }
        match res {
            Ok(done) if p.action == Action::Create => done_creates.push((p, *max_hint, done)),
            res => finish(db, report, run, p, *max_hint, res, &[])?,
        }
    }
    finish_many(db, report, run, &domain.name, done_creates)
}

/// [`finish`] for plans that succeeded, recorded in one transaction.
fn finish_many(
    db: &mut Db,
    report: &mut Report,
    run: i64,
    domain: &str,
    done: Vec<(&ServicePlan, i64, apply::Done)>,
) -> Result<()> {
    if done.is_empty() {
        return Ok(());
    }
    let packages = db.newest_hint_packages(domain)?;
    let texts: Vec<(&'static str, String, Option<String>)> = done
        .iter()
        .map(|(p, _, d)| {
            let (kind, text) = describe(p, Some(d.verb), false);
            (kind, text, packages.get(&p.name).cloned())
        })
        .collect();
    crash_point!("commit.before");
    let outcomes: Vec<Outcome> = done
        .iter()
        .zip(&texts)
        .map(|((p, max_hint, _), (kind, text, package))| Outcome {
            run,
            plan: p,
            max_hint: *max_hint,
            action: kind,
            detail: text,
            ok: true,
            package: package.as_deref(),
            history: true,
        })
        .collect();
    db.commit_services(&outcomes, &[])?;
    for ((p, _, _), (kind, text, package)) in done.iter().zip(texts) {
        report.line(&p.domain, &p.name, kind, text, package);
        if !p.conflicts.is_empty() {
            let (_, text) = describe_conflicts(p);
            report.line(&p.domain, &p.name, "conflict", text, None);
        }
    }
    Ok(())
}

/// Content a plan writes that the stock read did not load (the stat cache answered for
/// the file): read again from stock if it still has that hash, else taken from the
/// database. Whatever is still missing fails the service before anything is touched.
fn fill_contents(
    cfg: &Config,
    domain: &Domain,
    db: &Db,
    p: &ServicePlan,
    c: &mut Contents,
) -> Result<()> {
    for op in &p.ops {
        let plan::Op::Put {
            path,
            entry: tree::Entry::File { hash, .. },
        } = op
        else {
            continue;
        };
        if c.contains_key(hash) {
            continue;
        }
        let data = tree::read_stock_file(&domain.stock.host, &p.name, path, cfg.max_file_size)
            .ok()
            .filter(|d| tree::hash_bytes(d) == *hash);
        let data = match data {
            Some(d) => Some(d),
            None => db.blob(hash)?,
        };
        if let Some(d) = data {
            c.insert(hash.clone(), d);
        }
    }
    Ok(())
}

/// Stock content of conflicting files, stored so `resolve` and `diff` can show it
/// even after the stock file changes again.
fn conflict_blobs(domain: &Domain, p: &ServicePlan) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for c in &p.conflicts {
        if let Some(tree::Entry::File { hash, .. }) = &c.stock
            && let Ok(data) = std::fs::read(domain.stock.host.join(&p.name).join(&c.path))
            && tree::hash_bytes(&data) == *hash
        {
            out.push((hash.clone(), data));
        }
    }
    out
}

/// "restarted foo (run changed); 2 services unchanged" — for logs and hooks.
pub fn summary_words(report: &Report) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for l in &report.lines {
        by_kind.entry(l.kind).or_default().push(l.service.clone());
    }
    for kind in [
        "restarted",
        "updated",
        "created",
        "removed",
        "kept",
        "conflict",
        "pending",
        "excluded",
        "failed",
    ] {
        if let Some(names) = by_kind.get(kind) {
            parts.push(format!("{kind}: {}", names.join(", ")));
        }
    }
    if report.unchanged > 0 {
        parts.push(format!("{} unchanged", report.unchanged));
    }
    if parts.is_empty() {
        "nothing to do".into()
    } else {
        parts.join("; ")
    }
}

/// `svsettle resolve`: settles the conflicts of one service, then reconciles it.
pub fn resolve(cfg: &Config, spec: &str, take_stock: bool) -> Result<Report> {
    let mut report = Report::default();
    let state = &cfg.state_dir.host;
    let Some(_lock) = Lock::acquire(state, false)? else {
        report.deferred =
            Some("another svsettle reconcile is running; try again when it is done".into());
        return Ok(report);
    };
    let mut db = Db::open(state)?;
    recover(cfg, &mut db, &mut report)?;
    let (dom, name) = match spec.split_once('/') {
        Some((d, n)) => (Some(d), n),
        None => (None, spec),
    };
    crate::names::check_service_name(name)?;
    let conflicts = db.conflicts()?;
    let domain = cfg
        .active_domains()
        .filter(|d| dom.is_none_or(|x| x == d.name))
        .find(|d| {
            conflicts
                .iter()
                .any(|c| c.domain == d.name && c.service == name)
        })
        .with_context(|| format!("{spec}: no recorded conflict (svsettle status lists them)"))?;
    let backend = backends::for_domain(domain);
    let (p, _) = plan_service(
        domain,
        backend.as_ref(),
        Some(&db),
        name,
        cfg.max_file_size,
        Settle::AsIs,
    )?;
    if p.conflicts.iter().any(|c| c.path == ".") && !take_stock {
        bail!(
            "{name}: the admin removed its live directory; to keep it removed, add {name:?} to exclude in the config"
        );
    }
    let settle = if take_stock {
        Settle::TakeStock
    } else {
        Settle::KeepLive
    };
    let (p, stock) = plan_service(
        domain,
        backend.as_ref(),
        Some(&db),
        name,
        cfg.max_file_size,
        settle,
    )?;
    let run = db.start_run("resolve")?;
    let how = if take_stock {
        "took stock for"
    } else {
        "kept live for"
    };
    let paths: Vec<String> = conflicts
        .iter()
        .filter(|c| c.domain == domain.name && c.service == name)
        .map(|c| c.conflict.path.clone())
        .collect();
    apply_domain(
        cfg,
        domain,
        backend.as_ref(),
        &mut db,
        run,
        vec![(p, stock, 0)],
        &mut report,
    )?;
    if report.failed() == 0 {
        report.line(
            &domain.name,
            name,
            "resolved",
            format!("resolved {name}: {how} {}", paths.join(", ")),
            None,
        );
    }
    db.finish_run(run, &summary_words(&report))?;
    Ok(report)
}
