//! pacman adapter: the PostTransaction hook's `NeedsTargets` paths arrive on stdin,
//! relative to the root, sorted, one per line, directories ending in `/`; with the
//! cargo feature `alpm`, each hinted service is attributed to the package (and
//! version) that owns its files in pacman's local database.
//!
//! pacman matches `Target` globs with `fnmatch` without `FNM_PATHNAME`: `*` also
//! matches `/`, so `usr/share/s6/sv/?*` passes every file and directory below the
//! stock tree (`foo/`, `foo/run`, `foo/log/run`), and `usr/share/s6/sv/*` would also
//! pass the stock tree itself, which every package shipping a service owns.

use crate::config::Config;
use crate::queue::{Db, NewHint};
use anyhow::Result;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

/// Parses the hook's stdin into absolute paths inside the root. NUL bytes end a line
/// too; empty lines are skipped; a missing final newline is fine.
pub fn parse_targets(stdin: &[u8]) -> Vec<OsString> {
    stdin
        .split(|b| *b == b'\n' || *b == 0)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut p = Vec::with_capacity(l.len() + 1);
            if !l.starts_with(b"/") {
                p.push(b'/');
            }
            p.extend_from_slice(l);
            OsString::from_vec(p)
        })
        .collect()
}

/// Drops hints that name a whole domain. pacman passes a stock tree directory itself
/// only because some package in the transaction owns it (all do, as a parent of their
/// services); it says nothing about which service changed, and rescanning the whole
/// tree on every transaction would cost a full walk for no information.
pub fn keep_service_hints(hints: &mut Vec<NewHint>) {
    hints.retain(|h| !h.service.is_empty());
}

/// How changes are attributed to packages on this machine, for `-v`.
pub fn attribution() -> String {
    #[cfg(feature = "alpm")]
    {
        match super::alpm::library_version() {
            Ok(v) => format!("through libalpm {v}"),
            Err(e) => format!("unavailable: {e:#}"),
        }
    }
    #[cfg(not(feature = "alpm"))]
    {
        "not built in (cargo feature alpm)".to_string()
    }
}

/// Sets `package` on every hint: `"name version"` of the installed packages owning the
/// hinted files of its service (joined with ", " when a service is split between
/// packages, e.g. right after a file moved). A service no installed package owns any
/// more (removed) keeps the package svsettle last recorded for it. An error means no
/// attribution, never a failed hook.
#[cfg(feature = "alpm")]
pub fn attribute(cfg: &Config, db: &Db, hints: &mut [NewHint]) -> Result<()> {
    use std::collections::{BTreeMap, BTreeSet};
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    let files: BTreeSet<String> = hints
        .iter()
        .filter(|h| !h.path.ends_with('/'))
        .map(|h| rel(&h.path))
        .collect();
    let dbpath = cfg.root.join("var/lib/pacman");
    let owners = super::alpm::owners(&cfg.root, &dbpath, &files)?;
    let mut per: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for h in hints.iter() {
        let key = (h.domain.clone(), h.service.clone());
        let entry = per.entry(key).or_default();
        if let Some(o) = owners.get(&rel(&h.path)) {
            entry.insert(o.clone());
        }
    }
    for ((domain, service), pkgs) in per.iter_mut() {
        if pkgs.is_empty()
            && let Some(p) = last_package(db, domain, service)?
        {
            pkgs.insert(p);
        }
    }
    for h in hints.iter_mut() {
        h.package = per
            .get(&(h.domain.clone(), h.service.clone()))
            .filter(|p| !p.is_empty())
            .map(|p| p.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    Ok(())
}

/// Without the `alpm` feature hints carry no package.
#[cfg(not(feature = "alpm"))]
pub fn attribute(_cfg: &Config, _db: &Db, _hints: &mut [NewHint]) -> Result<()> {
    Ok(())
}

/// The package svsettle last recorded for a service (its history), e.g. the version
/// that shipped a service which a removal just took away.
#[cfg(feature = "alpm")]
fn last_package(db: &Db, domain: &str, service: &str) -> Result<Option<String>> {
    Ok(db
        .history(50, Some(service))?
        .into_iter()
        .rev()
        .filter(|r| r.domain == domain)
        .find_map(|r| r.package))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_targets(
            b"usr/share/s6/sv/foo/\nusr/share/s6/sv/foo/run\0usr/share/s6/sv/bar/run",
        );
        assert_eq!(
            t,
            [
                "/usr/share/s6/sv/foo/",
                "/usr/share/s6/sv/foo/run",
                "/usr/share/s6/sv/bar/run"
            ]
        );
    }

    #[test]
    fn whole_domain_hints_are_dropped() {
        let cfg = Config::load(std::path::Path::new("/nonexistent-root"), None).unwrap();
        let paths =
            parse_targets(b"usr/share/s6/sv/\nusr/share/s6/sv/foo/\nusr/share/s6/sv/foo/run\n");
        let refs: Vec<&std::ffi::OsStr> = paths.iter().map(|p| p.as_os_str()).collect();
        let mut m = super::super::map_paths(&cfg, &refs, "pacman", "t");
        assert_eq!(m.hints.len(), 3);
        keep_service_hints(&mut m.hints);
        assert_eq!(m.hints.len(), 2);
        assert!(m.hints.iter().all(|h| h.service == "foo"));
    }
}
