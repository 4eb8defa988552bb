//! Journaled execution of one [`ServicePlan`] (invariants 2, 3, 5).
//!
//! Steps, each recorded in the journal before the next begins:
//! - update: stop what will restart → stage every new file under
//!   `NAME/.svsettle-stage/` and fsync → **staged (point of no return)** → delete and
//!   rename into place, in place (scanners key on the directory's inode) → start once.
//! - create: build `.svsettle-new.NAME` beside the live tree, fsync → **rename into
//!   place (point of no return)** → link into the scan directory if policy says so.
//! - remove: stop, unlink, wait for the supervisor to go → **rename to
//!   `.svsettle-del.NAME` (point of no return)** → delete.
//!
//! An error before the point of no return rolls the service back to fully old; a
//! crash anywhere is finished by [`execute`] on the next run from the journaled step
//! (content comes from the database), so each service ends fully old or fully new.

use crate::backends::{Backend, Part};
use crate::config::Domain;
use crate::crash_point;
use crate::names::TEMP_PREFIX;
use crate::plan::{Action, Op, Run, ServicePlan};
use crate::queue::{Db, Step};
use crate::tree::Entry;
use anyhow::{Context, Result, bail};
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const STAGE: &str = ".svsettle-stage";

pub fn new_dir(live: &Path, name: &str) -> PathBuf {
    live.join(format!("{TEMP_PREFIX}new.{name}"))
}

pub fn del_dir(live: &Path, name: &str) -> PathBuf {
    live.join(format!("{TEMP_PREFIX}del.{name}"))
}

/// The content a plan writes, by hash.
pub type Contents = HashMap<String, Vec<u8>>;

/// Hashes of the files a plan writes.
pub fn needed_hashes(plan: &ServicePlan) -> BTreeSet<&str> {
    plan.ops
        .iter()
        .filter_map(|op| match op {
            Op::Put {
                entry: Entry::File { hash, .. },
                ..
            } => Some(hash.as_str()),
            _ => None,
        })
        .collect()
}

pub struct Exec<'a> {
    pub db: &'a mut Db,
    pub domain: &'a Domain,
    pub backend: &'a dyn Backend,
}

/// What happened, in a sysadmin's words ("restarted", "updated (down, left down)").
pub struct Done {
    pub verb: &'static str,
}

