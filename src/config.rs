//! Configuration: the embedded default layout, `/etc/svsettle.toml` (or `--config`)
//! merged over it by domain name, and the resolved [`Config`] every later module uses.
//!
//! Paths in the TOML are as seen inside `--root`; [`TreePath`] keeps both that view
//! (for messages, hints and relative scan links) and the host path under the root.
//! Nothing here touches the live trees.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The embedded default: the generic layout of DESIGN.md, one domain per supervisor.
pub const DEFAULT_CONFIG: &str = r#"# svsettle default configuration (embedded; /etc/svsettle.toml is merged over it)
state-dir = "/var/lib/svsettle"

[domain.s6]
backend = "s6"
mode = "copy"
stock = "/usr/share/s6/sv"
live = "/etc/s6/sv"
scan = "/run/service"

[domain.runit]
backend = "runit"
mode = "copy"
stock = "/usr/share/runit/sv"
live = "/etc/sv"
scan = "/etc/service"

[domain.s6-rc]
backend = "s6-rc"
mode = "copy"
stock = "/usr/share/s6-rc/sources"
live = "/etc/s6-rc/sv"
scan = "/run/service"
compiled = "/etc/s6-rc/compiled"
livedir = "/run/s6-rc"
"#;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    state_dir: Option<String>,
    max_file_size: Option<u64>,
    #[serde(default)]
    domain: BTreeMap<String, RawDomain>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDomain {
    enabled: Option<bool>,
    backend: Option<BackendKind>,
    mode: Option<Mode>,
    stock: Option<String>,
    live: Option<String>,
    scan: Option<String>,
    compiled: Option<String>,
    livedir: Option<String>,
    restart: Option<RestartPolicy>,
    enable_new: Option<bool>,
    exclude: Option<Vec<String>>,
    stop_timeout: Option<u64>,
    start_timeout: Option<u64>,
}

impl RawDomain {
    /// Fields set in `over` replace those of `self`.
    fn merge(self, over: RawDomain) -> RawDomain {
        RawDomain {
            enabled: over.enabled.or(self.enabled),
            backend: over.backend.or(self.backend),
            mode: over.mode.or(self.mode),
            stock: over.stock.or(self.stock),
            live: over.live.or(self.live),
            scan: over.scan.or(self.scan),
            compiled: over.compiled.or(self.compiled),
            livedir: over.livedir.or(self.livedir),
            restart: over.restart.or(self.restart),
            enable_new: over.enable_new.or(self.enable_new),
            exclude: over.exclude.or(self.exclude),
            stop_timeout: over.stop_timeout.or(self.stop_timeout),
            start_timeout: over.start_timeout.or(self.start_timeout),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    S6,
    Runit,
    #[serde(rename = "s6-rc")]
    S6Rc,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::S6 => "s6",
            BackendKind::Runit => "runit",
            BackendKind::S6Rc => "s6-rc",
        }
    }
    /// Programs the backend drives; a domain whose programs are missing is skipped.
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            BackendKind::S6 => &["s6-svc", "s6-svstat", "s6-svscanctl"],
            BackendKind::Runit => &["sv"],
            BackendKind::S6Rc => &["s6-rc-compile", "s6-rc-update", "s6-rc"],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Packages own the stock tree; svsettle owns the live tree and merges into it.
    Copy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// A changed running service is stopped, updated and started once.
    OnChange,
    /// A changed running service is left alone and reported as pending a restart.
    Manual,
}

/// A path as configured (inside the root) and where it is on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreePath {
    /// Absolute, normalised, as seen inside the root (`/etc/s6/sv`).
    pub inner: PathBuf,
    /// The same path under `--root` (`/tmp/r/etc/s6/sv`).
    pub host: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub restart: RestartPolicy,
    pub enable_new: bool,
    pub exclude: Vec<String>,
    pub stop_timeout: Duration,
    pub start_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Domain {
    pub name: String,
    pub backend: BackendKind,
    pub mode: Mode,
    pub stock: TreePath,
    pub live: TreePath,
    pub scan: TreePath,
    /// s6-rc only: the compiled-database symlink.
    pub compiled: Option<TreePath>,
    /// s6-rc only: the live state directory (`s6-rc-init -l`).
    pub livedir: Option<TreePath>,
    pub policy: Policy,
    /// Why this domain is not reconciled on this machine (missing programs).
    pub skipped: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub state_dir: TreePath,
    pub max_file_size: u64,
    pub domains: Vec<Domain>,
    /// Where the settings came from, for `status` and `-v`.
    pub source: String,
}

