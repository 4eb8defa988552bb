//! s6-rc backend (s6-rc 0.5). The live tree is an s6-rc **source** tree: no supervisor
//! ever runs it, so it may be written while services run. What runs is a compiled
//! database, switched to once per reconcile:
//!
//! 1. a staging source tree beside the live tree: a symlink to every unchanged live
//!    service, a copy with the plan applied for every changed one (removed ones left out);
//! 2. one `s6-rc-compile` of it into a new, uniquely named database beside the
//!    compiled-database symlink (`compiled-r<run>-<time>-<pid>`); a definition that
//!    s6-rc-compile refuses is left out of the batch, the rest compiled again;
//! 3. one `s6-rc-update -l LIVEDIR -f CONVFILE NEWDB`: the conversion file holds
//!    `NAME restart` for every changed service that is up, since s6-rc-update does not
//!    restart a service whose definition changed (it restarts their dependents, stops
//!    services gone from the new database, and handles type changes itself);
//! 4. the compiled symlink repointed atomically (new symlink, rename), the old
//!    database deleted.
//!
//! Whether the switch happened is read from `LIVEDIR/compiled`, never guessed from an
//! exit code. The run number in the database name tells a crashed run's recovery
//! whether its batch became current: then its journaled plans are finished, otherwise
//! they are rolled back and planned again.

