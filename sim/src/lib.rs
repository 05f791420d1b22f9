//! cairn's deterministic simulator.
//!
//! - [`history`]: what a run records.
//! - [`check`]: the checkers that judge a history (linearizability and more).
//! - [`faults`]: the faults a seed enables (swarm testing).
//!
//! The runner, which drives the real server under madsim, is built only with
//! `--cfg madsim`.

pub mod check;
pub mod faults;
pub mod history;
#[cfg(madsim)]
pub mod runner;