impl Exec<'_> {
    fn step(&mut self, plan: &ServicePlan, step: Step) -> Result<()> {
        self.db
            .journal_step(&plan.domain, &plan.name, &step)
            .with_context(|| {
                format!(
                    "{}/{}: cannot journal step {}",
                    plan.domain,
                    plan.name,
                    step.as_str()
                )
            })
    }

    /// Runs (or, after a crash, finishes) a journaled plan from `from`.
    pub fn execute(&mut self, plan: &ServicePlan, contents: &Contents, from: Step) -> Result<Done> {
        match plan.action {
            Action::Update => self.update(plan, contents, from),
            Action::Create => self.create(plan, contents, from),
            Action::Remove => self.remove(plan, from),
            other => bail!("internal: plan action {} does not act", other.as_str()),
        }
    }

    fn parts_to_restart(&self, plan: &ServicePlan) -> Vec<Part> {
        if !self.backend.restarts_in_place() {
            return Vec::new();
        }
        let mut parts = Vec::new();
        if plan.restart_main {
            parts.push(Part::Main);
        }
        if plan.restart_log {
            parts.push(Part::Log);
        }
        parts
    }

    fn part_up(&self, name: &str, part: Part) -> Result<bool> {
        let st = self.backend.status(name)?;
        Ok(match part {
            Part::Main => st.main == Run::Up,
            Part::Log => st.log == Run::Up,
        })
    }

    fn stop_parts(&self, name: &str, parts: &[Part]) -> Result<Vec<Part>> {
        let mut stopped = Vec::new();
        for &part in parts {
            if self.part_up(name, part)? {
                if let Err(e) = self.backend.stop(name, part) {
                    self.start_parts(name, &stopped);
                    return Err(e);
                }
                stopped.push(part);
            }
        }
        Ok(stopped)
    }

    /// Starts what was stopped, logger first so the service's output has a reader.
    fn start_parts(&self, name: &str, parts: &[Part]) -> Vec<anyhow::Error> {
        let mut errors = Vec::new();
        for part in [Part::Log, Part::Main] {
            if parts.contains(&part)
                && let Err(e) = self.backend.start(name, part)
            {
                errors.push(e);
            }
        }
        errors
    }

    fn update(&mut self, plan: &ServicePlan, contents: &Contents, from: Step) -> Result<Done> {
        let dir = self.domain.live.host.join(&plan.name);
        let stage = dir.join(STAGE);
        let parts = self.parts_to_restart(plan);
        if from < Step::Staged {
            check_targets(&dir, plan)?;
            let stopped = self.stop_parts(&plan.name, &parts)?;
            crash_point!("update.after-stop");
            let staged = self
                .step(plan, Step::Stopped)
                .and_then(|()| stage_files(&stage, plan, contents));
            if let Err(e) = staged {
                let _ = fs::remove_dir_all(&stage);
                let errors = self.start_parts(&plan.name, &stopped);
                let _ = self.db.journal_drop(&plan.domain, &plan.name);
                return Err(with_restart_errors(
                    e.context("rolled back, live unchanged"),
                    errors,
                ));
            }
            self.step(plan, Step::Staged)?;
            crash_point!("update.after-stage");
        }
        if from < Step::Written {
            write_ops(&dir, &stage, plan)?;
            self.step(plan, Step::Written)?;
            crash_point!("update.after-write");
        }
        if from < Step::Started {
            if parts.contains(&Part::Main) && logger_toggled(plan) {
                // A supervisor sets up a logger (and the pipe to it) only when it
                // starts: a logger added or removed needs a new supervisor.
                if self.backend.is_linked(&plan.name) {
                    self.backend.unlink(&plan.name)?;
                }
                self.backend.link(&plan.name).with_context(|| {
                    format!("updated {}, but cannot supervise it again", plan.name)
                })?;
            }
            let mut to_start = Vec::new();
            for &part in &parts {
                // a removed logger has nothing left to start
                if part == Part::Log && !dir.join("log").is_dir() {
                    continue;
                }
                if !self.part_up(&plan.name, part)? {
                    to_start.push(part);
                }
            }
            let errors = self.start_parts(&plan.name, &to_start);
            if let Some(e) = errors.into_iter().next() {
                return Err(e.context(format!("updated {}, but it did not start again", plan.name)));
            }
            self.step(plan, Step::Started)?;
            crash_point!("update.after-start");
        }
        Ok(Done {
            verb: match (
                plan.restart_main,
                plan.restart_log,
                self.backend.restarts_in_place(),
            ) {
                (true, _, _) => "restarted",
                (false, true, _) => "restarted logger of",
                _ if plan.state.main == Run::Down => "updated (down, left down)",
                _ => "updated",
            },
        })
    }

    fn create(&mut self, plan: &ServicePlan, contents: &Contents, from: Step) -> Result<Done> {
        let live = &self.domain.live.host;
        let tmp = new_dir(live, &plan.name);
        let dest = live.join(&plan.name);
        if from < Step::Written {
            let renamed = from >= Step::Staged && dest.is_dir() && !tmp.exists();
            if !renamed {
                if let Err(e) = build_new(live, &tmp, plan, contents, true) {
                    let _ = fs::remove_dir_all(&tmp);
                    let _ = self.db.journal_drop(&plan.domain, &plan.name);
                    return Err(e.context("nothing was created"));
                }
                self.step(plan, Step::Staged)?;
                crash_point!("create.after-build");
                if dest.symlink_metadata().is_ok() {
                    let _ = fs::remove_dir_all(&tmp);
                    let _ = self.db.journal_drop(&plan.domain, &plan.name);
                    bail!(
                        "{} appeared while it was being created; left alone",
                        dest.display()
                    );
                }
                // point of no return
                fs::rename(&tmp, &dest).with_context(|| {
                    format!("cannot rename {} to {}", tmp.display(), dest.display())
                })?;
                sync_dir(live)?;
                crash_point!("create.after-rename");
            }
            self.step(plan, Step::Written)?;
        }
        if from < Step::Started {
            if plan.link {
                self.backend
                    .link(&plan.name)
                    .with_context(|| format!("created {}, but cannot enable it", plan.name))?;
            }
            self.step(plan, Step::Started)?;
            crash_point!("create.after-link");
        }
        Ok(Done {
            verb: if plan.link {
                "created and enabled"
            } else {
                "created (not enabled)"
            },
        })
    }

    fn remove(&mut self, plan: &ServicePlan, from: Step) -> Result<Done> {
        let live = &self.domain.live.host;
        let dest = live.join(&plan.name);
        let del = del_dir(live, &plan.name);
        if from < Step::Stopped {
            if dest.is_dir() && self.backend.restarts_in_place() {
                if let Err(e) = self.stop_parts(&plan.name, &[Part::Main, Part::Log]) {
                    let _ = self.db.journal_drop(&plan.domain, &plan.name);
                    return Err(e.context("not removed"));
                }
                if self.backend.is_linked(&plan.name) {
                    self.backend.unlink(&plan.name)?;
                }
            }
            self.step(plan, Step::Stopped)?;
            crash_point!("remove.after-stop");
        }
        if from < Step::Written {
            if dest.symlink_metadata().is_ok() {
                // point of no return
                fs::rename(&dest, &del).with_context(|| {
                    format!("cannot rename {} to {}", dest.display(), del.display())
                })?;
                sync_dir(live)?;
                crash_point!("remove.after-rename");
            }
            if del.symlink_metadata().is_ok() {
                fs::remove_dir_all(&del)
                    .with_context(|| format!("cannot delete {}", del.display()))?;
            }
            self.step(plan, Step::Written)?;
            crash_point!("remove.after-delete");
        }
        Ok(Done { verb: "removed" })
    }
}

