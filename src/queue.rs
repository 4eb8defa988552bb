//! The durable state in `/var/lib/svsettle/state.db` (SQLite): hints, bases, file
//! contents, the apply journal, conflicts, history and recorded problems.
//!
//! WAL with `synchronous=FULL`, so a committed journal row survives power loss
//! (invariant 5); writers use `BEGIN IMMEDIATE` and a busy timeout, so enqueueing never
//! waits on a reconcile beyond a short write (invariant 7). Migrations are append-only,
//! keyed on `user_version`; a newer schema is refused, a corrupt file moved aside.

use crate::plan::{Conflict, ServicePlan};
use crate::tree::{Snapshot, Tree};
use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `PRAGMA application_id`: "svst".
const APPLICATION_ID: i64 = 0x7376_7374;

/// Append-only. Never edit or remove an entry: databases in the field ran them.
fn migrations() -> Vec<&'static str> {
    vec![
        // 1: the queue of hints, the applied bases with their contents, the journal,
        // conflicts, deferred restarts, history and problems for `status`.
        r#"
        CREATE TABLE hint (
            id INTEGER PRIMARY KEY,
            domain TEXT NOT NULL,
            service TEXT NOT NULL,      -- '' = rescan the whole domain
            path TEXT NOT NULL,
            source TEXT NOT NULL,
            txn TEXT NOT NULL DEFAULT '',
            package TEXT,
            time INTEGER NOT NULL,
            UNIQUE (domain, service, path, source, txn)
        ) STRICT;
        CREATE TABLE blob (hash TEXT PRIMARY KEY, data BLOB NOT NULL) STRICT;
        CREATE TABLE base (
            domain TEXT NOT NULL,
            service TEXT NOT NULL,
            tree TEXT NOT NULL,         -- JSON of tree::Tree; file contents in blob
            package TEXT,
            time INTEGER NOT NULL,
            PRIMARY KEY (domain, service)
        ) STRICT;
        CREATE TABLE journal (
            domain TEXT NOT NULL,
            service TEXT NOT NULL,
            run INTEGER NOT NULL,
            step TEXT NOT NULL,
            plan TEXT NOT NULL,         -- JSON of plan::ServicePlan
            max_hint INTEGER NOT NULL,
            time INTEGER NOT NULL,
            PRIMARY KEY (domain, service)
        ) STRICT;
        CREATE TABLE conflict (
            domain TEXT NOT NULL,
            service TEXT NOT NULL,
            path TEXT NOT NULL,
            detail TEXT NOT NULL,       -- JSON of plan::Conflict
            time INTEGER NOT NULL,
            PRIMARY KEY (domain, service, path)
        ) STRICT;
        CREATE TABLE deferred (
            domain TEXT NOT NULL,
            service TEXT NOT NULL,
            reason TEXT NOT NULL,
            time INTEGER NOT NULL,
            PRIMARY KEY (domain, service)
        ) STRICT;
        CREATE TABLE run (
            id INTEGER PRIMARY KEY,
            started INTEGER NOT NULL,
            finished INTEGER,
            trigger TEXT NOT NULL,
            summary TEXT
        ) STRICT;
        CREATE TABLE history (
            id INTEGER PRIMARY KEY,
            run INTEGER NOT NULL,
            time INTEGER NOT NULL,
            domain TEXT NOT NULL,
            service TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL,
            package TEXT,
            ok INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE problem (
            id INTEGER PRIMARY KEY,
            time INTEGER NOT NULL,
            source TEXT NOT NULL,
            domain TEXT,
            service TEXT,
            message TEXT NOT NULL
        ) STRICT;
        CREATE INDEX hint_service ON hint (domain, service);
        "#,
    ]
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub struct Db {
    conn: Connection,
    pub path: PathBuf,
    /// Set when a corrupt file was moved aside on open.
    pub moved_aside: Option<PathBuf>,
    /// Opened for writing and checked: on close, record how the files are left.
    stamp_on_close: bool,
}

/// `state.db.checked`: the database files (`state.db`, `state.db-wal`: device, inode,
/// size, mtime, ctime) as svsettle last closed them. Found unchanged on open, nothing
/// but svsettle wrote them since a full check, so the integrity check, which reads the
/// whole file, is skipped; anything else (another program, a restored or damaged file,
/// a crash) changes them and gets the check.
fn checked_marker(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.checked", path.display()))
}

fn files_stamp(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let one = |p: &Path| match std::fs::symlink_metadata(p) {
        Ok(m) => Some(format!(
            "{} {} {} {}.{} {}.{}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("-".into()),
        Err(_) => None,
    };
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    Some(format!("{}\n{}\n", one(path)?, one(&wal)?))
}

impl Drop for Db {
    fn drop(&mut self) {
        if !self.stamp_on_close {
            return;
        }
        // close first: the last connection checkpoints and removes the WAL
        let Ok(placeholder) = Connection::open_in_memory() else {
            return;
        };
        let conn = std::mem::replace(&mut self.conn, placeholder);
        if conn.close().is_ok()
            && let Some(stamp) = files_stamp(&self.path)
        {
            let _ = std::fs::write(checked_marker(&self.path), stamp);
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewHint {
    pub domain: String,
    pub service: String,
    pub path: String,
    pub source: String,
    pub txn: String,
    pub package: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PendingService {
    pub domain: String,
    /// '' = the whole domain.
    pub service: String,
    pub max_hint: i64,
    pub hints: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Plan journaled; nothing touched yet.
    Planned,
    /// The running parts were stopped.
    Stopped,
    /// All new content staged beside its target; the point of no return.
    Staged,
    /// Every change is in place.
    Written,
    /// Whatever was up is up again / linked.
    Started,
}

impl Step {
    pub fn as_str(&self) -> &'static str {
        match self {
            Step::Planned => "planned",
            Step::Stopped => "stopped",
            Step::Staged => "staged",
            Step::Written => "written",
            Step::Started => "started",
        }
    }
    fn parse(s: &str) -> Result<Step> {
        Ok(match s {
            "planned" => Step::Planned,
            "stopped" => Step::Stopped,
            "staged" => Step::Staged,
            "written" => Step::Written,
            "started" => Step::Started,
            other => bail!("journal: unknown step {other:?}"),
        })
    }
}

#[derive(Debug, Clone)]
pub struct JournalEntry {
    pub plan: ServicePlan,
    pub step: Step,
    pub run: i64,
    pub max_hint: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    pub id: i64,
    pub run: i64,
    pub time: i64,
    pub domain: String,
    pub service: String,
    pub action: String,
    pub detail: String,
    pub package: Option<String>,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConflictRow {
    pub domain: String,
    pub service: String,
    pub conflict: Conflict,
    pub time: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProblemRow {
    pub time: i64,
    pub source: String,
    pub domain: Option<String>,
    pub service: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub started: i64,
    pub finished: Option<i64>,
    pub trigger: String,
    pub summary: Option<String>,
}

/// What the reconciler records for one service, in one transaction.
pub struct Outcome<'a> {
    pub run: i64,
    pub plan: &'a ServicePlan,
    pub max_hint: i64,
    pub action: &'a str,
    pub detail: &'a str,
    pub ok: bool,
    pub package: Option<&'a str>,
    /// Write a history row (not for "nothing changed" or an already-reported conflict).
    pub history: bool,
}

/// SQLITE_BUSY or SQLITE_LOCKED anywhere in an error's chain.
fn is_busy(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<rusqlite::Error>().is_some_and(|e| {
            matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked)
            )
        })
    })
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase) | Some(rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

impl Db {
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join("state.db")
    }

    /// Opens (creating and migrating) the database. A corrupt file is moved aside and a
    /// new one started; the caller reports `moved_aside`.
    pub fn open(state_dir: &Path) -> Result<Db> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let path = Self::path_in(state_dir);
        match Self::open_at(&path) {
            Ok(db) => Ok(db),
            Err(e)
                if e.downcast_ref::<rusqlite::Error>()
                    .is_some_and(is_corruption) =>
            {
                let mut aside = path.with_file_name(format!("state.db.corrupt-{}", now()));
                for n in 1.. {
                    if aside.symlink_metadata().is_err() {
                        break;
                    }
                    aside = path.with_file_name(format!("state.db.corrupt-{}.{n}", now()));
                }
                std::fs::rename(&path, &aside).with_context(|| {
                    format!(
                        "database {} is corrupt ({e:#}) and cannot be moved aside",
                        path.display()
                    )
                })?;
                for ext in ["-wal", "-shm"] {
                    let side = PathBuf::from(format!("{}{ext}", path.display()));
                    let _ =
                        std::fs::rename(&side, PathBuf::from(format!("{}{ext}", aside.display())));
                }
                let mut db = Self::open_at(&path)?;
                // recorded for `status`, whichever command found it
                let _ = db.record_problem(
                    "database",
                    None,
                    None,
                    &format!(
                        "{} was corrupt ({e:#}); moved aside to {}, a new one started (reconcile --all re-learns the bases)",
                        path.display(),
                        aside.display()
                    ),
                );
                db.moved_aside = Some(aside);
                Ok(db)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens an existing database read-only (`--dry-run`, read commands);
    /// `Ok(None)` when there is none yet.
    pub fn open_read_only(state_dir: &Path) -> Result<Option<Db>> {
        let path = Self::path_in(state_dir);
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("cannot open database {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        let db = Db {
            conn,
            path,
            moved_aside: None,
            stamp_on_close: false,
        };
        let v: i64 = db
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| db.err(e))?;
        if v as usize > migrations().len() {
            bail!(
                "database {} has schema version {v}, newer than this svsettle knows ({}): upgrade svsettle",
                db.path.display(),
                migrations().len()
            );
        }
        Ok(Some(db))
    }

    /// Runs a query and collects its rows; errors name the database.
    fn rows<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut st = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        st.query_map(params, map)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    fn err(&self, e: rusqlite::Error) -> anyhow::Error {
        let path = self.path.display().to_string();
        anyhow::Error::new(e).context(format!("database {path}"))
    }

    /// Opens and initialises, retrying while another process holds a lock SQLite does
    /// not wait for by itself (switching a new file to WAL, WAL recovery): 32 hooks
    /// starting at once on a fresh database must all succeed, none report "locked".
    fn open_at(path: &Path) -> Result<Db> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut pause = Duration::from_millis(5);
        loop {
            match Self::open_once(path) {
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path) -> Result<Db> {
        let stamp = files_stamp(path);
        let unchanged =
            stamp.is_some() && std::fs::read_to_string(checked_marker(path)).ok() == stamp;
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open database {}", path.display()))?;
        let mut db = Db {
            conn,
            path: path.to_path_buf(),
            moved_aside: None,
            stamp_on_close: false,
        };
        db.init(unchanged)
            .map_err(|e| match e.downcast::<rusqlite::Error>() {
                Ok(sql) if is_corruption(&sql) => anyhow::Error::new(sql),
                Ok(sql) => db.err(sql),
                Err(other) => other,
            })?;
        db.stamp_on_close = true;
        Ok(db)
    }

    fn init(&self, unchanged: bool) -> Result<()> {
        let c = &self.conn;
        c.busy_timeout(Duration::from_secs(30))?;
        // A fresh file cannot tell corruption from emptiness; a quick check can. Files
        // exactly as svsettle left them after a check need none (see checked_marker).
        let check: String = if unchanged {
            "ok".into()
        } else {
            c.query_row("PRAGMA quick_check", [], |r| r.get(0))?
        };
        if check != "ok" {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(format!("quick_check: {check}")),
            )
            .into());
        }
        let mode: String = c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if mode != "wal" {
            bail!(
                "database {}: cannot switch to WAL (got {mode})",
                self.path.display()
            );
        }
        c.pragma_update(None, "synchronous", "FULL")?;
        c.pragma_update(None, "foreign_keys", "ON")?;
        let migs = migrations();
        let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version as usize > migs.len() {
            bail!(
                "database {} has schema version {version}, newer than this svsettle knows ({}): upgrade svsettle",
                self.path.display(),
                migs.len()
            );
        }
        if (version as usize) < migs.len() {
            let mut conn = Connection::open(&self.path)?;
            conn.busy_timeout(Duration::from_secs(30))?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
            let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            let app: i64 = tx.query_row("PRAGMA application_id", [], |r| r.get(0))?;
            if app != 0 && app != APPLICATION_ID {
                bail!(
                    "database {} belongs to another program (application_id {app:#x})",
                    self.path.display()
                );
            }
            for m in &migs[(version as usize).min(migs.len())..] {
                tx.execute_batch(m)?;
            }
            tx.pragma_update(None, "user_version", migs.len() as i64)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.commit()?;
        }
        Ok(())
    }

    fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let path = self.path.display().to_string();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .with_context(|| format!("database {path}: cannot start a write"))?;
        let v = f(&tx).with_context(|| format!("database {path}"))?;
        tx.commit()
            .with_context(|| format!("database {path}: commit failed"))?;
        Ok(v)
    }

    /// Records hints in one transaction; duplicates merge. Returns how many were new.
    pub fn enqueue(&mut self, hints: &[NewHint]) -> Result<usize> {
        let t = now();
        self.write(|tx| {
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO hint (domain, service, path, source, txn, package, time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            // A hint merged into a pending one still names a newer change: it becomes
            // the newest, so finishing a plan made before it (up to its hint id) keeps it.
            let mut bump = tx.prepare_cached(
                "UPDATE hint SET id = (SELECT max(id) FROM hint) + 1, time = ?6
                 WHERE domain = ?1 AND service = ?2 AND path = ?3 AND source = ?4 AND txn = ?5",
            )?;
            let mut n = 0;
            for h in hints {
                let added = st.execute(params![h.domain, h.service, h.path, h.source, h.txn, h.package, t])?;
                if added == 0 {
                    bump.execute(params![h.domain, h.service, h.path, h.source, h.txn, t])?;
                }
                n += added;
            }
            Ok(n)
        })
    }

    pub fn pending(&self) -> Result<Vec<PendingService>> {
        let rows: Vec<_> = self.rows("SELECT domain, service, max(id), count(*) FROM hint GROUP BY domain, service ORDER BY domain, service", [], |r| {
                Ok(PendingService {
                    domain: r.get(0)?,
                    service: r.get(1)?,
                    max_hint: r.get(2)?,
                    hints: r.get(3)?,
                })
            })?;
        Ok(rows)
    }

    pub fn max_hint_id(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT coalesce(max(id), 0) FROM hint", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Packages named by the hints of a service (newest first), for attribution.
    pub fn hint_packages(&self, domain: &str, service: &str) -> Result<Vec<String>> {
        let rows: Vec<String> = self.rows("SELECT DISTINCT package FROM hint WHERE domain = ?1 AND service = ?2 AND package IS NOT NULL ORDER BY id DESC", params![domain, service], |r| r.get(0))?;
        Ok(rows)
    }

    /// The newest package named by the hints of each service of a domain, in one query
    /// (what [`Db::hint_packages`] returns first, for every service at once).
    pub fn newest_hint_packages(
        &self,
        domain: &str,
    ) -> Result<std::collections::HashMap<String, String>> {
        let rows: Vec<(String, String)> = self.rows("SELECT service, package FROM hint WHERE domain = ?1 AND package IS NOT NULL ORDER BY id DESC", params![domain], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let mut out = std::collections::HashMap::new();
        for (service, package) in rows {
            out.entry(service).or_insert(package);
        }
        Ok(out)
    }

    /// The recorded bases of `services` as stored (JSON of [`Tree`]), in one query;
    /// [`Db::parse_base`] reads one.
    pub fn base_texts(
        &self,
        domain: &str,
        services: &[&str],
    ) -> Result<std::collections::HashMap<String, String>> {
        let names = serde_json::to_string(services)?;
        let rows: Vec<(String, String)> = self.rows("SELECT service, tree FROM base WHERE domain = ?1 AND service IN (SELECT value FROM json_each(?2))", params![domain, names], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.into_iter().collect())
    }

    pub fn parse_base(domain: &str, service: &str, text: &str) -> Result<Tree> {
        serde_json::from_str(text)
            .with_context(|| format!("database: base of {domain}/{service} is unreadable"))
    }

    pub fn base(&self, domain: &str, service: &str) -> Result<Option<Tree>> {
        let text: Option<String> = self
            .conn
            .prepare_cached("SELECT tree FROM base WHERE domain = ?1 AND service = ?2")
            .and_then(|mut st| {
                st.query_row(params![domain, service], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err(e))?;
        text.map(|t| Self::parse_base(domain, service, &t))
            .transpose()
    }

    pub fn base_services(&self, domain: &str) -> Result<Vec<String>> {
        let rows: Vec<String> = self.rows(
            "SELECT service FROM base WHERE domain = ?1 ORDER BY service",
            params![domain],
            |r| r.get(0),
        )?;
        Ok(rows)
    }

    pub fn blob(&self, hash: &str) -> Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT data FROM blob WHERE hash = ?1")
            .and_then(|mut st| st.query_row(params![hash], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    /// Journals plans before anything is touched, with the content they will write.
    pub fn journal_plans(
        &mut self,
        run: i64,
        plans: &[(&ServicePlan, i64)],
        blobs: &[(&str, &[u8])],
    ) -> Result<()> {
        let t = now();
        self.write(|tx| {
            let mut b = tx.prepare_cached("INSERT OR IGNORE INTO blob (hash, data) VALUES (?1, ?2)")?;
            for (hash, data) in blobs {
                b.execute(params![hash, data])?;
            }
            let mut j = tx.prepare_cached(
                "INSERT OR REPLACE INTO journal (domain, service, run, step, plan, max_hint, time) VALUES (?1, ?2, ?3, 'planned', ?4, ?5, ?6)",
            )?;
            for (plan, max_hint) in plans {
                let json = serde_json::to_string(plan).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                j.execute(params![plan.domain, plan.name, run, json, max_hint, t])?;
            }
            Ok(())
        })
    }

    pub fn journal_step(&mut self, domain: &str, service: &str, step: &Step) -> Result<()> {
        let s = step.as_str();
        self.write(|tx| {
            tx.execute(
                "UPDATE journal SET step = ?3 WHERE domain = ?1 AND service = ?2",
                params![domain, service, s],
            )
        })?;
        Ok(())
    }

    /// [`Db::journal_step`] for many services, in one transaction.
    pub fn journal_steps(&mut self, services: &[(&str, &str)], step: &Step) -> Result<()> {
        if services.is_empty() {
            return Ok(());
        }
        let s = step.as_str();
        self.write(|tx| {
            let mut st = tx.prepare_cached(
                "UPDATE journal SET step = ?3 WHERE domain = ?1 AND service = ?2",
            )?;
            for (domain, service) in services {
                st.execute(params![domain, service, s])?;
            }
            Ok(())
        })
    }

    pub fn journal(&self) -> Result<Vec<JournalEntry>> {
        let rows: Vec<_> = self.rows("SELECT plan, step, run, max_hint, domain, service FROM journal ORDER BY domain, service", [], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
        rows.into_iter()
            .map(|(plan, step, run, max_hint, d, s)| {
                Ok(JournalEntry {
                    plan: serde_json::from_str(&plan)
                        .with_context(|| format!("journal entry of {d}/{s} is unreadable"))?,
                    step: Step::parse(&step)?,
                    run,
                    max_hint,
                })
            })
            .collect()
    }

    /// Drops a journal entry without recording an outcome (a rolled-back service).
    pub fn journal_drop(&mut self, domain: &str, service: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM journal WHERE domain = ?1 AND service = ?2",
                params![domain, service],
            )
        })?;
        Ok(())
    }

    /// Records the outcome of one service: new base, cleared hints, conflicts,
    /// deferred state, history, journal entry gone — all or nothing.
    pub fn commit_service(&mut self, o: &Outcome, blobs: &[(&str, &[u8])]) -> Result<()> {
        self.commit_services(std::slice::from_ref(o), blobs)
    }

    /// [`Db::commit_service`] for many services in one transaction (each service is
    /// still all or nothing; one fsync instead of one per service).
    pub fn commit_services(&mut self, outcomes: &[Outcome], blobs: &[(&str, &[u8])]) -> Result<()> {
        let t = now();
        let mut rows = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            let p = o.plan;
            let base_json = p.new_base.as_ref().map(serde_json::to_string).transpose()?;
            let conflicts: Vec<(String, String)> = p
                .conflicts
                .iter()
                .map(|c| Ok((c.path.clone(), serde_json::to_string(c)?)))
                .collect::<Result<_>>()?;
            let deferred = matches!(p.action, crate::plan::Action::Deferred)
                .then(|| p.note.clone().unwrap_or_default());
            rows.push((o, base_json, conflicts, deferred));
        }
        self.write(|tx| {
            let mut b = tx.prepare_cached("INSERT OR IGNORE INTO blob (hash, data) VALUES (?1, ?2)")?;
            for (hash, data) in blobs {
                b.execute(params![hash, data])?;
            }
            // rows to clear can only be in tables that hold any (each service comes
            // once): skip a thousand empty deletes in a no-op run
            let any = |table: &str| {
                tx.query_row(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), [], |r| {
                    r.get::<_, bool>(0)
                })
            };
            let (in_conflict, in_deferred, in_journal) =
                (any("conflict")?, any("deferred")?, any("journal")?);
            for (o, base_json, conflicts, deferred) in &rows {
                let p = o.plan;
                if o.ok {
                    match base_json {
                        // an unchanged base is not written again (a no-op run of many
                        // services would otherwise rewrite every one)
                        Some(json) => tx
                            .prepare_cached(
                                "INSERT INTO base (domain, service, tree, package, time) VALUES (?1, ?2, ?3, ?4, ?5)
                                 ON CONFLICT (domain, service) DO UPDATE SET tree = excluded.tree,
                                 package = excluded.package, time = excluded.time
                                 WHERE tree IS NOT excluded.tree OR package IS NOT excluded.package",
                            )?
                            .execute(params![p.domain, p.name, json, o.package, t])?,
                        None => tx
                            .prepare_cached("DELETE FROM base WHERE domain = ?1 AND service = ?2")?
                            .execute(params![p.domain, p.name])?,
                    };
                    if deferred.is_none() {
                        tx.prepare_cached("DELETE FROM hint WHERE domain = ?1 AND service = ?2 AND id <= ?3")?
                            .execute(params![p.domain, p.name, o.max_hint])?;
                    }
                    if in_conflict {
                        tx.prepare_cached("DELETE FROM conflict WHERE domain = ?1 AND service = ?2")?
                            .execute(params![p.domain, p.name])?;
                    }
                    for (path, json) in conflicts {
                        tx.prepare_cached(
                            "INSERT INTO conflict (domain, service, path, detail, time) VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(params![p.domain, p.name, path, json, t])?;
                    }
                    match deferred {
                        Some(reason) => tx
                            .prepare_cached(
                                "INSERT OR REPLACE INTO deferred (domain, service, reason, time) VALUES (?1, ?2, ?3, ?4)",
                            )?
                            .execute(params![p.domain, p.name, reason, t])?,
                        None if in_deferred => tx
                            .prepare_cached("DELETE FROM deferred WHERE domain = ?1 AND service = ?2")?
                            .execute(params![p.domain, p.name])?,
                        None => 0,
                    };
                }
                if o.history {
                    tx.prepare_cached(
                        "INSERT INTO history (run, time, domain, service, action, detail, package, ok) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![o.run, t, p.domain, p.name, o.action, o.detail, o.package, o.ok])?;
                }
                // a failure after the point of no return keeps its journal entry: the
                // next run finishes it
                if o.ok && in_journal {
                    tx.prepare_cached("DELETE FROM journal WHERE domain = ?1 AND service = ?2")?
                        .execute(params![p.domain, p.name])?;
                }
            }
            Ok(())
        })
    }

    /// Clears the whole-domain hints (service '') up to `max_hint` once the domain was walked.
    pub fn clear_domain_hints(&mut self, domain: &str, max_hint: i64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM hint WHERE domain = ?1 AND service = '' AND id <= ?2",
                params![domain, max_hint],
            )
        })?;
        Ok(())
    }

    pub fn start_run(&mut self, trigger: &str) -> Result<i64> {
        let t = now();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO run (started, trigger) VALUES (?1, ?2)",
                params![t, trigger],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    pub fn finish_run(&mut self, run: i64, summary: &str) -> Result<()> {
        let t = now();
        self.write(|tx| {
            tx.execute(
                "UPDATE run SET finished = ?2, summary = ?3 WHERE id = ?1",
                params![run, t, summary],
            )
        })?;
        Ok(())
    }

    pub fn last_run(&self) -> Result<Option<RunRow>> {
        self.conn
            .query_row(
                "SELECT id, started, finished, trigger, summary FROM run ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(RunRow {
                        id: r.get(0)?,
                        started: r.get(1)?,
                        finished: r.get(2)?,
                        trigger: r.get(3)?,
                        summary: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn record_problem(
        &mut self,
        source: &str,
        domain: Option<&str>,
        service: Option<&str>,
        message: &str,
    ) -> Result<()> {
        let t = now();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO problem (time, source, domain, service, message) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![t, source, domain, service, message],
            )
        })?;
        Ok(())
    }

    /// Problems recorded since the last run that finished without any.
    pub fn problems(&self) -> Result<Vec<ProblemRow>> {
        let rows: Vec<_> = self.rows(
            "SELECT time, source, domain, service, message FROM problem ORDER BY id DESC LIMIT 50",
            [],
            |r| {
                Ok(ProblemRow {
                    time: r.get(0)?,
                    source: r.get(1)?,
                    domain: r.get(2)?,
                    service: r.get(3)?,
                    message: r.get(4)?,
                })
            },
        )?;
        Ok(rows)
    }

    /// After a clean run: forget service failures (they were retried and succeeded);
    /// refused input (no service) stays visible for a week.
    pub fn clear_problems(&mut self) -> Result<()> {
        let week_ago = now() - 7 * 86_400;
        self.write(|tx| {
            tx.execute(
                "DELETE FROM problem WHERE service IS NOT NULL OR time < ?1",
                params![week_ago],
            )
        })?;
        Ok(())
    }

    pub fn conflicts(&self) -> Result<Vec<ConflictRow>> {
        let rows: Vec<_> = self.rows(
            "SELECT domain, service, detail, time FROM conflict ORDER BY domain, service, path",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get(3)?,
                ))
            },
        )?;
        rows.into_iter()
            .map(|(domain, service, detail, time)| {
                Ok(ConflictRow {
                    conflict: serde_json::from_str(&detail).context("database: conflict row")?,
                    domain,
                    service,
                    time,
                })
            })
            .collect()
    }

    pub fn deferred(&self) -> Result<Vec<(String, String, String)>> {
        let rows: Vec<_> = self.rows(
            "SELECT domain, service, reason FROM deferred ORDER BY domain, service",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok(rows)
    }

    /// The newest `limit` rows, oldest first; `service` may be NAME or DOMAIN/NAME.
    pub fn history(&self, limit: usize, service: Option<&str>) -> Result<Vec<HistoryRow>> {
        let (domain, service) = match service.map(|s| s.split_once('/')) {
            Some(Some((d, s))) => (Some(d), Some(s)),
            _ => (None, service),
        };
        let mut rows: Vec<_> = self.rows(
            "SELECT id, run, time, domain, service, action, detail, package, ok FROM history
                 WHERE (?2 IS NULL OR service = ?2) AND (?3 IS NULL OR domain = ?3)
                 ORDER BY id DESC LIMIT ?1",
            params![limit as i64, service, domain],
            |r| {
                Ok(HistoryRow {
                    id: r.get(0)?,
                    run: r.get(1)?,
                    time: r.get(2)?,
                    domain: r.get(3)?,
                    service: r.get(4)?,
                    action: r.get(5)?,
                    detail: r.get(6)?,
                    package: r.get(7)?,
                    ok: r.get(8)?,
                })
            },
        )?;
        rows.reverse();
        Ok(rows)
    }
}

/// The stat cache (`cache.db` beside the state database): per stock service, the
/// [`Snapshot`] of its last read, so that a reconcile re-reads and re-hashes only
/// what changed. Advisory only: WAL with `synchronous=NORMAL` (a power loss may lose
/// recent rows, never make one wrong), every error means "not cached", and a file
/// that cannot be opened is started again.
pub struct StatCache {
    conn: Connection,
}

impl StatCache {
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join("cache.db")
    }

    /// Opens (creating) the cache; `None` when it cannot be used.
    pub fn open(state_dir: &Path) -> Option<StatCache> {
        let path = Self::path_in(state_dir);
        let open = || -> rusqlite::Result<StatCache> {
            let conn = Connection::open(&path)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            // only the reconciler (holding the lock) opens it: no shared-memory index,
            // no lock per statement
            conn.query_row("PRAGMA locking_mode = EXCLUSIVE", [], |_| Ok(()))?;
            conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS stat (
                    domain TEXT NOT NULL,
                    service TEXT NOT NULL,
                    data BLOB NOT NULL,
                    UNIQUE (domain, service)
                ) STRICT;",
            )?;
            Ok(StatCache { conn })
        };
        open().ok().or_else(|| {
            for ext in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
            }
            open().ok()
        })
    }

    /// The stored snapshots of `services` ([`Snapshot::decode`] reads one), in one
    /// query; missing or unreadable: not there.
    pub fn get_many(
        &self,
        domain: &str,
        services: &[&str],
    ) -> std::collections::HashMap<String, Vec<u8>> {
        let Ok(names) = serde_json::to_string(services) else {
            return Default::default();
        };
        let rows = self
            .conn
            .prepare_cached(
                "SELECT service, data FROM stat WHERE domain = ?1 AND service IN (SELECT value FROM json_each(?2))",
            )
            .and_then(|mut st| {
                st.query_map(params![domain, names], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap_or_default();
        rows.into_iter().collect()
    }

    /// Stores snapshots (`None`: forget the service), in one transaction.
    pub fn put(&mut self, domain: &str, rows: &[(&str, Option<&Snapshot>)]) {
        if rows.is_empty() {
            return;
        }
        let res = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            {
                let mut put = tx.prepare_cached(
                    "INSERT OR REPLACE INTO stat (domain, service, data) VALUES (?1, ?2, ?3)",
                )?;
                let mut del =
                    tx.prepare_cached("DELETE FROM stat WHERE domain = ?1 AND service = ?2")?;
                for (service, snap) in rows {
                    match snap {
                        Some(s) => put.execute(params![domain, service, s.encode()])?,
                        None => del.execute(params![domain, service])?,
                    };
                }
            }
            tx.commit()
        })();
        if res.is_err() {
            // a cache that cannot be written is dropped; the next run reads everything
            let _ = self.conn.execute("DELETE FROM stat", []);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(service: &str, path: &str) -> NewHint {
        NewHint {
            domain: "s6".into(),
            service: service.into(),
            path: path.into(),
            source: "manual".into(),
            txn: String::new(),
            package: None,
        }
    }

    #[test]
    fn enqueue_merges_duplicates() {
        let t = tempfile::tempdir().unwrap();
        let mut db = Db::open(t.path()).unwrap();
        assert_eq!(
            db.enqueue(&[
                hint("a", "/x/a/run"),
                hint("a", "/x/a/run"),
                hint("b", "/x/b")
            ])
            .unwrap(),
            2
        );
        let before = db.pending().unwrap();
        assert_eq!(db.enqueue(&[hint("a", "/x/a/run")]).unwrap(), 0);
        let p = db.pending().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].service, "a");
        // merged, but newer than every hint before it
        assert!(p[0].max_hint > before[1].max_hint, "{before:?} {p:?}");
    }

    #[test]
    fn newer_schema_is_refused_and_corrupt_file_moved_aside() {
        let t = tempfile::tempdir().unwrap();
        drop(Db::open(t.path()).unwrap());
        let c = Connection::open(Db::path_in(t.path())).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let err = Db::open(t.path()).err().unwrap();
        assert!(format!("{err:#}").contains("schema version 99"), "{err:#}");

        let t = tempfile::tempdir().unwrap();
        std::fs::write(Db::path_in(t.path()), vec![0x42u8; 8192]).unwrap();
        let db = Db::open(t.path()).unwrap();
        let aside = db.moved_aside.clone().unwrap();
        assert!(aside.exists());
        assert!(db.pending().unwrap().is_empty());
    }
}
