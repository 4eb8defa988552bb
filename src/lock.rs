//! One reconciler at a time (invariant 7): an exclusive flock on
//! `STATE/reconcile.lock`, held for the whole run and released by the kernel when the
//! process ends, however it ends. Enqueueing never takes it.

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::Write;
use std::path::Path;

pub struct Lock {
    _lock: Flock<File>,
}

impl Lock {
    /// `Ok(None)` when another reconciler holds the lock and `wait` is false.
    pub fn acquire(state_dir: &Path, wait: bool) -> Result<Option<Lock>> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let path = state_dir.join("reconcile.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(&path)
            .with_context(|| format!("cannot open lock {}", path.display()))?;
        let arg = if wait {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockExclusiveNonblock
        };
        match Flock::lock(file, arg) {
            Ok(mut lock) => {
                let _ = lock.set_len(0);
                let _ = writeln!(*lock, "{}", std::process::id());
                Ok(Some(Lock { _lock: lock }))
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
    }

    /// The pid written by the current holder, for the "is running" message.
    pub fn holder(state_dir: &Path) -> Option<u32> {
        std::fs::read_to_string(state_dir.join("reconcile.lock"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}