use super::{Backend, Committed, Part, Recovered, Refuse, place_symlink, run};
use crate::apply::{Contents, sync_dir};
use crate::config::{Domain, TreePath};
use crate::crash_point;
use crate::names::TEMP_PREFIX;
use crate::plan::{Action, Op, Run, ServicePlan, State};
use crate::tree::Entry;
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prefix of the staging source tree, beside the live tree (same depth, so relative
/// symlinks inside service directories resolve the same).
const STAGING: &str = "src.";

pub struct S6Rc {
    domain: String,
    /// The live source tree.
    live: TreePath,
    compiled: Option<TreePath>,
    livedir: Option<TreePath>,
    stop_timeout: Duration,
    start_timeout: Duration,
}

/// Plans of one switch with the content they write.
type Batch<'p> = Vec<(&'p ServicePlan, &'p Contents)>;

/// The compiled databases, as found on disk.
struct Dbs {
    /// The compiled-database symlink (host path).
    link: PathBuf,
    /// Its parent, where the databases live.
    dir: PathBuf,
    /// What the symlink points to, canonical; `None` when there is no symlink yet.
    current: Option<PathBuf>,
    /// What the running s6-rc uses (`LIVEDIR/compiled`), canonical; `None` when s6-rc
    /// is not running here.
    live: Option<PathBuf>,
}

impl S6Rc {
    pub fn new(d: &Domain) -> S6Rc {
        S6Rc {
            domain: d.name.clone(),
            live: d.live.clone(),
            compiled: d.compiled.clone(),
            livedir: d.livedir.clone(),
            stop_timeout: d.policy.stop_timeout,
            start_timeout: d.policy.start_timeout,
        }
    }

    fn compiled(&self) -> Result<&TreePath> {
        self.compiled.as_ref().with_context(|| {
            format!(
                "domain {}: backend s6-rc needs `compiled` in the config",
                self.domain
            )
        })
    }

    fn livedir(&self) -> Result<&Path> {
        self.livedir
            .as_ref()
            .map(|t| t.host.as_path())
            .with_context(|| {
                format!(
                    "domain {}: backend s6-rc needs `livedir` in the config",
                    self.domain
                )
            })
    }

    /// The root the configured paths are under (`/` on a real system).
    fn root(&self) -> PathBuf {
        let mut root = self.live.host.clone();
        for _ in self.live.inner.components().skip(1) {
            root.pop();
        }
        root
    }

    /// A link target read from the system, as a host path: absolute targets already
    /// under the root are host paths; others are read as paths inside the root.
    fn host_target(&self, base: &Path, target: &Path) -> PathBuf {
        let root = self.root();
        if target.is_relative() {
            base.join(target)
        } else if target.starts_with(&root) {
            target.to_path_buf()
        } else {
            root.join(target.strip_prefix("/").unwrap_or(target))
        }
    }

    fn dbs(&self) -> Result<Dbs> {
        let link = self.compiled()?.host.clone();
        let dir = link
            .parent()
            .map(Path::to_path_buf)
            .with_context(|| format!("{} has no parent directory", link.display()))?;
        let current = match fs::symlink_metadata(&link) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", link.display())),
            Ok(m) if m.file_type().is_symlink() => {
                let t = fs::read_link(&link)
                    .with_context(|| format!("cannot read {}", link.display()))?;
                Some(canonical(&self.host_target(&dir, &t)))
            }
            Ok(_) => Some(canonical(&link)),
        };
        let live_link = self.livedir()?.join("compiled");
        let live = match fs::read_link(&live_link) {
            Ok(t) => {
                let base = live_link.parent().unwrap_or(Path::new("/"));
                Some(canonical(&self.host_target(base, &t)))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                None
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", live_link.display()));
            }
        };
        Ok(Dbs {
            link,
            dir: canonical(&dir),
            current,
            live,
        })
    }

    /// True when s6-rc runs here (`LIVEDIR/compiled` exists).
    fn running(&self) -> Result<bool> {
        Ok(self.dbs()?.live.is_some())
    }

    /// `s6-rc -l LIVEDIR -a list` (up) or `-da list` (down): atomic services.
    fn list(&self, up: bool) -> Result<BTreeSet<String>> {
        let l = path_str(self.livedir()?)?;
        let sel = if up { "-a" } else { "-da" };
        let out = run(&["s6-rc", "-b", "-l", l, sel, "list"])?;
        if out.code != 0 {
            bail!(
                "s6-rc -l {l} {sel} list exited {}: {}",
                out.code,
                one_line(&out.stderr)
            );
        }
        Ok(out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect())
    }

    /// The type of a service in the running database; `None` when it has none.
    fn db_type(&self, name: &str) -> Result<Option<String>> {
        let l = path_str(self.livedir()?)?;
        let out = run(&["s6-rc-db", "-b", "-l", l, "type", name])?;
        match out.code {
            0 => Ok(Some(out.stdout.trim().to_string())),
            _ if out.stderr.contains("not a valid identifier") => Ok(None),
            code => bail!(
                "s6-rc-db -l {l} type {name} exited {code}: {}",
                one_line(&out.stderr)
            ),
        }
    }

    /// `s6-rc -u|-d change NAMES` with a timeout.
    fn change(&self, up: bool, names: &[&str], limit: Duration) -> Result<()> {
        let l = path_str(self.livedir()?)?;
        let t = limit.as_millis().to_string();
        let dir = if up { "-u" } else { "-d" };
        let mut argv = vec!["s6-rc", "-b", "-l", l, "-t", &t, dir, "change"];
        argv.extend_from_slice(names);
        let out = run(&argv)?;
        match out.code {
            0 => Ok(()),
            2 => bail!(
                "s6-rc {} change {} timed out after {} s",
                dir,
                names.join(" "),
                limit.as_secs()
            ),
            code => bail!(
                "s6-rc {dir} change {} exited {code}: {}",
                names.join(" "),
                one_line(&out.stderr)
            ),
        }
    }

    /// A new database path beside the symlink: `compiled-r<run>-<secs>-<pid>`.
    fn new_db_path(&self, dbs: &Dbs, run: i64) -> Result<PathBuf> {
        let base = link_base(&dbs.link)?;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let stem = format!("{base}-r{run}-{secs}-{}", std::process::id());
        let mut path = dbs.dir.join(&stem);
        let mut n = 1;
        while path.symlink_metadata().is_ok() {
            path = dbs.dir.join(format!("{stem}.{n}"));
            n += 1;
        }
        Ok(path)
    }

    fn staging_path(&self) -> Result<PathBuf> {
        let parent = self
            .live
            .host
            .parent()
            .with_context(|| format!("{} has no parent directory", self.live.host.display()))?;
        Ok(parent.join(format!("{TEMP_PREFIX}{STAGING}{}", std::process::id())))
    }

    /// Builds the staging source tree: the live tree with `plans` applied.
    fn build_staging(&self, staging: &Path, plans: &[(&ServicePlan, &Contents)]) -> Result<()> {
        if staging.symlink_metadata().is_ok() {
            fs::remove_dir_all(staging)
                .with_context(|| format!("cannot clear {}", staging.display()))?;
        }
        fs::create_dir(staging).with_context(|| format!("cannot create {}", staging.display()))?;
        let by_name: BTreeMap<&str, &(&ServicePlan, &Contents)> =
            plans.iter().map(|pc| (pc.0.name.as_str(), pc)).collect();
        let live = &self.live.host;
        match fs::read_dir(live) {
            Ok(rd) => {
                for ent in rd {
                    let ent = ent.with_context(|| format!("cannot list {}", live.display()))?;
                    let name = ent.file_name();
                    let Some(name) = name.to_str() else { continue };
                    // s6-rc-compile ignores dot-names too
                    if name.starts_with('.') || by_name.contains_key(name) {
                        continue;
                    }
                    std::os::unix::fs::symlink(ent.path(), staging.join(name))
                        .with_context(|| format!("cannot link {name} into the staging tree"))?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", live.display())),
        }
        for (plan, contents) in plans {
            let dest = staging.join(&plan.name);
            match plan.action {
                Action::Remove => {}
                Action::Update => {
                    let src = live.join(&plan.name);
                    if src.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                        bail!("{}: live {} is not a directory", plan.name, src.display());
                    }
                    copy_tree(&src, &dest, 0)?;
                    apply_ops(&dest, plan, contents)?;
                }
                Action::Create => {
                    fs::create_dir(&dest)
                        .with_context(|| format!("cannot create {}", dest.display()))?;
                    fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
                        .with_context(|| format!("cannot chmod {}", dest.display()))?;
                    apply_ops(&dest, plan, contents)?;
                }
                other => bail!("internal: plan action {} does not act", other.as_str()),
            }
        }
        Ok(())
    }

    /// Compiles the staging tree into `db`. `Err(message)` is s6-rc-compile's refusal,
    /// with staging paths shown as live paths.
    fn compile(&self, staging: &Path, db: &Path) -> Result<std::result::Result<(), String>> {
        let out = run(&["s6-rc-compile", path_str(db)?, path_str(staging)?])?;
        if out.code == 0 {
            return Ok(Ok(()));
        }
        if db.symlink_metadata().is_ok() {
            fs::remove_dir_all(db).with_context(|| format!("cannot remove {}", db.display()))?;
        }
        let mut msg = out
            .stderr
            .lines()
            .filter(|l| !l.contains(": warning: "))
            .map(|l| l.trim_start_matches("s6-rc-compile: fatal: ").to_string())
            .collect::<Vec<_>>()
            .join("; ");
        if msg.is_empty() {
            msg = format!("s6-rc-compile exited {}", out.code);
        }
        let shown = self.live.inner.to_string_lossy();
        Ok(Err(msg.replace(&*staging.to_string_lossy(), &shown)))
    }

    /// Deletes a database that is no longer current nor live, if it sits beside the
    /// symlink (never anything else).
    fn delete_db(&self, dbs: &Dbs, db: &Path) -> Result<bool> {
        if Some(db) == dbs.live.as_deref()
            || Some(db) == dbs.current.as_deref()
            || db.parent() != Some(dbs.dir.as_path())
            || db.file_name() == dbs.link.file_name()
            || !db.symlink_metadata().is_ok_and(|m| m.is_dir())
        {
            return Ok(false);
        }
        fs::remove_dir_all(db).with_context(|| format!("cannot delete {}", db.display()))?;
        Ok(true)
    }

    /// Points the compiled symlink at `db` (relative when beside it), atomically.
    fn swap(&self, dbs: &mut Dbs, db: &Path) -> Result<()> {
        let target = if db.parent() == Some(dbs.dir.as_path()) {
            PathBuf::from(db.file_name().unwrap_or_default())
        } else {
            db.to_path_buf()
        };
        place_symlink(&target, &dbs.link)?;
        sync_dir(&dbs.dir)?;
        dbs.current = Some(db.to_path_buf());
        Ok(())
    }

    fn check_link(dbs: &Dbs) -> Result<()> {
        if let Ok(m) = fs::symlink_metadata(&dbs.link)
            && !m.file_type().is_symlink()
        {
            bail!(
                "{} is not a symlink, so it cannot be switched atomically: move the database to {}-initial and make {} a symlink to it (see the s6-rc FAQ)",
                dbs.link.display(),
                dbs.link.display(),
                dbs.link.display()
            );
        }
        Ok(())
    }

    /// Compiles, leaving out plans s6-rc-compile refuses. `Ok(None)`: every plan
    /// was refused, nothing to switch to.
    fn compile_batch<'p>(
        &self,
        dbs: &Dbs,
        run: i64,
        staging: &Path,
        plans: &[(&'p ServicePlan, &'p Contents)],
        refuse: &mut Refuse,
    ) -> Result<Option<(PathBuf, Batch<'p>)>> {
        let mut batch: Batch = plans.to_vec();
        let db = self.new_db_path(dbs, run)?;
        loop {
            self.build_staging(staging, &batch)?;
            let msg = match self.compile(staging, &db)? {
                Ok(()) => return Ok(Some((db, batch))),
                Err(msg) => msg,
            };
            let named = named_services(&msg);
            let (bad, good): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .partition(|(p, _)| named.contains(p.name.as_str()));
            if bad.is_empty() {
                bail!("s6-rc-compile refused the new service definitions: {msg}");
            }
            for (p, _) in bad {
                refuse(
                    p,
                    format!("s6-rc-compile refused the new definition, nothing switched: {msg}"),
                )?;
            }
            if good.is_empty() {
                return Ok(None);
            }
            batch = good;
        }
    }

    fn conversion(&self, batch: &[(&ServicePlan, &Contents)], up: &BTreeSet<String>) -> String {
        let mut conv = String::new();
        for (p, _) in batch {
            if p.action == Action::Update && p.restart_main && up.contains(&p.name) {
                conv.push_str(&format!("{} restart\n", execline_quote(&p.name)));
            }
        }
        conv
    }

    /// `s6-rc-update` with the conversion file; returns its exit code and stderr.
    fn update(&self, staging: &Path, db: &Path, conv: &str) -> Result<(i32, String)> {
        let conv_file = staging.join(".conversion");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&conv_file)
            .with_context(|| format!("cannot create {}", conv_file.display()))?;
        f.write_all(conv.as_bytes())
            .with_context(|| format!("cannot write {}", conv_file.display()))?;
        drop(f);
        let out = run(&[
            "s6-rc-update",
            "-b",
            "-l",
            path_str(self.livedir()?)?,
            "-f",
            path_str(&conv_file)?,
            path_str(db)?,
        ])?;
        Ok((out.code, one_line(&out.stderr)))
    }

    /// After a switch that reported failures: which services are down now that
    /// were up before.
    fn lost(&self, was_up: &BTreeSet<String>) -> BTreeSet<String> {
        match self.list(false) {
            Ok(down) => was_up.intersection(&down).cloned().collect(),
            Err(_) => BTreeSet::new(),
        }
    }
}

