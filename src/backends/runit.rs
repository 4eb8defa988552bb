//! runit backend. `runsv` keeps its state in the live service directory: `supervise/`
//! for the service and `log/supervise/` for the logger (one runsv runs both). On Void
//! `supervise` is a symlink into `/run`; it is followed, never created, copied or
//! deleted here. The scan directory holds a relative symlink to the live directory;
//! runsvdir starts a runsv for it when it notices that the scan directory's mtime
//! changed (it looks at most every 5 s), and tells a runsv to exit when its entry goes.
//!
//! Control goes through runsv's own interface, the one `sv` uses, because `sv -w`
//! polls every 420 ms while a service usually stops and starts in a few milliseconds:
//! - `supervise/ok`: a FIFO runsv holds open for reading; it can be opened for writing
//!   (non-blocking) exactly while runsv runs.
//! - `supervise/status`: 20 bytes, replaced by rename: pid (little endian) at 12..16,
//!   `want` (`u`/`d`) at 17, got-TERM at 18, phase (0 down, 1 run, 2 finish) at 19.
//! - `supervise/control`: one-byte commands (`u`, `d`, `k`, `x`), as `sv` writes them.
//!
//! "Down" means what `sv -w down` waits for: no pid and phase down, so `finish` is
//! over. `sv -w SECS up|down|status DIR` (absolute path) is still used for a part with
//! a `check` script (sv runs it to decide that the service is up) and for a status file
//! that is not in runit's format.

use super::{Backend, Layout, Part, run, wait_until};
use crate::config::Domain;
use crate::plan::{Run, State};
use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long runsvdir may take to notice a changed scan directory: it looks every
/// 5 s, and waits one more second when the directory changed within the current second.
const RESCAN: Duration = Duration::from_secs(7);
/// How long a part may take to go down after SIGKILL (its `finish` included).
const KILL_GRACE: Duration = Duration::from_secs(5);

pub struct Runit {
    domain: String,
    l: Layout,
}

/// Where a supervised process is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Down,
    Run,
    Finish,
}

/// What runsv says in `supervise/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sup {
    /// The pid of `run` (phase run) or `finish` (phase finish); 0 when down.
    pid: u32,
    want_up: bool,
    got_term: bool,
    phase: Phase,
}

impl Sup {
    fn parse(b: &[u8]) -> Option<Sup> {
        if b.len() != 20 {
            return None;
        }
        let pid = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        let want_up = match b[17] {
            b'u' => true,
            b'd' | b'x' => false,
            _ => return None,
        };
        let phase = match b[19] {
            0 => Phase::Down,
            1 => Phase::Run,
            2 => Phase::Finish,
            _ => return None,
        };
        Some(Sup {
            pid,
            want_up,
            got_term: b[18] != 0,
            phase,
        })
    }

    /// What `sv -w down` waits for: nothing runs, `finish` included.
    fn is_down(&self) -> bool {
        self.pid == 0 && self.phase == Phase::Down
    }

    /// What `sv -w up` waits for (before any `check` script).
    fn is_up(&self) -> bool {
        self.pid != 0 && self.phase == Phase::Run
    }

    /// Told to go down (`sv down`) and not there yet: `run` got TERM or `finish` runs.
    /// A part started with `sv once` also wants down, but was never sent TERM: it
    /// counts as up, and a restart (`d`, then `u`) leaves it wanted up.
    fn is_stopping(&self) -> bool {
        !self.want_up && !self.is_down() && (self.got_term || self.phase == Phase::Finish)
    }

    fn describe(&self) -> String {
        let phase = match self.phase {
            Phase::Down => "down",
            Phase::Run => "running",
            Phase::Finish => "running finish",
        };
        let mut s = phase.to_string();
        if self.pid != 0 {
            s.push_str(&format!(" (pid {})", self.pid));
        }
        s.push_str(if self.want_up {
            ", want up"
        } else {
            ", want down"
        });
        if self.got_term {
            s.push_str(", got TERM");
        }
        s
    }
}