impl Config {
    /// Builds the configuration: the embedded default, then `config_file` (or
    /// `ROOT/etc/svsettle.toml` when present) merged over it by domain name.
    pub fn load(root: &Path, config_file: Option<&Path>) -> Result<Config> {
        let root = if root.as_os_str().is_empty() {
            Path::new("/")
        } else {
            root
        };
        if !root.is_absolute() {
            bail!("--root {}: must be an absolute path", root.display());
        }
        let default: RawConfig =
            toml::from_str(DEFAULT_CONFIG).context("embedded default configuration")?;
        let (file, source) = match config_file {
            Some(p) => (Some(p.to_path_buf()), p.display().to_string()),
            None => {
                let p = root.join("etc/svsettle.toml");
                if p.exists() {
                    let s = p.display().to_string();
                    (Some(p), s)
                } else {
                    (None, "embedded default".to_string())
                }
            }
        };
        let user = match &file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config {}", p.display()))?;
                toml::from_str::<RawConfig>(&text).map_err(|e| {
                    anyhow::anyhow!("config {}: {}", p.display(), e.to_string().trim())
                })?
            }
            None => RawConfig::default(),
        };
        let shown = source.clone();
        Self::resolve(root, default, user, source).map_err(|e| match &file {
            Some(_) => e.context(format!("config {shown}")),
            None => e,
        })
    }

    fn resolve(root: &Path, default: RawConfig, user: RawConfig, source: String) -> Result<Config> {
        let mut raw = default.domain;
        for (name, over) in user.domain {
            let merged = match raw.remove(&name) {
                Some(base) => base.merge(over),
                None => over,
            };
            raw.insert(name, merged);
        }
        let state = user
            .state_dir
            .or(default.state_dir)
            .unwrap_or_else(|| "/var/lib/svsettle".into());
        let state_dir = tree_path(root, "state-dir", &state)?;
        let mut domains = Vec::new();
        for (name, d) in raw {
            if d.enabled == Some(false) {
                continue;
            }
            crate::names::check_domain_name(&name)?;
            domains.push(domain(root, &name, d)?);
        }
        let mut seen: BTreeMap<PathBuf, String> = BTreeMap::new();
        for d in &domains {
            if let Some(other) = seen.insert(d.stock.inner.clone(), d.name.clone()) {
                bail!(
                    "config: domains {} and {} share the stock tree {}",
                    other,
                    d.name,
                    d.stock.inner.display()
                );
            }
        }
        Ok(Config {
            root: root.to_path_buf(),
            state_dir,
            max_file_size: user
                .max_file_size
                .or(default.max_file_size)
                .unwrap_or(16 << 20),
            domains,
            source,
        })
    }

    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.iter().find(|d| d.name == name)
    }

    /// Domains that can be reconciled here (their supervisor programs exist).
    pub fn active_domains(&self) -> impl Iterator<Item = &Domain> {
        self.domains.iter().filter(|d| d.skipped.is_none())
    }

    /// Maps a path inside the root to the domain whose stock tree holds it.
    pub fn stock_domain(&self, inner: &Path) -> Option<(&Domain, PathBuf)> {
        self.domains.iter().find_map(|d| {
            inner
                .strip_prefix(&d.stock.inner)
                .ok()
                .map(|rest| (d, rest.to_path_buf()))
        })
    }
}

