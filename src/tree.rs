//! Reading one service directory into entries: regular files (mode, content hash),
//! directories (mode) and symlinks (target, never followed).
//!
//! Stock directories are read strictly: special files, symlinked service directories,
//! bad names, oversized files and symlinks escaping the stock tree are errors naming
//! the path. Live directories skip runtime state (`supervise/`, `event/`, fifos,
//! sockets, our own temporary names): it is never compared, copied or deleted
//! (invariant 3). Reading never writes.

use crate::names;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Deepest nesting accepted inside a service directory.
const MAX_DEPTH: usize = 16;
/// Most entries accepted in one service directory.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Entry {
    File { mode: u32, hash: String, size: u64 },
    Dir { mode: u32 },
    Symlink { target: String },
}

impl Entry {
    pub fn describe(&self) -> &'static str {
        match self {
            Entry::File { .. } => "file",
            Entry::Dir { .. } => "directory",
            Entry::Symlink { .. } => "symlink",
        }
    }
}

/// A service directory: relative path (`run`, `log/run`, `env/PORT`) to entry.
pub type Tree = BTreeMap<String, Entry>;

/// A stock service directory with the content of its files, keyed by hash.
#[derive(Debug, Default, Clone)]
pub struct Stock {
    pub tree: Tree,
    pub contents: HashMap<String, Vec<u8>>,
}

pub fn hash_bytes(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// True for what a supervisor writes inside a service directory: `supervise`
/// and `event` at the top or in `log/`.
pub fn is_runtime(rel: &str) -> bool {
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", rel),
    };
    (parent.is_empty() || parent == "log") && (name == "supervise" || name == "event")
}

/// True when `rel` belongs to the logger (`log` itself excluded: adding or
/// removing the logger changes the service).
pub fn is_logger(rel: &str) -> bool {
    rel.starts_with("log/")
}

enum Side<'a> {
    Stock {
        tree_root: &'a Path,
        max_file_size: u64,
        contents: &'a mut HashMap<String, Vec<u8>>,
    },
    Live,
}

/// Reads `STOCKTREE/NAME`. `Ok(None)` when it does not exist.
pub fn read_stock(stock_root: &Path, name: &str, max_file_size: u64) -> Result<Option<Stock>> {
    names::check_service_name(name)?;
    let dir = stock_root.join(name);
    if !top_dir(&dir, "stock")? {
        return Ok(None);
    }
    let mut stock = Stock::default();
    let mut side = Side::Stock {
        tree_root: stock_root,
        max_file_size,
        contents: &mut stock.contents,
    };
    walk(&dir, "", 0, &mut stock.tree, &mut side)?;
    Ok(Some(stock))
}

/// Reads `LIVETREE/NAME`, skipping runtime state. `Ok(None)` when it does not exist.
pub fn read_live(live_root: &Path, name: &str) -> Result<Option<Tree>> {
    names::check_service_name(name)?;
    let dir = live_root.join(name);
    if !top_dir(&dir, "live")? {
        return Ok(None);
    }
    let mut tree = Tree::new();
    walk(&dir, "", 0, &mut tree, &mut Side::Live)?;
    Ok(Some(tree))
}

/// Lists the service names directly under a tree (missing tree: none). Names that
/// fail the checks are returned in the second list with the reason.
/// Service names found under a tree, and refused names with the reason.
pub type Listing = (Vec<String>, Vec<(String, String)>);

pub fn list_services(root: &Path) -> Result<Listing> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let rd = match fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((good, bad)),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", root.display())),
    };
    for ent in rd {
        let ent = ent.with_context(|| format!("cannot list {}", root.display()))?;
        let os = ent.file_name();
        let Some(name) = os.to_str() else {
            bad.push((
                os.to_string_lossy().into_owned(),
                "name is not valid UTF-8".into(),
            ));
            continue;
        };
        if name.starts_with(names::TEMP_PREFIX) {
            continue;
        }
        match names::check_service_name(name) {
            Ok(()) => good.push(name.to_string()),
            Err(e) => {
                if !name.starts_with('.') {
                    bad.push((name.to_string(), e.to_string()));
                }
            }
        }
    }
    good.sort();
    Ok((good, bad))
}

