//! pacman adapter: the PostTransaction hook's `NeedsTargets` paths arrive on stdin,
//! relative to the root, one per line, directories ending in `/`.

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
}
