//! The one small seeded generator cairn draws its own numbers from: the
//! node's election timeouts, the driver's IDs, the transport's simulated
//! drops, the simulator's fault plan. Its sequence is a function of the seed
//! alone, so a seeded run replays exactly.

/// splitmix64 (Steele, Lea and Flood): tiny, fast, and good enough for
/// timeouts and fault plans; not for anything secret.
#[derive(Debug, Clone, Default)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose sequence is a function of `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