/// Whether an update adds or removes the service's logger (`log/`).
fn logger_toggled(plan: &ServicePlan) -> bool {
    plan.ops.iter().any(|op| match op {
        Op::Delete { path } => path == "log",
        Op::Put {
            path,
            entry: Entry::Dir { .. },
        } => path == "log" && plan.state.log == Run::Unsupervised,
        Op::Put { .. } => false,
    })
}

/// Refuses to write through anything but real directories: the service directory and
/// every parent of a target must be directories (not symlinks), or be made by the plan
/// in place of what it deletes. The plan saw them so; the admin may have changed live
/// since it was read.
fn check_targets(dir: &Path, plan: &ServicePlan) -> Result<()> {
    match dir.symlink_metadata() {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!(
            "live directory {} is no longer a directory (a symlink?); not following it",
            dir.display()
        ),
        Err(_) => bail!("live directory {} disappeared", dir.display()),
    }
    let made: BTreeSet<&str> = plan
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Put {
                path,
                entry: Entry::Dir { .. },
            } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    let deleted: BTreeSet<&str> = plan
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Delete { path } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    for op in &plan.ops {
        let path = op.path();
        for (i, _) in path.match_indices('/') {
            let parent = &path[..i];
            let p = dir.join(parent);
            match p.symlink_metadata() {
                Ok(m) if m.is_dir() => {}
                Ok(_) if made.contains(parent) && deleted.contains(parent) => {}
                Err(_) if made.contains(parent) => {}
                _ => bail!(
                    "{} is not a directory (changed since it was read?); not writing through it",
                    p.display()
                ),
            }
        }
    }
    Ok(())
}

fn with_restart_errors(e: anyhow::Error, errors: Vec<anyhow::Error>) -> anyhow::Error {
    match errors.into_iter().next() {
        None => e,
        Some(r) => e.context(format!("and it did not start again: {r:#}")),
    }
}

/// Removes leftovers of interrupted work in a live tree and a scan directory:
/// `.svsettle-new.*`, `.svsettle-del.*`, temporary links. Journaled services are
/// finished first, so anything left here belongs to nobody.
pub fn sweep(dir: &Path) -> Result<Vec<PathBuf>> {
    sweep_prefix(dir, TEMP_PREFIX)
}