fn top_dir(dir: &Path, side: &str) -> Result<bool> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            bail!(
                "{side} service directory {} is a symlink (refusing to follow it)",
                dir.display()
            )
        }
        Ok(m) if !m.is_dir() => bail!(
            "{side} service directory {} is not a directory",
            dir.display()
        ),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e)
            .with_context(|| format!("cannot read {side} service directory {}", dir.display())),
    }
}

fn walk(dir: &Path, prefix: &str, depth: usize, tree: &mut Tree, side: &mut Side) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!("{}: nested deeper than {MAX_DEPTH} levels", dir.display());
    }
    let rd =
        fs::read_dir(dir).with_context(|| format!("cannot read directory {}", dir.display()))?;
    let mut names_here = Vec::new();
    for ent in rd {
        names_here.push(
            ent.with_context(|| format!("cannot read directory {}", dir.display()))?
                .file_name(),
        );
    }
    names_here.sort();
    for os in names_here {
        let path = dir.join(&os);
        let name = names::utf8(&os).with_context(|| format!("{}", path.display()))?;
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        if is_runtime(&rel) {
            continue;
        }
        if matches!(side, Side::Live) && name.starts_with(names::TEMP_PREFIX) {
            continue;
        }
        names::check_entry_name(name).with_context(|| format!("{}", path.display()))?;
        let meta = fs::symlink_metadata(&path)
            .with_context(|| format!("cannot stat {}", path.display()))?;
        let ft = meta.file_type();
        let mode = meta.mode() & 0o7777;
        if ft.is_symlink() {
            let target = fs::read_link(&path)
                .with_context(|| format!("cannot read symlink {}", path.display()))?;
            let target_str = names::utf8(target.as_os_str())
                .with_context(|| format!("symlink {}", path.display()))?
                .to_string();
            if let Side::Stock { tree_root, .. } = side {
                check_stock_link(tree_root, dir, &target).with_context(|| {
                    format!("stock symlink {} -> {}", path.display(), target_str)
                })?;
            }
            tree.insert(rel, Entry::Symlink { target: target_str });
        } else if ft.is_dir() {
            tree.insert(rel.clone(), Entry::Dir { mode });
            walk(&path, &rel, depth + 1, tree, side)?;
        } else if ft.is_file() {
            let entry = match side {
                Side::Stock {
                    max_file_size,
                    contents,
                    ..
                } => {
                    if meta.len() > *max_file_size {
                        bail!(
                            "stock file {} is {} bytes (limit {})",
                            path.display(),
                            meta.len(),
                            max_file_size
                        );
                    }
                    let data = read_file(&path, *max_file_size)?;
                    let hash = hash_bytes(&data);
                    let size = data.len() as u64;
                    contents.insert(hash.clone(), data);
                    Entry::File { mode, hash, size }
                }
                Side::Live => {
                    let (hash, size) = hash_file(&path)?;
                    Entry::File { mode, hash, size }
                }
            };
            tree.insert(rel, entry);
        } else if matches!(side, Side::Live) {
            // fifos and sockets in a live directory belong to the supervisor
            continue;
        } else {
            let what = if ft.is_fifo() {
                "a fifo"
            } else if ft.is_socket() {
                "a socket"
            } else if ft.is_block_device() || ft.is_char_device() {
                "a device node"
            } else {
                "of an unknown type"
            };
            bail!(
                "stock entry {} is {what}; only files, directories and symlinks are supported",
                path.display()
            );
        }
        if tree.len() > MAX_ENTRIES {
            bail!("{}: more than {MAX_ENTRIES} entries", dir.display());
        }
    }
    Ok(())
}

