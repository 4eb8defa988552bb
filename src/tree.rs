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
use std::time::Duration;

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
    to_hex(&Sha256::digest(data))
}

/// Lowercase hex, as `hex::encode` writes it (without building it char by char).
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xf)]);
    }
    String::from_utf8(out).unwrap_or_default()
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
    Ok(read_stock_cached(stock_root, name, max_file_size, None)?.map(|(stock, _)| stock))
}

/// [`read_stock`] through a stat cache: `cached` is the snapshot the previous read of
/// this service returned. An entry whose `lstat` matches it (device, inode, type,
/// mode, size, mtime and ctime) and was already [`TRUST_AGE`] old then is taken from it
/// without being read or hashed again, and such a directory keeps its listing;
/// everything else is read from disk. Files taken from the cache have no content in
/// [`Stock::contents`] ([`read_stock_file`] reads it when it is needed). Returns the
/// snapshot of this read for the next one.
pub fn read_stock_cached(
    stock_root: &Path,
    name: &str,
    max_file_size: u64,
    cached: Option<&Snapshot>,
) -> Result<Option<(Stock, Snapshot)>> {
    names::check_service_name(name)?;
    let dir = stock_root.join(name);
    let Some(meta) = top_dir(&dir, "stock")? else {
        return Ok(None);
    };
    let mut stock = Stock::default();
    let mut side = Side::Stock {
        tree_root: stock_root,
        max_file_size,
        contents: &mut stock.contents,
    };
    let mut cache = Cache::new(cached, now());
    cache.record("", &meta, &Entry::Dir { mode: 0 });
    walk(
        &dir,
        "",
        0,
        &meta,
        &mut stock.tree,
        &mut side,
        Some(&mut cache),
    )?;
    Ok(Some((stock, cache.finish())))
}

/// The content of one stock file, read again (a file the stat cache answered for).
pub fn read_stock_file(
    stock_root: &Path,
    name: &str,
    rel: &str,
    max_file_size: u64,
) -> Result<Vec<u8>> {
    names::check_service_name(name)?;
    let mut path = stock_root.join(name);
    for seg in rel.split('/') {
        names::check_entry_name(seg).with_context(|| format!("{}/{rel}", path.display()))?;
        path.push(seg);
    }
    read_file(&path, max_file_size)
}

/// Reads `LIVETREE/NAME`, skipping runtime state. `Ok(None)` when it does not exist.
pub fn read_live(live_root: &Path, name: &str) -> Result<Option<Tree>> {
    names::check_service_name(name)?;
    let dir = live_root.join(name);
    let Some(meta) = top_dir(&dir, "live")? else {
        return Ok(None);
    };
    let mut tree = Tree::new();
    walk(&dir, "", 0, &meta, &mut tree, &mut Side::Live, None)?;
    Ok(Some(tree))
}

/// Whether `LIVETREE/NAME` exists, with the checks of [`read_live`] on the directory
/// itself (a symlink or a non-directory is an error), without reading what is in it.
pub fn live_exists(live_root: &Path, name: &str) -> Result<bool> {
    names::check_service_name(name)?;
    Ok(top_dir(&live_root.join(name), "live")?.is_some())
}

/// How old (by ctime) an entry must have been when a snapshot was taken for the stat
/// cache to answer for it: a change made within the same timestamp tick as the
/// snapshot could otherwise keep every field `lstat` shows (the "racy" case).
pub const TRUST_AGE: Duration = Duration::from_secs(2);