impl Backend for S6Rc {
    fn status(&self, name: &str) -> Result<State> {
        if !self.running()? {
            return Ok(State::UNSUPERVISED);
        }
        let main = match self.db_type(name)?.as_deref() {
            Some("longrun" | "oneshot") => {
                if self.list(true)?.contains(name) {
                    Run::Up
                } else {
                    Run::Down
                }
            }
            // a bundle is not a process; nothing to restart
            _ => Run::Unsupervised,
        };
        Ok(State {
            main,
            log: Run::Unsupervised,
        })
    }

    fn stop(&self, name: &str, part: Part) -> Result<()> {
        if part == Part::Log {
            bail!("s6-rc services have no log/ logger: a logger is a service of its own");
        }
        self.change(false, &[name], self.stop_timeout)
    }

    fn start(&self, name: &str, part: Part) -> Result<()> {
        if part == Part::Log {
            bail!("s6-rc services have no log/ logger: a logger is a service of its own");
        }
        self.change(true, &[name], self.start_timeout)
    }

    /// In s6-rc, "enabled" means in the live set: up.
    fn is_linked(&self, name: &str) -> bool {
        self.running().unwrap_or(false) && self.list(true).is_ok_and(|up| up.contains(name))
    }

    /// Starts a new service (the database was switched in `commit_batch`). Without a
    /// running s6-rc there is nothing to start: what comes up at boot is the boot
    /// bundle's business.
    fn link(&self, name: &str) -> Result<()> {
        if !self.running()? {
            return Ok(());
        }
        self.change(true, &[name], self.start_timeout)
    }

