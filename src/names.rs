//! Name checks for services, domains and entries inside a service directory
//! (invariant 6: no `/`, no `..`, no leading dot, no control characters).
//! Pure functions; every caller turns a refusal into an error naming the thing.

use anyhow::{Result, bail};

/// Longest service name accepted; scanners and s6-rc keep names short.
pub const MAX_NAME: usize = 128;
/// Prefix of every temporary name svsettle creates inside a live tree.
pub const TEMP_PREFIX: &str = ".svsettle-";

fn check_common(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("empty {kind} name");
    }
    if name.len() > MAX_NAME {
        bail!(
            "{kind} name {:?}… is {} bytes long (limit {MAX_NAME})",
            &name[..name.char_indices().nth(16).map_or(name.len(), |(i, _)| i)],
            name.len()
        );
    }
    if name.contains('/') {
        bail!("{kind} name {name:?} contains '/'");
    }
    if name == "." || name == ".." {
        bail!("{kind} name {name:?} is not a name");
    }
    if name.chars().any(|c| c.is_control()) {
        bail!("{kind} name {name:?} contains a control character");
    }
    Ok(())
}

/// A service name: a directory name directly under a stock or live tree.
pub fn check_service_name(name: &str) -> Result<()> {
    check_common("service", name)?;
    if name.starts_with('.') {
        bail!("service name {name:?} starts with '.' (scanners ignore such names)");
    }
    Ok(())
}

pub fn check_domain_name(name: &str) -> Result<()> {
    check_common("domain", name)?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("domain name {name:?}: use letters, digits, '-' and '_'");
    }
    Ok(())
}

/// One component of a path inside a service directory.
pub fn check_entry_name(name: &str) -> Result<()> {
    check_common("file", name)?;
    if name.starts_with(TEMP_PREFIX) {
        bail!(
            "file name {name:?} uses the prefix {TEMP_PREFIX} reserved for svsettle's temporary files"
        );
    }
    Ok(())
}

/// Turns an OS name into UTF-8 or says why not.
pub fn utf8(name: &std::ffi::OsStr) -> Result<&str> {
    match name.to_str() {
        Some(s) => Ok(s),
        None => bail!("name {:?} is not valid UTF-8", name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        for ok in ["foo", "foo-bar", "foo.log", "a_b@1"] {
            check_service_name(ok).unwrap();
        }
        let long = "x".repeat(MAX_NAME + 1);
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\nb",
            "a\u{7f}",
            long.as_str(),
        ] {
            assert!(check_service_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entry_names() {
        check_entry_name(".env").unwrap();
        assert!(check_entry_name(".svsettle-tmp.1").is_err());
        assert!(check_entry_name("a\tb").is_err());
    }
}
