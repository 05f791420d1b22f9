//! Checkers (in progress).