/// What `lstat` says about an entry, as far as a stat cache may rely on it: device,
/// inode, type and mode, size, mtime and ctime (user space can set mtime, not ctime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    dev: u64,
    ino: u64,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stat {
    fn of(m: &fs::Metadata) -> Stat {
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            mode: m.mode(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// One read of a stock service directory for the stat cache: when it was taken and,
/// per entry (`""` is the directory itself), its [`Stat`] and what it was read as,
/// sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    taken: (i64, i64),
    entries: Vec<(String, (Stat, Entry))>,
}

const SNAPSHOT_FORMAT: u8 = 1;

impl Snapshot {
    /// A compact binary form (stored in the cache database).
    pub fn encode(&self) -> Vec<u8> {
        fn bytes(out: &mut Vec<u8>, b: &[u8]) {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        let mut out = Vec::with_capacity(64 + self.entries.len() * 160);
        out.push(SNAPSHOT_FORMAT);
        out.extend_from_slice(&self.taken.0.to_le_bytes());
        out.extend_from_slice(&self.taken.1.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (rel, (st, entry)) in &self.entries {
            bytes(&mut out, rel.as_bytes());
            for v in [st.dev, st.ino, st.size] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&st.mode.to_le_bytes());
            for v in [st.mtime.0, st.mtime.1, st.ctime.0, st.ctime.1] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            match entry {
                Entry::File { mode, hash, size } => {
                    // a sha256 in hex is stored as its 32 bytes
                    let raw = hex::decode(hash).ok().filter(|r| r.len() == 32);
                    out.push(if raw.is_some() { 0 } else { 3 });
                    out.extend_from_slice(&mode.to_le_bytes());
                    out.extend_from_slice(&size.to_le_bytes());
                    match raw {
                        Some(raw) => out.extend_from_slice(&raw),
                        None => bytes(&mut out, hash.as_bytes()),
                    }
                }
                Entry::Dir { mode } => {
                    out.push(1);
                    out.extend_from_slice(&mode.to_le_bytes());
                }
                Entry::Symlink { target } => {
                    out.push(2);
                    bytes(&mut out, target.as_bytes());
                }
            }
        }
        out
    }

    /// Whether this snapshot should replace `old` in the cache: something changed, or
    /// `old` holds entries too recent to be trusted, which a newer snapshot may trust.
    pub fn supersedes(&self, old: Option<&Snapshot>) -> bool {
        let Some(old) = old else {
            return true;
        };
        let settled = (old.taken.0 - TRUST_AGE.as_secs() as i64, old.taken.1);
        old.entries != self.entries || old.entries.iter().any(|(_, (st, _))| st.ctime >= settled)
    }

    /// The inverse of [`Snapshot::encode`]; `None` for anything malformed (the cache is
    /// then simply not used).
    pub fn decode(data: &[u8]) -> Option<Snapshot> {
        struct R<'a>(&'a [u8]);
        impl R<'_> {
            fn take(&mut self, n: usize) -> Option<&[u8]> {
                if self.0.len() < n {
                    return None;
                }
                let (a, b) = self.0.split_at(n);
                self.0 = b;
                Some(a)
            }
            fn u8(&mut self) -> Option<u8> {
                Some(self.take(1)?[0])
            }
            fn u32(&mut self) -> Option<u32> {
                Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
            }
            fn u64(&mut self) -> Option<u64> {
                Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
            }
            fn i64(&mut self) -> Option<i64> {
                Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
            }
            fn string(&mut self) -> Option<String> {
                let n = self.u32()? as usize;
                String::from_utf8(self.take(n)?.to_vec()).ok()
            }
        }
        let mut r = R(data);
        if r.u8()? != SNAPSHOT_FORMAT {
            return None;
        }
        let taken = (r.i64()?, r.i64()?);
        let n = r.u32()? as usize;
        let mut entries = Vec::with_capacity(n.min(MAX_ENTRIES + 1));
        for _ in 0..n.min(MAX_ENTRIES + 1) {
            let rel = r.string()?;
            let (dev, ino, size) = (r.u64()?, r.u64()?, r.u64()?);
            let mode = r.u32()?;
            let mtime = (r.i64()?, r.i64()?);
            let ctime = (r.i64()?, r.i64()?);
            let entry = match r.u8()? {
                tag @ (0 | 3) => {
                    let mode = r.u32()?;
                    let size = r.u64()?;
                    let hash = match tag {
                        0 => to_hex(r.take(32)?),
                        _ => r.string()?,
                    };
                    Entry::File { mode, hash, size }
                }
                1 => Entry::Dir { mode: r.u32()? },
                2 => Entry::Symlink {
                    target: r.string()?,
                },
                _ => return None,
            };
            let st = Stat {
                dev,
                ino,
                mode,
                size,
                mtime,
                ctime,
            };
            if entries.last().is_some_and(|(last, _)| *last >= rel) {
                return None;
            }
            entries.push((rel, (st, entry)));
        }
        if !r.0.is_empty() || entries.len() != n {
            return None;
        }
        Some(Snapshot { taken, entries })
    }
}

/// The stat cache of one read: the previous snapshot (when it can be trusted at all)
/// and the one being taken.
struct Cache<'a> {
    old: Option<&'a Snapshot>,
    /// ctime before which an entry of `old` is trusted.
    trusted_before: (i64, i64),
    new: Snapshot,
}

