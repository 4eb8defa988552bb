//! Package attribution through libalpm (cargo feature `alpm`): which installed
//! package, at which version, owns a stock path, read from pacman's local database
//! (`ROOT/var/lib/pacman/local`). Read-only: it never takes pacman's `db.lck` (the
//! hook runs while pacman holds it) and never writes under the database directory.
//!
//! libalpm is opened at run time (`dlopen` of `libalpm.so.16`, `.15`, `.14`, `.13`),
//! not linked. A package upgrade that bumps libalpm's soname (pacman 6.0 → 6.1 → 7.0
//! did) then cannot keep `svsettle` from starting in the very transaction that
//! installs the new library: the hook still queues and reconciles, and attribution
//! follows whichever supported libalpm is present. The entry points are a small subset
//! whose C signatures have not changed from libalpm 13 to 16 (`alpm_filelist_contains`
//! gained a `const` in 14, which is the same ABI); `alpm_version()` must report the
//! major of the soname that was opened and one of [`SUPPORTED`], otherwise libalpm is
//! not called at all. The unit tests compile the declarations below against the
//! installed `alpm.h` so a changed signature fails the build's tests, not a user's
//! upgrade.

use anyhow::{Context, Result, bail};
use nix::libc::{self, c_char, c_int, c_void};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// libalpm majors whose subset below was checked: 13 (pacman 6.0), 14 (6.1), 15 (7.0), 16.
pub const SUPPORTED: std::ops::RangeInclusive<u32> = 13..=16;

/// `alpm_list_t` from `alpm_list.h`; only `data` and the list functions are used.
#[repr(C)]
struct AlpmList {
    data: *mut c_void,
    prev: *mut AlpmList,
    next: *mut AlpmList,
}

/// Opaque libalpm objects.
type Handle = c_void;
type Db = c_void;
type Pkg = c_void;
type FileList = c_void;
type File = c_void;

/// The libalpm entry points svsettle uses, resolved from the opened library.
struct Api {
    version: String,
    initialize: unsafe extern "C" fn(*const c_char, *const c_char, *mut c_int) -> *mut Handle,
    release: unsafe extern "C" fn(*mut Handle) -> c_int,
    strerror: unsafe extern "C" fn(c_int) -> *const c_char,
    get_localdb: unsafe extern "C" fn(*mut Handle) -> *mut Db,
    db_get_pkgcache: unsafe extern "C" fn(*mut Db) -> *mut AlpmList,
    list_next: unsafe extern "C" fn(*const AlpmList) -> *mut AlpmList,
    pkg_get_name: unsafe extern "C" fn(*mut Pkg) -> *const c_char,
    pkg_get_version: unsafe extern "C" fn(*mut Pkg) -> *const c_char,
    pkg_get_files: unsafe extern "C" fn(*mut Pkg) -> *mut FileList,
    filelist_contains: unsafe extern "C" fn(*const FileList, *const c_char) -> *mut File,
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string owned by libc.
    let p = unsafe { libc::dlerror() };
    if p.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-NULL, NUL-terminated (above).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Resolves one symbol as a function pointer of type `F`.
///
/// # Safety
/// `F` must be the `extern "C"` function-pointer type of the symbol's C declaration.
unsafe fn sym<F: Copy>(lib: *mut c_void, name: &str) -> Result<F> {
    let cname = CString::new(name).context("symbol name")?;
    // SAFETY: `lib` is a handle from dlopen; `cname` is NUL-terminated.
    let p = unsafe { libc::dlsym(lib, cname.as_ptr()) };
    if p.is_null() {
        bail!("libalpm lacks {name}: {}", dl_error());
    }
    debug_assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: the caller names the matching function-pointer type; sizes are equal.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

impl Api {
    /// Opens the newest supported libalpm present. The library stays loaded for the
    /// life of the process (libalpm's dependencies register exit handlers; unloading
    /// them early is not safe).
    fn open() -> Result<Api> {
        let mut tried = Vec::new();
        for major in SUPPORTED.rev() {
            let soname = format!("libalpm.so.{major}");
            let c = CString::new(soname.as_str()).context("soname")?;
            // SAFETY: dlopen with a NUL-terminated name; RTLD_LOCAL keeps libalpm's
            // symbols (and those of libcurl, gpgme, libarchive) out of the global scope.
            let lib = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            if lib.is_null() {
                tried.push(format!("{soname}: {}", dl_error()));
                continue;
            }
            // SAFETY: `alpm_version` is `const char *alpm_version(void)` in every libalpm.
            let version_fn: unsafe extern "C" fn() -> *const c_char =
                unsafe { sym(lib, "alpm_version")? };
            // SAFETY: returns a static NUL-terminated string.
            let vp = unsafe { version_fn() };
            if vp.is_null() {
                bail!("{soname}: alpm_version() returned nothing");
            }
            // SAFETY: non-NULL, NUL-terminated.
            let version = unsafe { CStr::from_ptr(vp) }.to_string_lossy().into_owned();
            let got: Option<u32> = version.split('.').next().and_then(|m| m.parse().ok());
            if got != Some(major) {
                bail!(
                    "{soname} reports version {version}; refusing to call it (supported: libalpm {}-{})",
                    SUPPORTED.start(),
                    SUPPORTED.end()
                );
            }
            // SAFETY: each type below is the C declaration of that symbol in libalpm
            // 13-16 (checked against alpm.h by the unit tests).
            unsafe {
                return Ok(Api {
                    version,
                    initialize: sym(lib, "alpm_initialize")?,
                    release: sym(lib, "alpm_release")?,
                    strerror: sym(lib, "alpm_strerror")?,
                    get_localdb: sym(lib, "alpm_get_localdb")?,
                    db_get_pkgcache: sym(lib, "alpm_db_get_pkgcache")?,
                    list_next: sym(lib, "alpm_list_next")?,
                    pkg_get_name: sym(lib, "alpm_pkg_get_name")?,
                    pkg_get_version: sym(lib, "alpm_pkg_get_version")?,
                    pkg_get_files: sym(lib, "alpm_pkg_get_files")?,
                    filelist_contains: sym(lib, "alpm_filelist_contains")?,
                });
            }
        }
        bail!(
            "no supported libalpm found (libalpm {}-{}): {}",
            SUPPORTED.start(),
            SUPPORTED.end(),
            tried.join("; ")
        )
    }

    fn cstr(p: *const c_char) -> String {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: libalpm returns NUL-terminated strings it owns.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    }
}

/// A libalpm handle, released on drop.
struct Session<'a> {
    api: &'a Api,
    handle: *mut Handle,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // SAFETY: `handle` came from alpm_initialize and is released exactly once.
        unsafe { (self.api.release)(self.handle) };
    }
}

