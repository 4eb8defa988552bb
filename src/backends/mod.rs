//! Supervisor backends behind one small trait. A backend only talks to its
//! supervisor (status, stop and wait, start, link into / unlink from the scan
//! directory); it never decides anything and never writes service files.

use crate::apply::Contents;
use crate::config::{BackendKind, Domain};
use crate::plan::{ServicePlan, State};
use anyhow::{Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub mod runit;
pub mod s6;
pub mod s6rc;

/// The service itself, or its logger (`NAME/log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Log,
}

impl Part {
    pub fn words(self) -> &'static str {
        match self {
            Part::Main => "service",
            Part::Log => "logger",
        }
    }
}

pub trait Backend {
    /// What the supervisor says about the service and its logger.
    fn status(&self, name: &str) -> Result<State>;
    /// Stops one part and waits until it is down and its `finish` has run.
    fn stop(&self, name: &str, part: Part) -> Result<()>;
    /// Starts one part and waits until it is up.
    fn start(&self, name: &str, part: Part) -> Result<()>;
    /// Whether the service has an entry in the scan directory.
    fn is_linked(&self, name: &str) -> bool;
    /// Adds the service to the scan directory and has the scanner pick it up.
    fn link(&self, name: &str) -> Result<()>;
    /// [`Backend::link`] for several services; backends whose scanner notices new
    /// entries late (runsvdir: every 5 s) place every link first and wait once.
    fn link_many(&self, names: &[&str]) -> Vec<Result<()>> {
        names.iter().map(|n| self.link(n)).collect()
    }
    /// Removes the service from the scan directory and waits for its supervisor to go.
    fn unlink(&self, name: &str) -> Result<()>;
    /// False for backends whose supervisor runs a compiled copy (s6-rc): the live tree
    /// may then be written while services run, and restarts happen in `commit_batch`.
    fn restarts_in_place(&self) -> bool {
        true
    }
    /// Once per reconcile, before the live tree of the domain is written, with every
    /// plan that acts and the content it writes. Backends that compile (s6-rc) switch
    /// to the new state here. A plan the backend leaves out is handed to `refuse` with
    /// the cause before anything is switched (the core fails it, its live directory
    /// untouched); an error leaves the system as it was and fails the other plans.
    fn commit_batch(
        &self,
        _run: i64,
        _plans: &[(&ServicePlan, &Contents)],
        _refuse: &mut Refuse<'_>,
    ) -> Result<Committed> {
        Ok(Committed::default())
    }
    /// At the start of every run, before journaled plans are finished: completes or
    /// undoes a switch a crash interrupted, removes leftovers, and names the run whose
    /// batch is current. Journaled plans of another run still at `Planned` were never
    /// switched to: the core rolls them back (they are planned again).
    fn recover_batch(&self) -> Result<Recovered> {
        Ok(Recovered::default())
    }
}

/// Receives a plan that [`Backend::commit_batch`] leaves out, with the cause.
pub type Refuse<'a> = dyn FnMut(&ServicePlan, String) -> Result<()> + 'a;

/// What [`Backend::commit_batch`] switched to.
#[derive(Debug, Default)]
pub struct Committed {
    /// Plans switched to whose service did not come back as it was: their live
    /// directory is written (it is what runs now), then they fail with this cause.
    pub troubled: BTreeMap<String, String>,
    /// What the admin should know beyond the plans.
    pub notes: Vec<String>,
}

/// What [`Backend::recover_batch`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The run whose batch the supervisor runs now, if one of svsettle's.
    pub current_run: Option<i64>,
    pub notes: Vec<String>,
}

pub fn for_domain(domain: &Domain) -> Box<dyn Backend> {
    match domain.backend {
        BackendKind::S6 => Box::new(s6::S6::new(domain)),
        BackendKind::Runit => Box::new(runit::Runit::new(domain)),
        BackendKind::S6Rc => Box::new(s6rc::S6Rc::new(domain)),
    }
}

/// Where a domain's services live and are scanned, and how long to wait for them:
/// what the s6 and runit backends share.
pub struct Layout {
    pub live: PathBuf,
    pub live_inner: PathBuf,
    pub scan: PathBuf,
    pub scan_inner: PathBuf,
    pub stop_timeout: Duration,
    pub start_timeout: Duration,
}

impl Layout {
    pub fn new(d: &Domain) -> Layout {
        Layout {
            live: d.live.host.clone(),
            live_inner: d.live.inner.clone(),
            scan: d.scan.host.clone(),
            scan_inner: d.scan.inner.clone(),
            stop_timeout: d.policy.stop_timeout,
            start_timeout: d.policy.start_timeout,
        }
    }

    /// The live directory of a service or of its logger.
    pub fn dir(&self, name: &str, part: Part) -> PathBuf {
        match part {
            Part::Main => self.live.join(name),
            Part::Log => self.live.join(name).join("log"),
        }
    }

    /// Places the relative scan-directory link of a service.
    pub fn place_link(&self, name: &str) -> Result<()> {
        let target = relative_link(&self.scan_inner, &self.live_inner.join(name));
        place_symlink(&target, &self.scan.join(name))
    }
}

/// Output of a finished child.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a supervisor program; its stdin is closed, both streams captured.
pub fn run(argv: &[&str]) -> Result<Output> {
    let Some((prog, args)) = argv.split_first() else {
        bail!("empty command")
    };
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", argv.join(" ")))?;
    Ok(Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Polls `cond` every 20-100 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The link an svsettle-made scan entry holds: relative, so it resolves the same from
/// inside the root and from outside it.
pub fn relative_link(from_dir: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from_dir.components().collect();
    let to_c: Vec<_> = to.components().collect();
    let common = from
        .iter()
        .zip(to_c.iter())
        .take_while(|(a, b)| a == b)
        .count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for c in &to_c[common..] {
        rel.push(c.as_os_str());
    }
    rel
}

/// Removes a scan-directory entry if it is a symlink; anything else there is the
/// admin's and is left alone with an error.
pub fn remove_scan_link(link: &Path) -> Result<()> {
    use anyhow::Context;
    match std::fs::symlink_metadata(link) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::remove_file(link).with_context(|| format!("cannot remove {}", link.display()))
        }
        Ok(_) => bail!(
            "scan entry {} is not a symlink; leaving it alone",
            link.display()
        ),
        Err(_) => Ok(()),
    }
}

/// Places `link -> target` atomically (temporary name, then rename).
pub fn place_symlink(target: &Path, link: &Path) -> Result<()> {
    use anyhow::Context;
    let dir = link.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create scan directory {}", dir.display()))?;
    let tmp = dir.join(format!(
        "{}link.{}",
        crate::names::TEMP_PREFIX,
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    std::fs::rename(&tmp, link).with_context(|| format!("cannot place {}", link.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links() {
        assert_eq!(
            relative_link(Path::new("/run/service"), Path::new("/etc/s6/sv/foo")),
            Path::new("../../etc/s6/sv/foo")
        );
        assert_eq!(
            relative_link(Path::new("/etc/service"), Path::new("/etc/sv/foo")),
            Path::new("../sv/foo")
        );
    }
}