/// The wall clock as (seconds, nanoseconds), as ctime is kept.
fn now() -> (i64, i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_secs() as i64, i64::from(now.subsec_nanos()))
}

impl<'a> Cache<'a> {
    fn new(old: Option<&'a Snapshot>, now: (i64, i64)) -> Cache<'a> {
        // a snapshot from the future (the clock was set back) is not used
        let old = old.filter(|o| o.taken <= now);
        let trusted_before = old.map_or((i64::MIN, 0), |o| {
            (o.taken.0 - TRUST_AGE.as_secs() as i64, o.taken.1)
        });
        Cache {
            old,
            trusted_before,
            new: Snapshot {
                taken: now,
                entries: Vec::new(),
            },
        }
    }

    /// What the previous read found at `rel`, if `meta` shows it unchanged since.
    fn hit(&self, rel: &str, meta: &fs::Metadata) -> Option<&'a Entry> {
        let old = self.old?;
        let i = old
            .entries
            .binary_search_by(|(k, _)| k.as_str().cmp(rel))
            .ok()?;
        let (_, (st, entry)) = &old.entries[i];
        (*st == Stat::of(meta) && st.ctime < self.trusted_before).then_some(entry)
    }

    /// The names in directory `rel` as the previous read listed them, if the directory
    /// is unchanged since (adding, removing or renaming an entry changes its ctime).
    fn listing(&self, rel: &str, meta: &fs::Metadata) -> Option<Vec<std::ffi::OsString>> {
        self.hit(rel, meta)?;
        let old = self.old?;
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        let start = old
            .entries
            .partition_point(|(k, _)| k.as_str() <= prefix.as_str());
        Some(
            old.entries[start..]
                .iter()
                .map(|(k, _)| k)
                .take_while(|k| k.starts_with(&prefix))
                .filter(|k| !k[prefix.len()..].contains('/'))
                .map(|k| std::ffi::OsString::from(&k[prefix.len()..]))
                .collect(),
        )
    }

    fn record(&mut self, rel: &str, meta: &fs::Metadata, entry: &Entry) {
        self.new
            .entries
            .push((rel.to_string(), (Stat::of(meta), entry.clone())));
    }

    /// The snapshot taken (entries sorted: a walk visits `a/b` before `a-b`).
    fn finish(mut self) -> Snapshot {
        self.new.entries.sort_by(|a, b| a.0.cmp(&b.0));
        self.new
    }
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

fn top_dir(dir: &Path, side: &str) -> Result<Option<fs::Metadata>> {
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
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e)
            .with_context(|| format!("cannot read {side} service directory {}", dir.display())),
    }
}

