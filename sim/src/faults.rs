//! The fault plan of one seed (swarm testing): which faults are enabled and
//! how often, drawn once from the seed so each seed explores a different mix.

/// cairn's seeded generator (splitmix64), for decisions made outside
/// madsim's runtime, such as drawing the swarm before the runtime starts.
#[derive(Debug, Clone)]
pub struct SeedRng(cairn::server::SplitMix64);

impl SeedRng {
    pub fn new(seed: u64) -> Self {
        Self(cairn::server::SplitMix64::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// The faults one seed enables. Each is on with probability 1/2, so a sweep
/// covers each fault alone and in combination with the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swarm {
    /// Network partitions: random halves, the leader isolated, one-way links.
    pub partitions: bool,
    /// Extra network latency (up to 50 ms per message).
    pub latency: bool,
    /// The peer transport drops up to 10% of raft messages.
    pub message_drops: bool,
    /// Crash a member (kill) and restart it after a while.
    pub crashes: bool,
    /// Crash every member at once (a power cut), restart them all.
    pub power_loss: bool,
    /// On a crash, unsynced writes may be kept or torn, not just lost.
    pub torn_writes: bool,
    /// Pause a member (a stalled process) and resume it.
    pub pauses: bool,
    /// Writes and fsyncs fail with EIO or ENOSPC for a while.
    pub disk_errors: bool,
    /// Every fsync takes up to 1–20 ms longer.
    pub disk_latency: bool,
    /// Flip a bit in synced data of one member (at most a minority).
    pub bit_flips: bool,
    /// Members' ticks run up to 10% fast or slow.
    pub clock_skew: bool,
}

impl Swarm {
    /// The faults for `seed`.
    pub fn draw(seed: u64) -> Self {
        let mut rng = SeedRng::new(seed ^ 0x5eed_5a5a);
        let mut on = || rng.below(2) == 1;
        Self {
            partitions: on(),
            latency: on(),
            message_drops: on(),
            crashes: on(),
            power_loss: on(),
            torn_writes: on(),
            pauses: on(),
            disk_errors: on(),
            disk_latency: on(),
            bit_flips: on(),
            clock_skew: on(),
        }
    }

    /// The enabled faults' names, for reports.
    pub fn names(&self) -> Vec<&'static str> {
        let all = [
            (self.partitions, "partitions"),
            (self.latency, "latency"),
            (self.message_drops, "message-drops"),
            (self.crashes, "crashes"),
            (self.power_loss, "power-loss"),
            (self.torn_writes, "torn-writes"),
            (self.pauses, "pauses"),
            (self.disk_errors, "disk-errors"),
            (self.disk_latency, "disk-latency"),
            (self.bit_flips, "bit-flips"),
            (self.clock_skew, "clock-skew"),
        ];
        all.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_swarm_is_a_function_of_the_seed_and_varies() {
        assert_eq!(Swarm::draw(7), Swarm::draw(7));
        let distinct: std::collections::BTreeSet<Vec<&str>> =
            (0..64).map(|s| Swarm::draw(s).names()).collect();
        assert!(
            distinct.len() > 20,
            "64 seeds should cover many fault mixes, got {}",
            distinct.len()
        );
    }
}
