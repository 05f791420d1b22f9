//! Bugs planted on purpose, to prove the simulator's checkers can fail.
//!
//! A checker counts only once it has caught a bug planted on purpose. Each
//! bug here is compiled in only with the `planted-bugs` feature, and then
//! switched on at run time by the simulator (`cairn-sim --plant NAME`).
//! Without the feature, [`active`] is a constant `false` and every planted
//! branch compiles away.

/// A planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bug {
    /// The event loop reports a Ready persisted (and sends the messages that
    /// promise durability) before the WAL fsync.
    AckBeforeFsync,
    /// Linearizable reads are served from local state, without ReadIndex.
    ReadsWithoutReadIndex,
    /// Hard state (term, vote, commit) is never written to the WAL.
    SkipHardStateSync,
    /// After a restart, entries recovered from the WAL are applied to the
    /// store once more before raft delivers them again.
    ApplyTwiceAfterRestart,
    /// Compaction also drops the newest version at or before the revision.
    CompactionDropsNewest,
    /// A watcher that falls behind and catches up from the history skips the
    /// first event it reads there.
    WatchSkipsCatchUpEvent,
    /// A new leader expires every lease at once instead of extending them.
    LeaseExpiresOnLeaderChange,
}

impl Bug {
    /// Every planted bug.
    pub const ALL: [Bug; 7] = [
        Bug::AckBeforeFsync,
        Bug::ReadsWithoutReadIndex,
        Bug::SkipHardStateSync,
        Bug::ApplyTwiceAfterRestart,
        Bug::CompactionDropsNewest,
        Bug::WatchSkipsCatchUpEvent,
        Bug::LeaseExpiresOnLeaderChange,
    ];

    /// The name `--plant` takes.
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeFsync => "ack-before-fsync",
            Bug::ReadsWithoutReadIndex => "reads-without-read-index",
            Bug::SkipHardStateSync => "skip-hard-state-sync",
            Bug::ApplyTwiceAfterRestart => "apply-twice-after-restart",
            Bug::CompactionDropsNewest => "compaction-drops-newest",
            Bug::WatchSkipsCatchUpEvent => "watch-skips-catch-up-event",
            Bug::LeaseExpiresOnLeaderChange => "lease-expires-on-leader-change",
        }
    }

    /// The bug called `name`.
    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

#[cfg(feature = "planted-bugs")]
static ACTIVE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Switches `bug` on for the whole process.
#[cfg(feature = "planted-bugs")]
pub fn plant(bug: Bug) {
    ACTIVE.fetch_or(1 << bug as u32, std::sync::atomic::Ordering::SeqCst);
}

/// Whether `bug` is switched on.
#[cfg(feature = "planted-bugs")]
pub fn active(bug: Bug) -> bool {
    ACTIVE.load(std::sync::atomic::Ordering::SeqCst) & (1 << bug as u32) != 0
}

/// Whether `bug` is switched on: never, in a build without planted bugs.
#[cfg(not(feature = "planted-bugs"))]
#[inline(always)]
pub const fn active(_bug: Bug) -> bool {
    false
}