/// Whether a runsv supervises `dir`: its `supervise/ok` FIFO has a reader.
fn runsv_running(dir: &Path) -> bool {
    let ok = dir.join("supervise/ok");
    match std::fs::metadata(&ok) {
        Ok(m) if m.file_type().is_fifo() => {}
        _ => return false,
    }
    OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(&ok)
        .is_ok()
}

/// `supervise/status` of `dir`; `None` when it is missing or not in runit's format.
fn read_sup(dir: &Path) -> Result<Option<Sup>> {
    let p = dir.join("supervise/status");
    match std::fs::read(&p) {
        Ok(b) => Ok(Sup::parse(&b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

/// Sends one command to the runsv of `dir`, as `sv` does.
fn control(dir: &Path, cmd: u8) -> Result<()> {
    let p = dir.join("supervise/control");
    let is_fifo = std::fs::metadata(&p)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    if !is_fifo {
        bail!("{} is not runsv's control FIFO", p.display());
    }
    let mut f = OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(&p)
        .with_context(|| format!("cannot open {} (runsv not running?)", p.display()))?;
    f.write_all(&[cmd])
        .with_context(|| format!("cannot write {:?} to {}", cmd as char, p.display()))
}

/// Whole seconds for `sv -w`, rounded up, at least 1.
fn secs(d: Duration) -> String {
    d.as_millis().div_ceil(1000).max(1).to_string()
}

/// Why a symlinked `supervise` keeps runsv from starting, if it does.
fn dangling_supervise(dir: &Path) -> Option<String> {
    let s = dir.join("supervise");
    let target = std::fs::read_link(&s).ok()?;
    (!s.exists()).then(|| {
        format!(
            "; {} is a symlink to {}, which does not exist",
            s.display(),
            target.display()
        )
    })
}

/// Whether some runsvdir watches `scan` (paths compared after resolving symlinks, so
/// Void's `/var/service -> /run/runit/runsvdir/current` matches). `None` when the
/// process table cannot be read.
fn runsvdir_watching(scan: &Path) -> Option<bool> {
    let want = std::fs::canonicalize(scan).ok()?;
    let procs = std::fs::read_dir("/proc").ok()?;
    for e in procs.flatten() {
        if !e.file_name().as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty());
        let is_runsvdir = args
            .next()
            .and_then(|a| Path::new(OsStr::from_bytes(a)).file_name())
            .is_some_and(|n| n == "runsvdir");
        if !is_runsvdir {
            continue;
        }
        // runsvdir [-P] dir [log]
        let Some(dir) = args.find(|a| !a.starts_with(b"-")) else {
            continue;
        };
        let dir = Path::new(OsStr::from_bytes(dir));
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            e.path().join("cwd").join(dir)
        };
        if std::fs::canonicalize(&dir).is_ok_and(|d| d == want) {
            return Some(true);
        }
    }
    Some(false)
}

impl Runit {
    /// Waits, until `start` + start-timeout + one rescan, for runsvdir to start the
    /// runsv of a linked service (and of its logger).
    fn wait_linked(&self, name: &str, start: std::time::Instant) -> Result<()> {
        let main = self.dir(name, Part::Main);
        let log = self.dir(name, Part::Log);
        let bound = self.l.start_timeout + RESCAN;
        let limit = bound.saturating_sub(start.elapsed());
        // runsv answers on supervise/ok before it writes supervise/status: wait for
        // both, so a status read right after this returns does not fail.
        let ready = |d: &Path| runsv_running(d) && d.join("supervise/status").exists();
        let supervised = || ready(&main) && (!log.is_dir() || ready(&log));
        if !wait_until(limit, supervised) {
            bail!(
                "runsvdir did not start runsv for {name} within {} s{}",
                bound.as_secs(),
                dangling_supervise(&main)
                    .or_else(|| dangling_supervise(&log))
                    .unwrap_or_default()
            );
        }
        Ok(())
    }

    pub fn new(d: &Domain) -> Runit {
        Runit {
            domain: d.name.clone(),
            l: Layout::new(d),
        }
    }

    fn dir(&self, name: &str, part: Part) -> PathBuf {
        self.l.dir(name, part)
    }

    /// Runs `sv` and fails naming the part, the argv, the exit code and sv's output
    /// (sv reports `fail:`/`timeout:` on stdout and warnings on stderr).
    fn sv(&self, name: &str, part: Part, args: &[&str]) -> Result<super::Output> {
        let mut argv = vec!["sv"];
        argv.extend_from_slice(args);
        let out = run(&argv)?;
        if out.code != 0 {
            let meaning = match out.code {
                100 => "usage or fatal error".to_string(),
                1 => "1 service failed".to_string(),
                n => format!("{n} services failed"),
            };
            let mut said = out.stdout.trim().to_string();
            if !out.stderr.is_empty() {
                if !said.is_empty() {
                    said.push_str("; ");
                }
                said.push_str(&out.stderr);
            }
            bail!(
                "{} {name}: `{}` exited {} ({meaning}): {said}",
                part.words(),
                argv.join(" "),
                out.code
            );
        }
        Ok(out)
    }

    /// Status through `sv status`, for a status file not in runit's format.
    fn sv_state(&self, name: &str, part: Part, d: &str) -> Result<Run> {
        let out = self.sv(name, part, &["status", d])?;
        // "run: DIR: (pid 1) 5s; run: log: (pid 2) 5s": only the part before ';' is ours
        let first = out.stdout.split(';').next().unwrap_or("").trim();
        Ok(match first.split(':').next() {
            Some("run") => Run::Up,
            Some("down") => Run::Down,
            Some("finish") if first.contains("want down") => Run::Down,
            Some("finish") => Run::Up,
            _ => bail!(
                "{} {name}: cannot read `sv status {d}`: {first}",
                part.words()
            ),
        })
    }

    fn part_state(&self, name: &str, part: Part) -> Result<Run> {
        let dir = self.dir(name, part);
        if !dir.is_dir() || !runsv_running(&dir) {
            return Ok(Run::Unsupervised);
        }
        let Some(sup) = read_sup(&dir)? else {
            return self.sv_state(name, part, &dir.to_string_lossy());
        };
        if sup.want_up || !sup.is_stopping() {
            return Ok(if sup.want_up || !sup.is_down() {
                Run::Up
            } else {
                Run::Down
            });
        }
        // Told to stop but not down yet: writing its files now would let `finish`
        // read a half-updated directory, so wait (bounded) until it is down.
        let mut last = sup;
        let down = wait_until(self.l.stop_timeout, || match read_sup(&dir) {
            Ok(Some(s)) => {
                last = s;
                s.is_down() || s.want_up
            }
            _ => false,
        });
        if !down {
            bail!(
                "{} {name} was told to stop but is still {} after {} s",
                part.words(),
                last.describe(),
                self.l.stop_timeout.as_secs()
            );
        }
        Ok(if last.want_up { Run::Up } else { Run::Down })
    }

    fn uses_sv(dir: &Path) -> Result<bool> {
        Ok(dir.join("check").exists() || read_sup(dir)?.is_none())
    }

    /// Polls the status file until `cond` holds or `limit` passes; the last status seen.
    fn wait_sup(dir: &Path, limit: Duration, cond: impl Fn(&Sup) -> bool) -> (bool, Option<Sup>) {
        let mut last = None;
        let ok = wait_until(limit, || match read_sup(dir) {
            Ok(Some(s)) => {
                last = Some(s);
                cond(&s)
            }
            _ => false,
        });
        (ok, last)
    }

    fn stop_with_sv(&self, name: &str, part: Part, d: &str) -> Result<()> {
        let t = secs(self.l.stop_timeout);
        let Err(e) = self.sv(name, part, &["-w", &t, "down", d]) else {
            return Ok(());
        };
        // Ignored SIGTERM past stop-timeout: kill, then give it a bounded while more.
        let grace = secs(KILL_GRACE);
        self.sv(name, part, &["kill", d])
            .and_then(|_| self.sv(name, part, &["-w", &grace, "down", d]))
            .with_context(|| format!("{e:#}; then SIGKILL did not bring it down either"))?;
        self.report_kill(name, part);
        Ok(())
    }

    fn report_kill(&self, name: &str, part: Part) {
        eprintln!(
            "svsettle: {}/{name}: {} ignored SIGTERM for {} s; killed with SIGKILL",
            self.domain,
            part.words(),
            self.l.stop_timeout.as_secs()
        );
    }

    /// After stop-timeout: SIGKILL `run` (runsv's `k`), then a `finish` that hangs too,
    /// until the part is down or `KILL_GRACE` passes.
    fn escalate(&self, name: &str, part: Part, dir: &Path) -> Result<()> {
        let start = Instant::now();
        let mut sent_k = false;
        let mut killed_finish = None;
        let mut last = None;
        loop {
            let sup = read_sup(dir)?;
            match sup {
                Some(s) if s.is_down() && !s.want_up => {
                    self.report_kill(name, part);
                    return Ok(());
                }
                Some(s) if s.phase == Phase::Run && !sent_k => {
                    control(dir, b'k')?;
                    sent_k = true;
                }
                // runsv ignores `k` while `finish` runs: kill the pid it reports for it
                Some(s)
                    if s.phase == Phase::Finish && s.pid != 0 && killed_finish != Some(s.pid) =>
                {
                    if let Ok(raw) = i32::try_from(s.pid) {
                        let pid = nix::unistd::Pid::from_raw(raw);
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    }
                    killed_finish = Some(s.pid);
                }
                _ => {}
            }
            last = sup.or(last);
            if start.elapsed() >= KILL_GRACE {
                bail!(
                    "{} {name} did not stop within {} s, nor {} s after SIGKILL (still {})",
                    part.words(),
                    self.l.stop_timeout.as_secs(),
                    KILL_GRACE.as_secs(),
                    last.map(|s| s.describe())
                        .unwrap_or_else(|| "unknown".into())
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn no_runsv(&self, name: &str, part: Part, dir: &Path) -> anyhow::Error {
        anyhow::anyhow!(
            "{} {name}: no runsv supervises {} (not linked in {}, or runsvdir not running)",
            part.words(),
            dir.display(),
            self.l.scan.display()
        )
    }
}

impl Backend for Runit {
    fn status(&self, name: &str) -> Result<State> {
        Ok(State {
            main: self.part_state(name, Part::Main)?,
            log: self.part_state(name, Part::Log)?,
        })
    }

    fn stop(&self, name: &str, part: Part) -> Result<()> {
        let dir = self.dir(name, part);
        if !runsv_running(&dir) {
            return Err(self.no_runsv(name, part, &dir));
        }
        if read_sup(&dir)?.is_none() {
            return self.stop_with_sv(name, part, &dir.to_string_lossy());
        }
        control(&dir, b'd').with_context(|| format!("cannot stop {} {name}", part.words()))?;
        // want down as well: runsv has read the `d` (no restart is pending)
        let (down, _) = Self::wait_sup(&dir, self.l.stop_timeout, |s| s.is_down() && !s.want_up);
        if down {
            return Ok(());
        }
        self.escalate(name, part, &dir)
    }

    fn start(&self, name: &str, part: Part) -> Result<()> {
        let dir = self.dir(name, part);
        if !runsv_running(&dir) {
            return Err(self.no_runsv(name, part, &dir));
        }
        if Self::uses_sv(&dir)? {
            let d = dir.to_string_lossy();
            self.sv(name, part, &["-w", &secs(self.l.start_timeout), "up", &d])?;
            return Ok(());
        }
        control(&dir, b'u').with_context(|| format!("cannot start {} {name}", part.words()))?;
        let (up, last) = Self::wait_sup(&dir, self.l.start_timeout, |s| s.is_up() && s.want_up);
        if !up {
            bail!(
                "{} {name} did not come up within {} s (still {})",
                part.words(),
                self.l.start_timeout.as_secs(),
                last.map(|s| s.describe())
                    .unwrap_or_else(|| "unknown".into())
            );
        }
        Ok(())
    }

    fn is_linked(&self, name: &str) -> bool {
        self.l.scan.join(name).symlink_metadata().is_ok()
    }

    /// Places the link (its rename changes the scan directory's mtime, which is what
    /// runsvdir looks at), then waits, bounded, until runsv answers for the service.
    fn link(&self, name: &str) -> Result<()> {
        self.link_many(&[name]).pop().unwrap_or(Ok(()))
    }

    /// Places every link, then waits for each runsv within one shared bound: runsvdir
    /// starts all of them on the same rescan.
    fn link_many(&self, names: &[&str]) -> Vec<Result<()>> {
        let placed: Vec<Result<()>> = names.iter().map(|name| self.l.place_link(name)).collect();
        if runsvdir_watching(&self.l.scan) == Some(false) {
            // No scanner: the links are in place and are picked up when one starts.
            return placed;
        }
        let start = std::time::Instant::now();
        names
            .iter()
            .zip(placed)
            .map(|(name, placed)| placed.and_then(|()| self.wait_linked(name, start)))
            .collect()
    }

    /// Removes the link and has runsv exit: runsvdir would tell it to when it notices
    /// the entry is gone (up to `RESCAN` later); runsv's `x`, sent here, is the same
    /// request and also reaches a runsv whose runsvdir is gone. The entry is already
    /// gone, so no rescan can start the service again.
    fn unlink(&self, name: &str) -> Result<()> {
        let link = self.l.scan.join(name);
        super::remove_scan_link(&link)?;
        let main = self.dir(name, Part::Main);
        let log = self.dir(name, Part::Log);
        if runsv_running(&main) {
            control(&main, b'x')
                .with_context(|| format!("cannot tell the runsv of {name} to exit"))?;
        }
        let limit = self.l.stop_timeout + RESCAN;
        if !wait_until(limit, || !runsv_running(&main) && !runsv_running(&log)) {
            bail!(
                "the runsv of {name} did not exit within {} s after its link {} was removed",
                limit.as_secs(),
                link.display()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(pid: u32, want: u8, term: u8, phase: u8) -> Vec<u8> {
        let mut b = vec![0u8; 20];
        b[12..16].copy_from_slice(&pid.to_le_bytes());
        b[17] = want;
        b[18] = term;
        b[19] = phase;
        b
    }

    #[test]
    fn parses_runsv_status() {
        // bytes written by Debian's runsv 2.1.2 for a service ignoring SIGTERM
        let real = [
            0x40, 0, 0, 0, 0x6b, 0x16, 0x4f, 0xd2, 0x15, 0x86, 0xac, 0x6c, 0x33, 0x4d, 0, 0, 0,
            b'd', 1, 1,
        ];
        let s = Sup::parse(&real).unwrap();
        assert_eq!(s.pid, 19763);
        assert!(!s.want_up && s.got_term && s.phase == Phase::Run);
        assert!(s.is_stopping() && !s.is_down() && s.is_up());

        let up = Sup::parse(&status(7, b'u', 0, 1)).unwrap();
        assert!(up.is_up() && !up.is_stopping());
        let down = Sup::parse(&status(0, b'd', 0, 0)).unwrap();
        assert!(down.is_down() && !down.is_stopping());
        let finishing = Sup::parse(&status(9, b'd', 0, 2)).unwrap();
        assert!(finishing.is_stopping() && !finishing.is_down());
        let once = Sup::parse(&status(9, b'd', 0, 1)).unwrap();
        assert!(!once.is_stopping() && !once.is_down());

        assert_eq!(Sup::parse(&[0u8; 18]), None);
        assert_eq!(Sup::parse(&status(1, b'?', 0, 1)), None);
        assert_eq!(Sup::parse(&status(1, b'u', 0, 7)), None);
    }

    #[test]
    fn sv_seconds_round_up() {
        assert_eq!(secs(Duration::from_millis(0)), "1");
        assert_eq!(secs(Duration::from_millis(1500)), "2");
        assert_eq!(secs(Duration::from_secs(30)), "30");
    }
}

/// Cost of driving runsv through `sv` and through its files directly, on a real
/// runsvdir: `cargo test --features failpoints --bin svsettle runit_control_cost -- --ignored --nocapture`.
#[cfg(test)]
mod cost {
    use super::*;
    use crate::config::Config;
    use std::process::{Command, Stdio};

    /// Stops what the measurement started, by pid, even when it panics.
    struct Guard(std::process::Child, PathBuf);

    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = control(&self.1, b'd');
            let _ = control(&self.1, b'x');
            let _ = wait_until(Duration::from_secs(5), || !runsv_running(&self.1));
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_secs_f64() * 1000.0 / f64::from(n)
    }

    #[test]
    #[ignore = "measurement; starts runsvdir and takes minutes"]
    fn runit_control_cost() {
        let n: u32 = std::env::var("RUNIT_COST_CALLS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("etc/sv/m")).unwrap();
        std::fs::create_dir_all(root.join("etc/service")).unwrap();
        std::fs::write(
            root.join("etc/svsettle.toml"),
            "[domain.s6]\nenabled = false\n[domain.s6-rc]\nenabled = false\n",
        )
        .unwrap();
        let run_file = root.join("etc/sv/m/run");
        std::fs::write(&run_file, "#!/bin/sh\nexec sleep 100000\n").unwrap();
        std::fs::set_permissions(
            &run_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let cfg = Config::load(root, None).unwrap();
        let rt = Runit::new(cfg.domain("runit").unwrap());
        let scanner = Command::new("runsvdir")
            .arg(root.join("etc/service"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("runsvdir (Debian package runit) must be installed");
        let _guard = Guard(scanner, root.join("etc/sv/m"));
        let scan = root.join("etc/service");
        assert!(wait_until(Duration::from_secs(5), || runsvdir_watching(
            &scan
        ) == Some(true)));

        let t = Instant::now();
        rt.link("m").unwrap();
        let link_ms = t.elapsed().as_secs_f64() * 1000.0;
        rt.start("m", Part::Main).unwrap();
        let dir = rt.dir("m", Part::Main);
        let d = dir.to_string_lossy().into_owned();

        let st_direct = per_call(n, || {
            assert_eq!(rt.part_state("m", Part::Main).unwrap(), Run::Up);
        });
        let st_sv = per_call(n, || {
            assert_eq!(rt.sv_state("m", Part::Main, &d).unwrap(), Run::Up);
        });
        // runsv sleeps 1 s before reaping a service that ran for less than 1 s, so
        // each service runs 1.1 s (not counted) before it is stopped.
        let cycles = (n / 4).max(1);
        let cycle = |stop: &dyn Fn(), start: &dyn Fn()| {
            let (mut down, mut up) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..cycles {
                std::thread::sleep(Duration::from_millis(1100));
                let t = Instant::now();
                stop();
                down += t.elapsed();
                let t = Instant::now();
                start();
                up += t.elapsed();
            }
            let ms = |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(cycles);
            (ms(down), ms(up))
        };
        let (stop_direct, start_direct) = cycle(&|| rt.stop("m", Part::Main).unwrap(), &|| {
            rt.start("m", Part::Main).unwrap()
        });
        let (stop_sv, start_sv) = cycle(&|| rt.stop_with_sv("m", Part::Main, &d).unwrap(), &|| {
            rt.sv("m", Part::Main, &["-w", "10", "up", &d]).unwrap();
        });
        eprintln!("runit control cost, ms per call:");
        eprintln!("  link until runsv answers: {link_ms:.0} (once; runsvdir looks every 5 s)");
        eprintln!(
            "  status ({n} calls): supervise/ok + supervise/status {st_direct:.3}, `sv status` {st_sv:.3}"
        );
        eprintln!(
            "  stop ({cycles} calls): supervise/control {stop_direct:.1}, `sv -w 30 down` {stop_sv:.1}"
        );
        eprintln!(
            "  start ({cycles} calls): supervise/control {start_direct:.1}, `sv -w 10 up` {start_sv:.1}"
        );

        rt.stop("m", Part::Main).unwrap();
        rt.unlink("m").unwrap();
    }
}