/// Stock symlinks are copied verbatim and never followed; refuse the ones that would
/// point a supervisor outside the stock tree (relative escape) or at kernel files.
fn check_stock_link(tree_root: &Path, link_dir: &Path, target: &Path) -> Result<()> {
    if target.as_os_str().is_empty() {
        bail!("empty symlink target");
    }
    if target.is_absolute() {
        for bad in ["/dev", "/proc", "/sys"] {
            if target.starts_with(bad) {
                bail!("points into {bad}");
            }
        }
        return Ok(());
    }
    let mut at: PathBuf = link_dir
        .strip_prefix(tree_root)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    for c in target.components() {
        match c {
            Component::ParentDir if !at.pop() => {
                bail!("points outside the stock tree {}", tree_root.display());
            }
            Component::Normal(s) => at.push(s),
            _ => {}
        }
    }
    Ok(())
}

fn open_nofollow(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot read {}", path.display()))
}

fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = open_nofollow(path)?;
    let mut data = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if data.len() as u64 > limit {
        bail!(
            "file {} grew past the limit of {limit} bytes while being read",
            path.display()
        );
    }
    Ok(data)
}

/// Content hash of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut f = open_nofollow(path)?;
    let mut h = Sha256::new();
    let mut buf = [0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn runtime_names() {
        assert!(is_runtime("supervise"));
        assert!(is_runtime("log/supervise"));
        assert!(is_runtime("event"));
        assert!(!is_runtime("env/supervise"));
        assert!(!is_runtime("run"));
    }

    #[test]
    fn reads_stock_and_live() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("stock/foo");
        fs::create_dir_all(s.join("log")).unwrap();
        fs::write(s.join("run"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(s.join("run"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(s.join("log/run"), "x").unwrap();
        symlink("/lib/runit/finish-exec", s.join("finish")).unwrap();
        fs::create_dir(s.join("supervise")).unwrap();
        let st = read_stock(&t.path().join("stock"), "foo", 1024)
            .unwrap()
            .unwrap();
        let keys: Vec<_> = st.tree.keys().cloned().collect();
        assert_eq!(keys, ["finish", "log", "log/run", "run"]);
        assert!(matches!(st.tree["run"], Entry::File { mode: 0o755, .. }));
        assert_eq!(st.contents.len(), 2);
        assert!(
            read_stock(&t.path().join("stock"), "nope", 1024)
                .unwrap()
                .is_none()
        );
        assert!(read_stock(&t.path().join("stock"), "foo", 3).is_err());

        nix::unistd::mkfifo(
            &s.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let err = read_stock(&t.path().join("stock"), "foo", 1024).unwrap_err();
        assert!(format!("{err:#}").contains("is a fifo"), "{err:#}");
        let live = read_live(&t.path().join("stock"), "foo").unwrap().unwrap();
        assert!(!live.contains_key("fifo") && !live.contains_key("supervise"));
    }

    #[test]
    fn refuses_symlinked_service_and_escaping_links() {
        let t = tempfile::tempdir().unwrap();
        let stock = t.path().join("stock");
        fs::create_dir_all(stock.join("a")).unwrap();
        symlink(t.path(), stock.join("b")).unwrap();
        let err = read_stock(&stock, "b", 1024).unwrap_err();
        assert!(err.to_string().contains("is a symlink"));
        symlink("../../../etc/passwd", stock.join("a/run")).unwrap();
        assert!(
            format!("{:#}", read_stock(&stock, "a", 1024).unwrap_err())
                .contains("outside the stock tree")
        );
        fs::remove_file(stock.join("a/run")).unwrap();
        symlink("/dev/sda", stock.join("a/run")).unwrap();
        assert!(format!("{:#}", read_stock(&stock, "a", 1024).unwrap_err()).contains("/dev"));
        fs::remove_file(stock.join("a/run")).unwrap();
        symlink("../a/x", stock.join("a/run")).unwrap();
        read_stock(&stock, "a", 1024).unwrap();
    }
}
