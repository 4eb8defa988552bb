//! Crash points for the crash-matrix tests. With the `failpoints` feature,
//! `FAILPOINTS="NAME=return"` makes the reconciler kill itself with SIGKILL when it
//! reaches NAME, exactly as a power loss or `kill -9` would stop it there. Without the
//! feature every point compiles to nothing.

/// Every crash point, in execution order. Tests iterate this list (printed by the
/// hidden `svsettle failpoints` command); a test checks it matches the code.
pub const FAILPOINTS: &[&str] = &[
    "journal.after-plan",
    "s6rc.after-compile",
    "s6rc.after-update",
    "s6rc.after-swap",
    "update.after-stop",
    "update.mid-stage",
    "update.after-stage",
    "update.mid-write",
    "update.after-write",
    "update.after-start",
    "create.mid-build",
    "create.after-build",
    "create.after-rename",
    "create.after-link",
    "remove.after-stop",
    "remove.after-rename",
    "remove.after-delete",
    "commit.before",
];

/// Reaching a crash point: with the feature and the point armed, die at once.
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        {
            if fail::eval($name, |_| ()).is_some() {
                $crate::failpoints::die($name);
            }
        }
    };
}

#[cfg(feature = "failpoints")]
pub fn die(name: &str) -> ! {
    eprintln!("svsettle: crash point {name}: killing myself");
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
    std::process::abort()
}

#[cfg(test)]
mod tests {
    #[test]
    fn list_matches_code() {
        let sources = [
            include_str!("apply.rs"),
            include_str!("reconcile.rs"),
            include_str!("backends/s6rc.rs"),
        ]
        .concat();
        let mut in_code: Vec<&str> = sources
            .split("crash_point!(\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .collect();
        in_code.sort();
        in_code.dedup();
        let mut listed: Vec<&str> = super::FAILPOINTS.to_vec();
        listed.sort();
        assert_eq!(in_code, listed);
    }
}