    fn unlink(&self, name: &str) -> Result<()> {
        if !self.running()? {
            return Ok(());
        }
        self.change(false, &[name], self.stop_timeout)
    }

    fn restarts_in_place(&self) -> bool {
        false
    }

    fn commit_batch(
        &self,
        run: i64,
        plans: &[(&ServicePlan, &Contents)],
        refuse: &mut Refuse,
    ) -> Result<Committed> {
        let mut dbs = self.dbs()?;
        Self::check_link(&dbs)?;
        fs::create_dir_all(&dbs.dir)
            .with_context(|| format!("cannot create {}", dbs.dir.display()))?;
        let staging = self.staging_path()?;
        let res = self.commit_staged(&mut dbs, run, &staging, plans, refuse);
        if staging.symlink_metadata().is_ok() {
            fs::remove_dir_all(&staging)
                .with_context(|| format!("cannot remove {}", staging.display()))?;
        }
        res
    }

    fn recover_batch(&self) -> Result<Recovered> {
        let mut notes = Vec::new();
        // leftovers of an interrupted compile: staging trees, temporary links
        if let Some(parent) = self.live.host.parent() {
            for p in leftovers(parent, &format!("{TEMP_PREFIX}{STAGING}"))? {
                notes.push(format!("removed leftover {}", p.display()));
            }
        }
        let mut dbs = self.dbs()?;
        for p in leftovers(&dbs.dir, &format!("{TEMP_PREFIX}link."))? {
            notes.push(format!("removed leftover {}", p.display()));
        }
        let base = link_base(&dbs.link)?;
        let live_ours = dbs.live.clone().filter(|l| {
            l.parent() == Some(dbs.dir.as_path()) && db_run(&base, l).is_some() && l.is_dir()
        });
        if let Some(live) = live_ours
            && dbs.current.as_ref() != Some(&live)
            && Self::check_link(&dbs).is_ok()
        {
            let old = dbs.current.clone();
            self.swap(&mut dbs, &live)?;
            notes.push(format!(
                "finished an interrupted switch: {} now points to {}",
                dbs.link.display(),
                live.display()
            ));
            if let Some(old) = old
                && self.delete_db(&dbs, &old)?
            {
                notes.push(format!("deleted the old database {}", old.display()));
            }
        }
        // databases svsettle compiled that are neither current nor live
        if let Ok(rd) = fs::read_dir(&dbs.dir) {
            for ent in rd.flatten() {
                let p = dbs.dir.join(ent.file_name());
                if db_run(&base, &p).is_some() && self.delete_db(&dbs, &p)? {
                    notes.push(format!("removed leftover database {}", p.display()));
                }
            }
        }
        let current_run = dbs
            .live
            .as_ref()
            .or(dbs.current.as_ref())
            .and_then(|p| db_run(&base, p));
        Ok(Recovered { current_run, notes })
    }
}

