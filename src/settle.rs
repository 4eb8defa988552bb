//! The settle gate (invariant 1): is a package transaction running under the root?
//! Each package manager is detected by its own lock: pacman's `db.lck` file, apk's
//! flock on `lib/apk/db/lock`, dpkg's fcntl locks on `lock-frontend` and `lock`.
//! Probing never takes a lock another process could notice for more than an instant.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Names the package manager whose transaction is in progress, if any.
pub fn transaction_in_progress(root: &Path) -> Option<String> {
    let pacman = root.join("var/lib/pacman/db.lck");
    if pacman.exists() {
        return Some(format!("pacman ({} exists)", pacman.display()));
    }
    let apk = root.join("lib/apk/db/lock");
    if let Ok(f) = OpenOptions::new().read(true).open(&apk) {
        let fd = f.as_raw_fd();
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { nix::libc::flock(fd, nix::libc::LOCK_EX | nix::libc::LOCK_NB) };
        if rc != 0 {
            return Some(format!("apk ({} is locked)", apk.display()));
        }
        // closing the file releases our probe lock
    }
    for name in ["var/lib/dpkg/lock-frontend", "var/lib/dpkg/lock"] {
        let p = root.join(name);
        if fcntl_locked(&p) {
            return Some(format!("dpkg ({} is locked)", p.display()));
        }
    }
    None
}

fn fcntl_locked(path: &Path) -> bool {
    let Ok(f) = OpenOptions::new().read(true).open(path) else {
        return false;
    };
    let mut fl = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: F_GETLK only fills in `fl`.
    let rc = unsafe { nix::libc::fcntl(f.as_raw_fd(), nix::libc::F_GETLK, &mut fl) };
    rc == 0 && fl.l_type != nix::libc::F_UNLCK as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacman_lock_file_defers() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(transaction_in_progress(t.path()), None);
        std::fs::create_dir_all(t.path().join("var/lib/pacman")).unwrap();
        std::fs::write(t.path().join("var/lib/pacman/db.lck"), "").unwrap();
        assert!(
            transaction_in_progress(t.path())
                .unwrap()
                .starts_with("pacman")
        );
    }
}
