//! svsettle: parse the command line, run one command, turn its outcome into the
//! documented exit code (0 done, 1 some failed, 2 usage/config error, 3 deferred).

mod adapters;
mod apply;
mod backends;
mod cli;
mod commands;
mod config;
mod failpoints;
mod lock;
mod names;
mod plan;
#[cfg(test)]
mod plan_props;
mod queue;
mod reconcile;
mod settle;
mod tree;

use clap::Parser;
use std::process::ExitCode;

/// How a command ended; one conversion to the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Done,
    SomeFailed,
    Deferred,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(match e {
            Exit::Done => 0,
            Exit::SomeFailed => 1,
            Exit::Deferred => 3,
        })
    }
}

fn main() -> ExitCode {
    #[cfg(feature = "failpoints")]
    let _scenario = fail::FailScenario::setup();
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(exit) => exit.into(),
        Err(err) => {
            if let Some(e) = err.downcast_ref::<std::io::Error>()
                && e.kind() == std::io::ErrorKind::BrokenPipe
            {
                return ExitCode::from(0);
            }
            eprintln!("svsettle: {err:#}");
            ExitCode::from(2)
        }
    }
}
