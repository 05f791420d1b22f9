//! cairn's deterministic simulator.
//!
//! - [`history`]: what a run records.
//! - [`check`]: the checkers that judge a history (linearizability and more).
//!   Both live in the cairn library (`cairn::check`), shared with
//!   `cairn verify`; they are re-exported here under their old paths.
//! - [`faults`]: the faults a seed enables (swarm testing).
//!
//! The runner, which drives the real server under madsim, is built only with
//! `--cfg madsim`.

pub use cairn::check;
pub use cairn::check::history;
pub mod faults;
#[cfg(madsim)]
pub mod runner;