/// Removes every entry of `dir` whose name starts with `prefix` (a missing `dir` has none).
pub fn sweep_prefix(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for ent in rd {
        let ent = ent.with_context(|| format!("cannot list {}", dir.display()))?;
        if !ent.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let p = ent.path();
        let ft = ent.file_type()?;
        if ft.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        }
        .with_context(|| format!("cannot remove leftover {}", p.display()))?;
        removed.push(p);
    }
    Ok(removed)
}

fn write_new_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_file_then(path, data, mode, true)
}

/// Writes a new file; `fsync`: make its content durable now (else the caller syncs the
/// whole filesystem before anything depends on it).
fn write_file_then(path: &Path, data: &[u8], mode: u32, fsync: bool) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // set after writing: the mode is not subject to the umask this way
    f.set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    if fsync {
        f.sync_all()
            .with_context(|| format!("cannot fsync {}", path.display()))?;
    }
    Ok(())
}

/// Makes everything written to the filesystem holding `dir` durable (`syncfs`): one
/// call for a batch instead of one fsync per file and directory.
fn sync_fs(dir: &Path) -> Result<()> {
    let f = fs::File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    nix::unistd::syncfs(&f)
        .with_context(|| format!("cannot sync the filesystem of {}", dir.display()))
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot fsync directory {}", dir.display()))
}

fn content<'a>(contents: &'a Contents, hash: &str, path: &str) -> Result<&'a [u8]> {
    contents
        .get(hash)
        .map(Vec::as_slice)
        .with_context(|| format!("content of {path} (sha256 {hash}) is not available"))
}

fn stage_files(stage: &Path, plan: &ServicePlan, contents: &Contents) -> Result<()> {
    // a leftover under the reserved name, whatever its type (never followed)
    match stage.symlink_metadata() {
        Ok(m) if m.is_dir() => fs::remove_dir_all(stage),
        Ok(_) => fs::remove_file(stage),
        Err(_) => Ok(()),
    }
    .with_context(|| format!("cannot clear {}", stage.display()))?;
    fs::create_dir(stage).with_context(|| format!("cannot create {}", stage.display()))?;
    let mut first = true;
    for (i, op) in plan.ops.iter().enumerate() {
        let Op::Put { path, entry } = op else {
            continue;
        };
        let staged = stage.join(i.to_string());
        match entry {
            Entry::File { mode, hash, .. } => {
                write_new_file(&staged, content(contents, hash, path)?, *mode)
                    .with_context(|| format!("cannot stage {path}"))?
            }
            Entry::Symlink { target } => {
                std::os::unix::fs::symlink(target, &staged).with_context(|| {
                    format!("cannot stage {path}: cannot create {}", staged.display())
                })?
            }
            Entry::Dir { .. } => continue,
        }
        if first {
            first = false;
            crash_point!("update.mid-stage");
        }
    }
    sync_dir(stage)
}

fn write_ops(dir: &Path, stage: &Path, plan: &ServicePlan) -> Result<()> {
    let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
    touched.insert(dir.to_path_buf());
    let mut first = true;
    for (i, op) in plan.ops.iter().enumerate() {
        let target = dir.join(op.path());
        if let Some(parent) = target.parent() {
            touched.insert(parent.to_path_buf());
        }
        match op {
            Op::Delete { .. } => match target.symlink_metadata() {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&target)
                    .with_context(|| format!("cannot delete {}", target.display()))?,
                Ok(_) => fs::remove_file(&target)
                    .with_context(|| format!("cannot delete {}", target.display()))?,
                Err(_) => {}
            },
            Op::Put {
                entry: Entry::Dir { mode },
                ..
            } => {
                match target.symlink_metadata() {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => bail!("{} is in the way of a directory", target.display()),
                    Err(_) => fs::create_dir(&target)
                        .with_context(|| format!("cannot create {}", target.display()))?,
                }
                fs::set_permissions(&target, fs::Permissions::from_mode(*mode))
                    .with_context(|| format!("cannot chmod {}", target.display()))?;
            }
            Op::Put { .. } => {
                let staged = stage.join(i.to_string());
                if staged.symlink_metadata().is_ok() {
                    if target.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                        bail!("{} is a directory in the way of a file", target.display());
                    }
                    fs::rename(&staged, &target)
                        .with_context(|| format!("cannot move {} into place", target.display()))?;
                }
                // else: renamed before a crash
            }
        }
        if first {
            first = false;
            crash_point!("update.mid-write");
        }
    }
    for d in &touched {
        if d.is_dir() {
            sync_dir(d)?;
        }
    }
    if stage.symlink_metadata().is_ok() {
        fs::remove_dir_all(stage).with_context(|| format!("cannot remove {}", stage.display()))?;
    }
    sync_dir(dir)
}

