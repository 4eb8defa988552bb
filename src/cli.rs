//! Command-line definitions (clap types only). `main.rs` turns them into a `Config`
//! and calls one entry function per command; no other module sees these types.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// Keep live s6/runit/s6-rc service directories in step with the stock ones packages
/// install, after the package transaction has settled.
#[derive(Debug, Parser)]
#[command(name = "svsettle", version, propagate_version = true, after_long_help = EXIT_CODES)]
pub struct Cli {
    /// Operate on the system under DIR (paths in the config, in hints and in
    /// scan-directory links are read as inside it). Default: /.
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Read the configuration from FILE instead of ROOT/etc/svsettle.toml. Either is
    /// merged over the embedded default, domain by domain.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print machine-readable JSON instead of text (read commands and reconcile).
    #[arg(long, global = true)]
    pub json: bool,

    /// Also print notes: skipped domains, recovered work, removed leftovers.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Print only failures and conflicts.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

pub const EXIT_CODES: &str = "\
Exit status:
  0  done (nothing failed)
  1  some services failed (each is named; the others were still reconciled)
  2  usage or configuration error
  3  deferred: a package transaction or another reconcile is in progress";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record that stock paths changed (durable; never waits for a reconcile).
    ///
    /// Each PATH is absolute, as seen inside the root: a file or directory under a
    /// configured stock tree (/usr/share/s6/sv/foo/run, /usr/share/s6/sv/foo), or a
    /// stock tree itself (rescan the whole domain). Paths under no stock tree are
    /// reported and ignored; malformed ones (.., //, bad names) are refused with an
    /// error and the rest are still recorded.
    Enqueue(EnqueueArgs),

    /// Bring live service directories in line with stock.
    ///
    /// Per file: live == base -> take stock; stock == base -> keep the admin's live
    /// version; otherwise a conflict (live kept, reported until `resolve`).
    ///
    /// Restarts: a service that is up and whose files (outside log/) changed is stopped,
    /// updated in place and started once; a changed log/ restarts only the logger; a
    /// service that is down is updated and left down; identical content never
    /// restarts anything. With restart = "manual" a changed running service is left
    /// alone and reported as pending.
    Reconcile(ReconcileArgs),

    /// Show pending hints, conflicts, services pending a manual restart,
    /// interrupted work, recorded problems and the last reconcile.
    Status,

    /// Show stock against live for a service as a unified diff.
    Diff {
        /// Service name (or DOMAIN/NAME).
        service: String,
    },

    /// Show what reconciles did, oldest first.
    History {
        /// Only this service.
        service: Option<String>,
        /// How many entries.
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: usize,
    },

    /// Settle the conflicts of a service.
    ///
    /// --keep-live keeps the admin's files and takes the current stock as merged;
    /// --take-stock replaces the conflicting live files with stock (restarting the
    /// service once if it is up).
    Resolve(ResolveArgs),

    /// Entry point of the package-manager hooks: enqueue what the package manager
    /// passes, then reconcile. Always exits 0; failures go to `svsettle status`.
    Hook(HookArgs),

    /// Print the effective configuration (the embedded default merged with the file).
    Config,

    /// List the crash points compiled into this binary (for the crash tests).
    #[command(hide = true)]
    Failpoints,

    /// Print the man page or a shell completion script (for packagers).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generate,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Generate {
    /// svsettle.1 in roff
    Man,
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Stock paths inside the root.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<OsString>,
    /// Who is calling (recorded with each hint).
    #[arg(long, default_value = "manual")]
    pub source: String,
    /// Transaction id to record with the hints.
    #[arg(long, default_value = "")]
    pub txn: String,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Reconcile the services named by queued hints (the default).
    #[arg(long, conflicts_with_all = ["all", "services"])]
    pub pending: bool,
    /// Reconcile every service of every domain, hinted or not (re-derives from disk).
    #[arg(long, conflicts_with = "services")]
    pub all: bool,
    /// Print the plan (\"would restart foo: run changed\"); change nothing on disk or
    /// in the database.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Wait for a running package transaction or reconcile instead of exiting 3.
    #[arg(long)]
    pub wait: bool,
    /// Services to reconcile (NAME or DOMAIN/NAME).
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// Service name (or DOMAIN/NAME).
    pub service: String,
    /// Keep the live files; record the current stock as merged.
    #[arg(
        long,
        conflicts_with = "take_stock",
        required_unless_present = "take_stock"
    )]
    pub keep_live: bool,
    /// Replace the conflicting live files with stock.
    #[arg(long)]
    pub take_stock: bool,
}

#[derive(Debug, Args)]
pub struct HookArgs {
    /// Which package manager calls: pacman reads matched paths on stdin.
    #[arg(value_enum)]
    pub manager: HookManager,
    /// Paths passed as arguments (apk triggers pass directories this way).
    #[arg(value_name = "PATH")]
    pub paths: Vec<OsString>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HookManager {
    Pacman,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn conflicting_flags() {
        assert!(Cli::try_parse_from(["svsettle", "reconcile", "--pending", "--all"]).is_err());
        assert!(Cli::try_parse_from(["svsettle", "reconcile", "--all", "foo"]).is_err());
        assert!(
            Cli::try_parse_from(["svsettle", "resolve", "foo", "--keep-live", "--take-stock"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["svsettle", "resolve", "foo"]).is_err());
        assert!(Cli::try_parse_from(["svsettle", "reconcile", "a", "b"]).is_ok());
    }
}
