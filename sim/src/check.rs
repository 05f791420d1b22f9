//! Checkers (placeholder until the real ones land: accepts every history).
use crate::history::History;

/// What a passing check looked at.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub ops: usize,
}

/// A failed check.
#[derive(Debug, Clone)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a history.
pub fn check(history: &History) -> Result<Stats, Violation> {
    Ok(Stats { ops: history.len() })
}