impl S6Rc {
    fn commit_staged(
        &self,
        dbs: &mut Dbs,
        run: i64,
        staging: &Path,
        plans: &[(&ServicePlan, &Contents)],
        refuse: &mut Refuse,
    ) -> Result<Committed> {
        let mut committed = Committed::default();
        let Some((db, batch)) = self.compile_batch(dbs, run, staging, plans, refuse)? else {
            return Ok(committed);
        };
        sync_tree(&db)?;
        crash_point!("s6rc.after-compile");
        let old = dbs.current.clone();
        let old_live = dbs.live.clone();
        if old_live.is_some() {
            let was_up = self.list(true)?;
            let conv = self.conversion(&batch, &was_up);
            let (code, stderr) = match self.update(staging, &db, &conv) {
                Ok(r) => r,
                Err(e) => {
                    let _ = fs::remove_dir_all(&db);
                    return Err(e);
                }
            };
            *dbs = self.dbs()?;
            if dbs.live.as_ref() != Some(&db) {
                // not switched: whatever the down transition stopped comes back up
                let restored = match self.restore(&was_up) {
                    Ok(names) if names.is_empty() => String::new(),
                    Ok(names) => format!(
                        "; {} it had stopped started again on the old database",
                        names.join(", ")
                    ),
                    Err(e) => format!("; services it had stopped did not all come back: {e:#}"),
                };
                let err = anyhow::anyhow!(
                    "s6-rc-update exited {code} ({}), the database was not switched{restored}: {stderr}",
                    update_words(code)
                );
                let _ = fs::remove_dir_all(&db);
                return Err(err);
            }
            crash_point!("s6rc.after-update");
            if code != 0 {
                let lost = self.lost(&was_up);
                let why = format!(
                    "switched to the new database, but s6-rc-update exited {code} ({}): {stderr}",
                    update_words(code)
                );
                for (p, _) in &batch {
                    if lost.contains(&p.name) {
                        committed
                            .troubled
                            .insert(p.name.clone(), format!("{why}; {} is down now", p.name));
                    }
                }
                let others: Vec<&str> = lost
                    .iter()
                    .filter(|n| !committed.troubled.contains_key(*n))
                    .map(String::as_str)
                    .collect();
                if !others.is_empty() {
                    committed.notes.push(format!(
                        "{why}; up before and down now: {}",
                        others.join(", ")
                    ));
                } else if committed.troubled.is_empty() {
                    committed.notes.push(why);
                }
            }
        } else {
            committed.notes.push(format!(
                "s6-rc is not running here ({} has no compiled link): the new database is for the next boot",
                self.livedir()?.display()
            ));
        }
        self.swap(dbs, &db)?;
        crash_point!("s6rc.after-swap");
        for d in [old, old_live].into_iter().flatten() {
            self.delete_db(dbs, &d)?;
        }
        Ok(committed)
    }