/// Builds a new service directory at `tmp`; `fsync`: each file and directory synced
/// (else the caller syncs the filesystem before renaming it into place).
fn build_new(
    live: &Path,
    tmp: &Path,
    plan: &ServicePlan,
    contents: &Contents,
    fsync: bool,
) -> Result<()> {
    fs::create_dir_all(live)
        .with_context(|| format!("cannot create live tree {}", live.display()))?;
    if tmp.symlink_metadata().is_ok() {
        fs::remove_dir_all(tmp).with_context(|| format!("cannot clear {}", tmp.display()))?;
    }
    fs::create_dir(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    fs::set_permissions(tmp, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot chmod {}", tmp.display()))?;
    let mut dirs = vec![tmp.to_path_buf()];
    let mut first = true;
    for op in &plan.ops {
        let Op::Put { path, entry } = op else {
            continue;
        };
        let target = tmp.join(path);
        match entry {
            Entry::Dir { mode } => {
                fs::create_dir(&target)
                    .with_context(|| format!("cannot create {}", target.display()))?;
                fs::set_permissions(&target, fs::Permissions::from_mode(*mode))
                    .with_context(|| format!("cannot chmod {}", target.display()))?;
                dirs.push(target);
            }
            Entry::File { mode, hash, .. } => {
                write_file_then(&target, content(contents, hash, path)?, *mode, fsync)?
            }
            Entry::Symlink { target: to } => std::os::unix::fs::symlink(to, &target)
                .with_context(|| format!("cannot create {}", target.display()))?,
        }
        if first {
            first = false;
            crash_point!("create.mid-build");
        }
    }
    if !fsync {
        return Ok(());
    }
    for d in dirs.iter().rev() {
        sync_dir(d)?;
    }
    sync_dir(live)
}

impl Exec<'_> {
    /// Gives up an interrupted update that has written nothing yet (journaled step
    /// before `staged`): removes its stage, starts again what it stopped and drops its
    /// journal entry, so the service is planned afresh from disk.
    pub fn abandon_update(&mut self, plan: &ServicePlan) -> Result<()> {
        let stage = self.domain.live.host.join(&plan.name).join(STAGE);
        if stage.symlink_metadata().is_ok() {
            fs::remove_dir_all(&stage)
                .with_context(|| format!("cannot remove {}", stage.display()))?;
        }
        let mut down = Vec::new();
        for part in self.parts_to_restart(plan) {
            if !self.part_up(&plan.name, part)? {
                down.push(part);
            }
        }
        let errors = self.start_parts(&plan.name, &down);
        self.db.journal_drop(&plan.domain, &plan.name)?;
        match errors.into_iter().next() {
            Some(e) => Err(e.context(format!(
                "{} was stopped for an update that was given up, and did not start again",
                plan.name
            ))),
            None => Ok(()),
        }
    }
}

impl Exec<'_> {
    /// Creates new services together (a fresh run: journaled `planned`, nothing done
    /// yet). The steps are those of a single create, each taken for the whole batch:
    /// build every directory under its dot-name; make all of it durable with one
    /// `syncfs` of the live tree's filesystem; journal `staged` for all in one
    /// transaction; rename each into place (the point of no return) and sync the live
    /// tree once; journal `written`; link; journal `started`. Content is durable before
    /// any rename and every step is journaled before the next begins, so a crash
    /// anywhere is finished service by service by [`Exec::execute`], as for one create.
    /// One result per plan, in order.
    pub fn create_batch(&mut self, plans: &[(&ServicePlan, &Contents)]) -> Vec<Result<Done>> {
        let live = self.domain.live.host.clone();
        let mut results: Vec<Option<Result<Done>>> = plans.iter().map(|_| None).collect();
        let key = |i: usize| (plans[i].0.domain.as_str(), plans[i].0.name.as_str());
        let mut built = Vec::new();
        for (i, (plan, contents)) in plans.iter().enumerate() {
            let tmp = new_dir(&live, &plan.name);
            match build_new(&live, &tmp, plan, contents, false) {
                Ok(()) => built.push(i),
                Err(e) => {
                    let _ = fs::remove_dir_all(&tmp);
                    let _ = self.db.journal_drop(&plan.domain, &plan.name);
                    results[i] = Some(Err(e.context("nothing was created")));
                }
            }
        }
        if !built.is_empty()
            && let Err(e) = sync_fs(&live)
        {
            for &i in &built {
                let plan = plans[i].0;
                let _ = fs::remove_dir_all(new_dir(&live, &plan.name));
                let _ = self.db.journal_drop(&plan.domain, &plan.name);
                results[i] = Some(Err(anyhow::anyhow!("{e:#}").context("nothing was created")));
            }
            built.clear();
        }
        let keys: Vec<(&str, &str)> = built.iter().map(|&i| key(i)).collect();
        if let Err(e) = self.db.journal_steps(&keys, &Step::Staged) {
            // left as journaled: the next run builds them again
            for &i in &built {
                results[i] = Some(Err(anyhow::anyhow!("{e:#}")));
            }
            built.clear();
        }
        if !built.is_empty() {
            crash_point!("create.after-build");
        }
        let mut renamed = Vec::new();
        for &i in &built {
            let plan = plans[i].0;
            let tmp = new_dir(&live, &plan.name);
            let dest = live.join(&plan.name);
            if dest.symlink_metadata().is_ok() {
                let _ = fs::remove_dir_all(&tmp);
                let _ = self.db.journal_drop(&plan.domain, &plan.name);
                results[i] = Some(Err(anyhow::anyhow!(
                    "{} appeared while it was being created; left alone",
                    dest.display()
                )));
                continue;
            }
            // point of no return
            match fs::rename(&tmp, &dest) {
                Ok(()) => renamed.push(i),
                Err(e) => {
                    results[i] = Some(Err(anyhow::Error::new(e).context(format!(
                        "cannot rename {} to {}",
                        tmp.display(),
                        dest.display()
                    ))))
                }
            }
        }
        if !renamed.is_empty() {
            if let Err(e) = sync_dir(&live) {
                for &i in &renamed {
                    results[i] = Some(Err(anyhow::anyhow!("{e:#}")));
                }
                renamed.clear();
            } else {
                crash_point!("create.after-rename");
            }
        }
        let keys: Vec<(&str, &str)> = renamed.iter().map(|&i| key(i)).collect();
        if let Err(e) = self.db.journal_steps(&keys, &Step::Written) {
            for &i in &renamed {
                results[i] = Some(Err(anyhow::anyhow!("{e:#}")));
            }
            renamed.clear();
        }
        let to_link: Vec<usize> = renamed
            .iter()
            .copied()
            .filter(|&i| plans[i].0.link)
            .collect();
        let names: Vec<&str> = to_link.iter().map(|&i| plans[i].0.name.as_str()).collect();
        let mut link_failed = std::collections::BTreeSet::new();
        for (&i, res) in to_link.iter().zip(self.backend.link_many(&names)) {
            if let Err(e) = res {
                let name = &plans[i].0.name;
                results[i] = Some(Err(
                    e.context(format!("created {name}, but cannot enable it"))
                ));
                link_failed.insert(i);
            }
        }
        let linked: Vec<usize> = renamed
            .iter()
            .copied()
            .filter(|i| !link_failed.contains(i))
            .collect();
        let keys: Vec<(&str, &str)> = linked.iter().map(|&i| key(i)).collect();
        match self.db.journal_steps(&keys, &Step::Started) {
            Err(e) => {
                for &i in &linked {
                    results[i] = Some(Err(anyhow::anyhow!("{e:#}")));
                }
            }
            Ok(()) => {
                if !linked.is_empty() {
                    crash_point!("create.after-link");
                }
                for &i in &linked {
                    results[i] = Some(Ok(Done {
                        verb: if plans[i].0.link {
                            "created and enabled"
                        } else {
                            "created (not enabled)"
                        },
                    }));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("internal: create not carried out"))))
            .collect()
    }
}