fn walk(
    dir: &Path,
    prefix: &str,
    depth: usize,
    dir_meta: &fs::Metadata,
    tree: &mut Tree,
    side: &mut Side,
    mut cache: Option<&mut Cache<'_>>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!("{}: nested deeper than {MAX_DEPTH} levels", dir.display());
    }
    let listed = cache.as_ref().and_then(|c| c.listing(prefix, dir_meta));
    let names_here = match listed {
        Some(names) => names,
        None => {
            let rd = fs::read_dir(dir)
                .with_context(|| format!("cannot read directory {}", dir.display()))?;
            let mut names_here = Vec::new();
            for ent in rd {
                names_here.push(
                    ent.with_context(|| format!("cannot read directory {}", dir.display()))?
                        .file_name(),
                );
            }
            names_here.sort();
            names_here
        }
    };
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
        let hit = cache.as_ref().and_then(|c| c.hit(&rel, &meta));
        if let Some(entry) = hit.filter(|e| !matches!(e, Entry::Dir { .. })) {
            // unchanged since a read that checked it: same entry, same content
            if let (Entry::File { .. }, Side::Stock { max_file_size, .. }) = (entry, &*side)
                && meta.len() > *max_file_size
            {
                bail!(
                    "stock file {} is {} bytes (limit {})",
                    path.display(),
                    meta.len(),
                    max_file_size
                );
            }
            if let Some(c) = cache.as_mut() {
                c.record(&rel, &meta, entry);
            }
            tree.insert(rel, entry.clone());
        } else if ft.is_symlink() {
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
            let entry = Entry::Symlink { target: target_str };
            if let Some(c) = cache.as_mut() {
                c.record(&rel, &meta, &entry);
            }
            tree.insert(rel, entry);
        } else if ft.is_dir() {
            let entry = Entry::Dir { mode };
            if let Some(c) = cache.as_mut() {
                c.record(&rel, &meta, &entry);
            }
            tree.insert(rel.clone(), entry);
            walk(
                &path,
                &rel,
                depth + 1,
                &meta,
                tree,
                side,
                cache.as_deref_mut(),
            )?;
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
            if let Some(c) = cache.as_mut() {
                c.record(&rel, &meta, &entry);
            }
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
    Ok((to_hex(&h.finalize()), size))
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

    /// `read_stock_cached` as if run at `now` (seconds from the epoch).
    fn read_at(root: &Path, old: Option<&Snapshot>, now: i64) -> (Stock, Snapshot) {
        names::check_service_name("foo").unwrap();
        let dir = root.join("foo");
        let meta = top_dir(&dir, "stock").unwrap().unwrap();
        let mut stock = Stock::default();
        let mut side = Side::Stock {
            tree_root: root,
            max_file_size: 1024,
            contents: &mut stock.contents,
        };
        let mut cache = Cache::new(old, (now, 0));
        cache.record("", &meta, &Entry::Dir { mode: 0 });
        walk(
            &dir,
            "",
            0,
            &meta,
            &mut stock.tree,
            &mut side,
            Some(&mut cache),
        )
        .unwrap();
        (stock, cache.finish())
    }

    #[test]
    fn stat_cache_answers_only_for_unchanged_settled_entries() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("stock");
        let s = root.join("foo");
        fs::create_dir_all(s.join("env")).unwrap();
        fs::write(s.join("run"), "#!/bin/sh\n").unwrap();
        fs::write(s.join("env/A"), "a\n").unwrap();
        symlink("../x", s.join("link")).unwrap();
        let t0 = now().0;
        let plain = read_stock(&root, "foo", 1024).unwrap().unwrap();

        // taken while the files were new: nothing is trusted yet
        let (_, fresh) = read_at(&root, None, t0);
        let (again, snap) = read_at(&root, Some(&fresh), t0 + 1);
        assert_eq!(again.tree, plain.tree);
        assert_eq!(again.contents.len(), 2, "read again");
        assert!(snap.supersedes(Some(&fresh)));

        // taken when they had settled: answered from the cache, listings included
        let (_, settled) = read_at(&root, None, t0 + 10);
        assert_eq!(Snapshot::decode(&settled.encode()), Some(settled.clone()));
        assert_eq!(Snapshot::decode(&settled.encode()[..20]), None);
        let (cached, snap) = read_at(&root, Some(&settled), t0 + 11);
        assert_eq!(cached.tree, plain.tree);
        assert!(cached.contents.is_empty(), "nothing read");
        assert!(!snap.supersedes(Some(&settled)));
        assert_eq!(
            read_stock_file(&root, "foo", "env/A", 1024).unwrap(),
            b"a\n".to_vec()
        );

        // rewritten in place, same size, mtime set back: ctime tells
        let f = fs::OpenOptions::new()
            .write(true)
            .open(s.join("env/A"))
            .unwrap();
        let mtime = f.metadata().unwrap().modified().unwrap();
        std::io::Write::write_all(&mut &f, b"b\n").unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        // a file added (the directory changes too)
        fs::write(s.join("env/B"), "c\n").unwrap();
        let (changed, snap) = read_at(&root, Some(&settled), t0 + 12);
        let fresh_read = read_stock(&root, "foo", 1024).unwrap().unwrap();
        assert_eq!(changed.tree, fresh_read.tree);
        assert_ne!(changed.tree["env/A"], plain.tree["env/A"]);
        assert!(changed.tree.contains_key("env/B"));
        assert_eq!(changed.contents.len(), 2, "only what changed is read");
        assert!(snap.supersedes(Some(&settled)));

        // a file removed
        fs::remove_file(s.join("run")).unwrap();
        let (gone, _) = read_at(&root, Some(&snap), t0 + 13);
        assert!(!gone.tree.contains_key("run"));
        // a snapshot from the future is not used
        let (_, future) = read_at(&root, None, t0 + 100);
        let (all, _) = read_at(&root, Some(&future), t0 + 50);
        assert_eq!(all.contents.len(), 2);
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