fn domain(root: &Path, name: &str, d: RawDomain) -> Result<Domain> {
    let need = |field: &str, v: &Option<String>| -> Result<TreePath> {
        match v {
            Some(v) => tree_path(root, &format!("domain.{name}.{field}"), v),
            None => bail!("config: domain {name}: missing key {field}"),
        }
    };
    let backend = d
        .backend
        .with_context(|| format!("config: domain {name}: missing key backend"))?;
    let opt = |field: &str, v: &Option<String>| -> Result<Option<TreePath>> {
        v.as_deref()
            .map(|v| tree_path(root, &format!("domain.{name}.{field}"), v))
            .transpose()
    };
    let (compiled, livedir) = (opt("compiled", &d.compiled)?, opt("livedir", &d.livedir)?);
    if backend == BackendKind::S6Rc && (compiled.is_none() || livedir.is_none()) {
        bail!("config: domain {name}: backend s6-rc needs compiled and livedir");
    }
    let exclude = d.exclude.unwrap_or_default();
    for e in &exclude {
        crate::names::check_service_name(e)
            .with_context(|| format!("config: domain {name}: exclude"))?;
    }
    let missing: Vec<&str> = backend
        .programs()
        .iter()
        .copied()
        .filter(|p| which(p).is_none())
        .collect();
    let skipped =
        (!missing.is_empty()).then(|| format!("{} not found on PATH", missing.join(", ")));
    Ok(Domain {
        name: name.to_string(),
        backend,
        mode: d.mode.unwrap_or(Mode::Copy),
        stock: need("stock", &d.stock)?,
        live: need("live", &d.live)?,
        scan: need("scan", &d.scan)?,
        compiled,
        livedir,
        policy: Policy {
            restart: d.restart.unwrap_or(RestartPolicy::OnChange),
            enable_new: d.enable_new.unwrap_or(false),
            exclude,
            stop_timeout: Duration::from_secs(d.stop_timeout.unwrap_or(30)),
            start_timeout: Duration::from_secs(d.start_timeout.unwrap_or(10)),
        },
        skipped,
    })
}

/// Checks a configured path and joins it under the root.
pub fn tree_path(root: &Path, what: &str, value: &str) -> Result<TreePath> {
    let p = Path::new(value);
    if !p.is_absolute() {
        bail!("config: {what} = {value:?}: must be an absolute path (as seen inside the root)");
    }
    let mut inner = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(s) => inner.push(s),
            _ => bail!("config: {what} = {value:?}: must not contain . or .."),
        }
    }
    if inner == Path::new("/") {
        bail!("config: {what} = {value:?}: must not be /");
    }
    let host = root.join(inner.strip_prefix("/").unwrap_or(&inner));
    Ok(TreePath { inner, host })
}

/// Finds a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(user: &str) -> Result<Config> {
        let default: RawConfig = toml::from_str(DEFAULT_CONFIG)?;
        let user: RawConfig = toml::from_str(user)?;
        Config::resolve(Path::new("/r"), default, user, "test".into())
    }

    #[test]
    fn embedded_default_has_three_domains() {
        let c = load("").unwrap();
        let names: Vec<_> = c.domains.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["runit", "s6", "s6-rc"]);
        let s6 = c.domain("s6").unwrap();
        assert_eq!(s6.live.host, Path::new("/r/etc/s6/sv"));
        assert_eq!(s6.live.inner, Path::new("/etc/s6/sv"));
        assert!(!s6.policy.enable_new);
    }

    #[test]
    fn user_file_merges_by_name_and_can_disable() {
        let c = load("[domain.s6]\nenable-new = true\nexclude = [\"getty\"]\n[domain.runit]\nenabled = false\n").unwrap();
        assert!(c.domain("runit").is_none());
        let s6 = c.domain("s6").unwrap();
        assert!(s6.policy.enable_new);
        assert_eq!(s6.policy.exclude, ["getty"]);
        assert_eq!(s6.stock.inner, Path::new("/usr/share/s6/sv"));
    }

    #[test]
    fn bad_config_is_refused() {
        assert!(toml::from_str::<RawConfig>("bogus = 1").is_err());
        assert!(toml::from_str::<RawConfig>("[domain.s6]\nenable-new = \"yes\"").is_err());
        assert!(load("[domain.s6]\nlive = \"etc/sv\"").is_err());
        assert!(load("[domain.s6]\nlive = \"/etc/../sv\"").is_err());
        assert!(load("[domain.x]\nbackend = \"s6\"\nstock=\"/a\"\nlive=\"/b\"\nscan=\"/c\"\nexclude=[\"../x\"]").is_err());
        assert!(
            load(
                "[domain.x]\nbackend = \"s6\"\nstock=\"/usr/share/s6/sv\"\nlive=\"/b\"\nscan=\"/c\""
            )
            .is_err()
        );
    }
}