    /// Brings back up what was up before a failed update; returns what it started.
    fn restore(&self, was_up: &BTreeSet<String>) -> Result<Vec<String>> {
        let up = self.list(true)?;
        let down: Vec<String> = was_up.difference(&up).cloned().collect();
        if !down.is_empty() {
            let names: Vec<&str> = down.iter().map(String::as_str).collect();
            self.change(true, &names, self.start_timeout)?;
        }
        Ok(down)
    }
}

fn update_words(code: i32) -> &'static str {
    match code {
        0 => "success",
        1 => "some state transitions failed",
        2 => "timed out",
        3 => "unknown service name in the conversion file",
        4 => "invalid service database",
        5 => "wrong service type in the conversion file",
        6 => "duplicate service in the conversion file",
        9 => "some services failed to stop",
        10 => "timed out while stopping services",
        100 => "usage error, or s6-svscan is not running on the scan directory",
        111 => "system call failed",
        126 | 127 => "cannot run s6-rc",
        _ => "unexpected exit code",
    }
}

/// A program's messages on one line (one report line per service).
fn one_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn canonical(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("path {} is not UTF-8", p.display()))
}

fn link_base(link: &Path) -> Result<String> {
    link.file_name()
        .and_then(|n| n.to_str())
        .map(String::from)
        .with_context(|| format!("{} has no usable file name", link.display()))
}

/// The run that compiled a database svsettle made (`BASE-r<run>-…`), if it is one.
fn db_run(base: &str, db: &Path) -> Option<i64> {
    let name = db.file_name()?.to_str()?;
    let rest = name.strip_prefix(base)?.strip_prefix("-r")?;
    let (digits, tail) = rest.split_once('-')?;
    if tail.is_empty() || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Words of an s6-rc-compile message that may be service names.
fn named_services(msg: &str) -> BTreeSet<&str> {
    msg.split(|c: char| c.is_whitespace() || c == '/')
        .map(|w| w.trim_matches(|c: char| matches!(c, ':' | ',' | ';' | '(' | ')' | '"')))
        .filter(|w| !w.is_empty())
        .collect()
}

/// A word for the execline lexer that reads the conversion file.
fn execline_quote(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':' | '+'));
    if plain {
        return name.to_string();
    }
    let mut q = String::from("\"");
    for c in name.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// Removes entries of `dir` whose name starts with `prefix`.
fn leftovers(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    crate::apply::sweep_prefix(dir, prefix)
}

