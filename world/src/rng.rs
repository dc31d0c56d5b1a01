//! The world's random numbers: SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom
//! number generators", 2014), written out so that the stream never changes with a crate update.
//!
//! Every example draws from streams of its own, keyed by the world's seed, the example's index
//! and what the numbers are for, so any example can be made alone (the browser worker makes them
//! on the fly) and the scribble's randomness never shifts the image's.

/// What a stream of numbers is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Scene = 1,
    Scribble = 2,
}

#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, index: u64, stream: Stream) -> Self {
        let mut rng = Rng(seed);
        let mixed = rng.next_u64()
            ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)
            ^ (stream as u64).wrapping_mul(0xA24B_AED4_963E_E407);
        let mut rng = Rng(mixed);
        rng.next_u64();
        rng
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, 53 random bits.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[low, high)`.
    pub(crate) fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; `n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// `true` with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // The first outputs for state 0 from the reference implementation
        // (https://prng.di.unimi.it/splitmix64.c).
        let mut rng = Rng(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn streams_are_independent_and_uniform() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7, 3, Stream::Scene).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]), "a stream is a function of its key");
        assert_ne!(Rng::new(7, 3, Stream::Scene).next_u64(), Rng::new(7, 3, Stream::Scribble).next_u64());
        assert_ne!(Rng::new(7, 3, Stream::Scene).next_u64(), Rng::new(7, 4, Stream::Scene).next_u64());
        assert_ne!(Rng::new(7, 3, Stream::Scene).next_u64(), Rng::new(8, 3, Stream::Scene).next_u64());
        let mut rng = Rng::new(1, 0, Stream::Scene);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[rng.below(7)] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
    }
}
