//! Package-manager adapters: turn what a package manager passes (paths on stdin,
//! directories as argv, nothing at all) into hints. They know nothing of
//! supervisors; the reconciler does the rest.

#[cfg(feature = "alpm")]
pub mod alpm;
pub mod pacman;

use crate::config::Config;
use crate::names;
use crate::queue::NewHint;
use anyhow::{Result, bail};
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

/// What became of the paths handed to an adapter.
#[derive(Debug, Default)]
pub struct Mapped {
    pub hints: Vec<NewHint>,
    /// Malformed paths, with the reason (reported as errors).
    pub refused: Vec<(String, String)>,
    /// Well-formed paths under no stock tree (reported, not errors).
    pub ignored: Vec<String>,
}

/// Checks one path as seen inside the root: absolute, no `.`/`..`/`//`, UTF-8,
/// no control characters.
pub fn check_inner_path(raw: &OsStr) -> Result<PathBuf> {
    let Some(s) = raw.to_str() else {
        bail!("not valid UTF-8")
    };
    if s.is_empty() {
        bail!("empty path");
    }
    if !s.starts_with('/') {
        bail!("not an absolute path");
    }
    if s.chars().any(|c| c.is_control()) {
        bail!("contains a control character");
    }
    if s.contains("//") {
        bail!("contains '//'");
    }
    for seg in s.split('/') {
        match seg {
            "." => bail!("contains '.'"),
            ".." => bail!("contains '..'"),
            _ => {}
        }
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(s).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            Component::CurDir => bail!("contains '.'"),
            Component::ParentDir => bail!("contains '..'"),
            Component::Prefix(_) => bail!("not a Unix path"),
        }
    }
    Ok(out)
}

/// Maps stock paths to hints: the first component under a stock tree is the service;
/// the stock tree itself asks for the whole domain.
pub fn map_paths(cfg: &Config, paths: &[&OsStr], source: &str, txn: &str) -> Mapped {
    let mut m = Mapped::default();
    for raw in paths {
        let shown = raw.to_string_lossy().escape_debug().to_string();
        let path = match check_inner_path(raw) {
            Ok(p) => p,
            Err(e) => {
                m.refused.push((shown, e.to_string()));
                continue;
            }
        };
        let Some((domain, rest)) = cfg.stock_domain(&path) else {
            m.ignored.push(shown);
            continue;
        };
        let service = match rest.components().next() {
            None => String::new(),
            Some(c) => {
                let name = c.as_os_str().to_string_lossy().into_owned();
                if let Err(e) = names::check_service_name(&name) {
                    m.refused.push((shown, e.to_string()));
                    continue;
                }
                name
            }
        };
        m.hints.push(NewHint {
            domain: domain.name.clone(),
            service,
            path: path.to_string_lossy().into_owned(),
            source: source.to_string(),
            txn: txn.to_string(),
            package: None,
        });
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn path_checks() {
        assert!(check_inner_path(OsStr::new("/usr/share/s6/sv/foo/run")).is_ok());
        assert!(check_inner_path(OsStr::new("/usr/share/s6/sv/foo/")).is_ok());
        for bad in [
            "usr/share/s6/sv/foo",
            "/usr/share/s6/sv/../x",
            "/usr//share",
            "/a/./b",
            "/a\nb",
            "",
        ] {
            assert!(check_inner_path(OsStr::new(bad)).is_err(), "{bad:?}");
        }
        assert!(check_inner_path(&OsString::from_vec(vec![b'/', 0xff])).is_err());
    }

    #[test]
    fn mapping() {
        let cfg = Config::load(Path::new("/nonexistent-root"), None).unwrap();
        let paths: Vec<&OsStr> = [
            "/usr/share/s6/sv/foo/run",
            "/usr/share/s6/sv",
            "/etc/passwd",
            "/usr/share/s6/sv/.x/run",
        ]
        .iter()
        .map(OsStr::new)
        .collect();
        let m = map_paths(&cfg, &paths, "manual", "");
        assert_eq!(m.hints.len(), 2);
        assert_eq!(m.hints[0].service, "foo");
        assert_eq!(m.hints[1].service, "");
        assert_eq!(m.ignored, ["/etc/passwd"]);
        assert_eq!(m.refused.len(), 1);
    }
}