/// Copies a live service directory (files, directories, symlinks as symlinks);
/// special files and svsettle's temporary names are left out.
fn copy_tree(from: &Path, to: &Path, depth: usize) -> Result<()> {
    if depth > 32 {
        bail!("{} is nested too deep", from.display());
    }
    let m = from
        .symlink_metadata()
        .with_context(|| format!("cannot stat {}", from.display()))?;
    let ft = m.file_type();
    if ft.is_symlink() {
        let t = fs::read_link(from).with_context(|| format!("cannot read {}", from.display()))?;
        std::os::unix::fs::symlink(t, to)
            .with_context(|| format!("cannot create {}", to.display()))?;
    } else if ft.is_dir() {
        fs::create_dir(to).with_context(|| format!("cannot create {}", to.display()))?;
        for ent in fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))? {
            let ent = ent.with_context(|| format!("cannot list {}", from.display()))?;
            if ent.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                continue;
            }
            copy_tree(&ent.path(), &to.join(ent.file_name()), depth + 1)?;
        }
        fs::set_permissions(
            to,
            fs::Permissions::from_mode(m.permissions().mode() & 0o7777),
        )
        .with_context(|| format!("cannot chmod {}", to.display()))?;
    } else if ft.is_file() {
        fs::copy(from, to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

fn remove_any(p: &Path) -> Result<()> {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(p).with_context(|| format!("cannot delete {}", p.display()))
        }
        Ok(_) => fs::remove_file(p).with_context(|| format!("cannot delete {}", p.display())),
        Err(_) => Ok(()),
    }
}

/// Applies a plan's operations to a (staging) service directory.
fn apply_ops(dir: &Path, plan: &ServicePlan, contents: &Contents) -> Result<()> {
    for op in &plan.ops {
        let target = dir.join(op.path());
        match op {
            Op::Delete { .. } => remove_any(&target)?,
            Op::Put { entry, path } => match entry {
                Entry::Dir { mode } => {
                    if !target.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                        remove_any(&target)?;
                        fs::create_dir(&target)
                            .with_context(|| format!("cannot create {}", target.display()))?;
                    }
                    fs::set_permissions(&target, fs::Permissions::from_mode(*mode))
                        .with_context(|| format!("cannot chmod {}", target.display()))?;
                }
                Entry::File { mode, hash, .. } => {
                    let data = contents.get(hash).with_context(|| {
                        format!(
                            "{}: content of {path} (sha256 {hash}) is not available",
                            plan.name
                        )
                    })?;
                    remove_any(&target)?;
                    fs::write(&target, data)
                        .with_context(|| format!("cannot write {}", target.display()))?;
                    fs::set_permissions(&target, fs::Permissions::from_mode(*mode))
                        .with_context(|| format!("cannot chmod {}", target.display()))?;
                }
                Entry::Symlink { target: to } => {
                    remove_any(&target)?;
                    std::os::unix::fs::symlink(to, &target)
                        .with_context(|| format!("cannot create {}", target.display()))?;
                }
            },
        }
    }
    Ok(())
}

/// Flushes a freshly compiled database to disk before the boot symlink points at it.
fn sync_tree(dir: &Path) -> Result<()> {
    for ent in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let ent = ent.with_context(|| format!("cannot list {}", dir.display()))?;
        let ft = ent.file_type()?;
        if ft.is_dir() {
            sync_tree(&ent.path())?;
        } else if ft.is_file() {
            fs::File::open(ent.path())
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot fsync {}", ent.path().display()))?;
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_carry_the_run() {
        let base = "compiled";
        assert_eq!(
            db_run(base, Path::new("/etc/s6-rc/compiled-r12-1700000000-42")),
            Some(12)
        );
        assert_eq!(
            db_run(base, Path::new("/etc/s6-rc/compiled-r3-1-2.1")),
            Some(3)
        );
        assert_eq!(db_run(base, Path::new("/etc/s6-rc/compiled-initial")), None);
        assert_eq!(db_run(base, Path::new("/etc/s6-rc/compiled-rx-1")), None);
        assert_eq!(db_run(base, Path::new("/etc/s6-rc/compiled-r5-")), None);
        assert_eq!(db_run(base, Path::new("/etc/s6-rc/compiled")), None);
    }

    #[test]
    fn compile_messages_name_services() {
        let n = named_services(
            "during dependency resolution for service bar: undefined service name nope",
        );
        assert!(n.contains("bar") && n.contains("nope"));
        let n =
            named_services("invalid /etc/s6-rc/sv/web-1/type: must be oneshot, longrun, or bundle");
        assert!(n.contains("web-1"));
        let n = named_services("cyclic service dependency reached from a and involving b");
        assert!(n.contains("a") && n.contains("b"));
    }

    #[test]
    fn conversion_names_are_quoted_for_execline() {
        assert_eq!(execline_quote("sshd"), "sshd");
        assert_eq!(execline_quote("getty@tty1"), "getty@tty1");
        assert_eq!(execline_quote("a b"), "\"a b\"");
        assert_eq!(execline_quote("x\"#"), "\"x\\\"#\"");
    }
}
