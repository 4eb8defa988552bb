//! s6 backend: `s6-svok`, `s6-svstat`, `s6-svc` and `s6-svscanctl` on the live
//! service directory (s6-supervise keeps `supervise/` there; the scan directory
//! holds a relative symlink to it).

use super::{Backend, Layout, Part, run, wait_until};
use crate::config::Domain;
use crate::plan::{Run, State};
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::time::Duration;

pub struct S6 {
    l: Layout,
}

impl S6 {
    pub fn new(d: &Domain) -> S6 {
        S6 { l: Layout::new(d) }
    }

    fn dir(&self, name: &str, part: Part) -> PathBuf {
        self.l.dir(name, part)
    }

    fn supervised(dir: &str) -> bool {
        run(&["s6-svok", dir]).map(|o| o.code == 0).unwrap_or(false)
    }

    fn part_state(&self, name: &str, part: Part) -> Result<Run> {
        let dir = self.dir(name, part);
        if !dir.is_dir() {
            return Ok(Run::Unsupervised);
        }
        let d = dir.to_string_lossy();
        if !Self::supervised(&d) {
            return Ok(Run::Unsupervised);
        }
        // A service that is down but wanted up (it crashed; s6-supervise restarts it
        // within a second) counts as up: it must be stopped before its files change.
        let out = run(&["s6-svstat", "-o", "up,wantedup", &d])?;
        match (out.code, out.stdout.trim()) {
            (0, "true true" | "true false" | "false true") => Ok(Run::Up),
            (0, "false false") => Ok(Run::Down),
            (1, _) => Ok(Run::Unsupervised),
            (code, s) => bail!(
                "s6-svstat -o up,wantedup {d} exited {code}: {s} {}",
                out.stderr
            ),
        }
    }

    fn ms(d: Duration) -> String {
        d.as_millis().to_string()
    }
}

impl Backend for S6 {
    fn status(&self, name: &str) -> Result<State> {
        Ok(State {
            main: self.part_state(name, Part::Main)?,
            log: self.part_state(name, Part::Log)?,
        })
    }

    fn stop(&self, name: &str, part: Part) -> Result<()> {
        let dir = self.dir(name, part);
        let d = dir.to_string_lossy();
        let t = Self::ms(self.l.stop_timeout);
        let out = run(&["s6-svc", "-d", "-wD", "-T", &t, &d])?;
        match out.code {
            0 => {}
            99 => {
                // The service ignored SIGTERM past stop-timeout: kill it, then give up.
                let out = run(&["s6-svc", "-k", "-d", "-wD", "-T", "5000", &d])?;
                if out.code != 0 {
                    bail!(
                        "{} {name} did not stop within {} s, nor after SIGKILL ({})",
                        part.words(),
                        self.l.stop_timeout.as_secs(),
                        out.stderr
                    )
                }
            }
            code => bail!("s6-svc -d -wD {d} exited {code}: {}", out.stderr),
        }
        // On a service that was already down (crashed), s6-svc can return before
        // s6-supervise has read the command: wait until it no longer wants it up, so
        // it is not restarted while its files change.
        let settled = wait_until(self.l.stop_timeout, || {
            run(&["s6-svstat", "-o", "up,wantedup", &d])
                .is_ok_and(|o| o.code == 0 && o.stdout.trim() == "false false")
        });
        if !settled {
            bail!(
                "{} {name} still wanted up {} s after s6-svc -d",
                part.words(),
                self.l.stop_timeout.as_secs()
            );
        }
        Ok(())
    }

    fn start(&self, name: &str, part: Part) -> Result<()> {
        let dir = self.dir(name, part);
        let d = dir.to_string_lossy();
        let t = Self::ms(self.l.start_timeout);
        // -wU waits for readiness, which only services with notification-fd report.
        let wait = if dir.join("notification-fd").exists() {
            "-wU"
        } else {
            "-wu"
        };
        let out = run(&["s6-svc", "-u", wait, "-T", &t, &d])?;
        match out.code {
            0 => Ok(()),
            99 => bail!(
                "{} {name} did not come up within {} s",
                part.words(),
                self.l.start_timeout.as_secs()
            ),
            code => bail!("s6-svc -u {wait} {d} exited {code}: {}", out.stderr),
        }
    }

    fn is_linked(&self, name: &str) -> bool {
        self.l.scan.join(name).symlink_metadata().is_ok()
    }

    fn link(&self, name: &str) -> Result<()> {
        self.l.place_link(name)?;
        let scan = self.l.scan.to_string_lossy();
        let out = run(&["s6-svscanctl", "-a", &scan])?;
        if out.code != 0 {
            // No scanner: the link is in place and is picked up when one starts.
            return Ok(());
        }
        // Supervised with a readable status (s6-supervise answers before it writes
        // its first status), the logger too when there is one: a status read right
        // after this returns must not fail.
        let ready = |part: Part| {
            let d = self.dir(name, part).to_string_lossy().into_owned();
            run(&["s6-svstat", &d]).is_ok_and(|o| o.code == 0)
        };
        let has_log = self.dir(name, Part::Log).is_dir();
        if !wait_until(self.l.start_timeout, || {
            ready(Part::Main) && (!has_log || ready(Part::Log))
        }) {
            bail!(
                "s6-svscan did not start a supervisor for {name} within {} s",
                self.l.start_timeout.as_secs()
            );
        }
        Ok(())
    }

    fn unlink(&self, name: &str) -> Result<()> {
        super::remove_scan_link(&self.l.scan.join(name))?;
        let scan = self.l.scan.to_string_lossy();
        let out = run(&["s6-svscanctl", "-an", &scan])?;
        if out.code != 0 {
            return Ok(());
        }
        for part in [Part::Main, Part::Log] {
            let d = self.dir(name, part).to_string_lossy().into_owned();
            if !wait_until(self.l.stop_timeout, || !Self::supervised(&d)) {
                bail!(
                    "the supervisor of {name} ({}) did not exit within {} s",
                    part.words(),
                    self.l.stop_timeout.as_secs()
                );
            }
        }
        Ok(())
    }
}
