//! One integration-test binary: every module drives the real `svsettle` binary
//! against real supervisors and package managers, each test in its own temporary root.
//!
//! - `util`: the harness (temporary roots, commands, supervisors started and killed by pid).
//! - `scenarios`: behaviour shared by the s6 and runit backends, one table run per backend.
//! - `s6`, `runit`, `s6rc`: backend-specific behaviour.
//! - `crash`: kill -9 at every crash point, then a fresh reconcile.
//! - `mixed`: s6 and runit domains on one machine, settled by one reconcile.
//! - `pacman`: real pacman transactions running the shipped hook.
//! - `reliability`: hostile input, concurrency, full disk, supervisor faults.

mod util;

mod cli;
mod crash;
mod mixed;
mod pacman;
mod reliability;
mod runit;
mod s6;
mod s6rc;
mod scenarios;