/// The version of libalpm that would be used, or why none can be.
pub fn library_version() -> Result<String> {
    Api::open().map(|a| a.version)
}

/// For each path (relative to the root, no leading slash, as pacman lists files), the
/// package owning it in the local database of `root`: `"name version"`. Paths no
/// installed package owns (a removed service) are absent. `dbpath` is the database
/// directory on this host (normally `root/var/lib/pacman`).
pub fn owners(
    root: &Path,
    dbpath: &Path,
    paths: &BTreeSet<String>,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if paths.is_empty() {
        return Ok(out);
    }
    // libalpm creates `local/` when it is missing; svsettle must not write there.
    let local = dbpath.join("local");
    if !local.is_dir() {
        bail!("no pacman local database at {}", local.display());
    }
    let api = Api::open()?;
    let croot = CString::new(root.as_os_str().as_bytes())
        .with_context(|| format!("root {} contains a NUL byte", root.display()))?;
    let cdb = CString::new(dbpath.as_os_str().as_bytes())
        .with_context(|| format!("database path {} contains a NUL byte", dbpath.display()))?;
    let mut err: c_int = 0;
    // SAFETY: NUL-terminated paths; `err` is a valid out-pointer.
    let handle = unsafe { (api.initialize)(croot.as_ptr(), cdb.as_ptr(), &mut err) };
    if handle.is_null() {
        // SAFETY: alpm_strerror accepts any error number.
        let why = Api::cstr(unsafe { (api.strerror)(err) });
        bail!(
            "libalpm {} cannot open the database {}: {why}",
            api.version,
            dbpath.display()
        );
    }
    let session = Session { api: &api, handle };
    // SAFETY: valid handle.
    let db = unsafe { (api.get_localdb)(session.handle) };
    if db.is_null() {
        bail!("libalpm {}: no local database", api.version);
    }
    let wanted: Vec<(&String, CString)> = paths
        .iter()
        .filter_map(|p| CString::new(p.as_str()).ok().map(|c| (p, c)))
        .collect();
    // SAFETY: valid db; the list and the packages in it live as long as the handle.
    let mut it = unsafe { (api.db_get_pkgcache)(db) };
    while !it.is_null() {
        // SAFETY: `it` is a non-NULL node of libalpm's package list.
        let pkg = unsafe { (*it).data };
        if !pkg.is_null() {
            // SAFETY: valid package; the file list belongs to it.
            let files = unsafe { (api.pkg_get_files)(pkg) };
            if !files.is_null() {
                let mut owner = None;
                for (path, cpath) in &wanted {
                    // SAFETY: valid file list and NUL-terminated path.
                    let hit = unsafe { (api.filelist_contains)(files, cpath.as_ptr()) };
                    if hit.is_null() {
                        continue;
                    }
                    let o = owner.get_or_insert_with(|| {
                        // SAFETY: valid package.
                        let name = Api::cstr(unsafe { (api.pkg_get_name)(pkg) });
                        // SAFETY: valid package.
                        let version = Api::cstr(unsafe { (api.pkg_get_version)(pkg) });
                        format!("{name} {version}")
                    });
                    out.insert((*path).clone(), o.clone());
                }
            }
        }
        // SAFETY: `it` is a valid node.
        it = unsafe { (api.list_next)(it) };
    }
    drop(session);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The declarations above, checked by the C compiler against the installed alpm.h:
    /// a libalpm whose subset changed fails here instead of misbehaving at run time.
    #[test]
    fn declarations_match_installed_alpm_h() {
        let t = tempfile::tempdir().unwrap();
        let c = t.path().join("check.c");
        std::fs::write(
            &c,
            r#"
#include <stddef.h>
#include <alpm.h>
#include <alpm_list.h>
#define SAME(f, T) _Static_assert(__builtin_types_compatible_p(__typeof__(&f), T), #f " changed")
SAME(alpm_version, const char *(*)(void));
SAME(alpm_initialize, alpm_handle_t *(*)(const char *, const char *, alpm_errno_t *));
SAME(alpm_release, int (*)(alpm_handle_t *));
SAME(alpm_strerror, const char *(*)(alpm_errno_t));
SAME(alpm_get_localdb, alpm_db_t *(*)(alpm_handle_t *));
SAME(alpm_db_get_pkgcache, alpm_list_t *(*)(alpm_db_t *));
SAME(alpm_list_next, alpm_list_t *(*)(const alpm_list_t *));
SAME(alpm_pkg_get_name, const char *(*)(alpm_pkg_t *));
SAME(alpm_pkg_get_version, const char *(*)(alpm_pkg_t *));
SAME(alpm_pkg_get_files, alpm_filelist_t *(*)(alpm_pkg_t *));
_Static_assert(
    __builtin_types_compatible_p(__typeof__(&alpm_filelist_contains),
        alpm_file_t *(*)(alpm_filelist_t *, const char *))
    || __builtin_types_compatible_p(__typeof__(&alpm_filelist_contains),
        alpm_file_t *(*)(const alpm_filelist_t *, const char *)),
    "alpm_filelist_contains changed");
_Static_assert(sizeof(alpm_errno_t) == sizeof(int), "alpm_errno_t is not int-sized");
_Static_assert(offsetof(alpm_list_t, data) == 0, "alpm_list_t.data moved");
_Static_assert(offsetof(alpm_list_t, prev) == sizeof(void *), "alpm_list_t.prev moved");
_Static_assert(offsetof(alpm_list_t, next) == 2 * sizeof(void *), "alpm_list_t.next moved");
_Static_assert(sizeof(alpm_list_t) == 3 * sizeof(void *), "alpm_list_t changed size");
"#,
        )
        .unwrap();
        // alpm.h includes libarchive's headers for two pointer types; where
        // libarchive-dev is absent, stand-ins (searched after the system's) declare them.
        let stubs = t.path().join("stubs");
        std::fs::create_dir(&stubs).unwrap();
        std::fs::write(stubs.join("archive.h"), "struct archive;\n").unwrap();
        std::fs::write(stubs.join("archive_entry.h"), "struct archive_entry;\n").unwrap();
        let out = Command::new("cc")
            .args(["-fsyntax-only", "-Werror", "-D_FILE_OFFSET_BITS=64", "-x", "c"])
            .arg("-idirafter")
            .arg(&stubs)
            .arg(&c)
            .output()
            .expect("cc (gcc) is needed to check the libalpm declarations: apt-get install gcc libalpm-dev");
        assert!(
            out.status.success(),
            "libalpm declarations differ from the installed alpm.h (libalpm-dev):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::mem::size_of::<AlpmList>(),
            3 * std::mem::size_of::<*mut c_void>()
        );
    }

    #[test]
    fn opens_the_installed_libalpm() {
        let v = library_version().expect("libalpm (apt-get install libalpm13)");
        let major: u32 = v.split('.').next().unwrap().parse().unwrap();
        assert!(SUPPORTED.contains(&major), "{v}");
    }

    #[test]
    fn missing_database_is_an_error_not_a_write() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("var/lib/pacman")).unwrap();
        let paths: BTreeSet<String> = ["usr/share/s6/sv/foo/run".to_string()].into();
        let err = owners(t.path(), &t.path().join("var/lib/pacman"), &paths).unwrap_err();
        assert!(
            format!("{err:#}").contains("no pacman local database"),
            "{err:#}"
        );
        assert!(!t.path().join("var/lib/pacman/local").exists());
    }
}
