//! Our own deterministic random numbers: the same seed gives the same noise on every backend and
//! platform (native, wasm), because it is drawn on the host and uploaded.
//!
//! The generator is xoshiro256++ seeded through SplitMix64 (Blackman and Vigna's recommendation);
//! normal deviates come from the Box–Muller transform in f64, rounded to f32. It does not
//! reproduce PyTorch's generator: to reproduce a diffusers image exactly, pass its initial noise
//! explicitly (`--noise`).

/// xoshiro256++ with a standard-normal sampler.
#[derive(Clone, Debug)]
pub struct Rng {
    state: [u64; 4],
    /// The second deviate of the last Box–Muller pair.
    spare: Option<f64>,
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        Self {
            state: [splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x)],
            spare: None,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `(0, 1]`: never 0, so that its logarithm is finite.
    fn uniform_open0(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n > 0`), by rejection, so without bias.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "an empty range");
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// A standard normal deviate.
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let r = (-2.0 * self.uniform_open0().ln()).sqrt();
        let theta = std::f64::consts::TAU * self.uniform_open0();
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `n` standard normal deviates as f32.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal() as f32).collect()
    }

    /// A seed for "random", from the clock (native only: in a browser, the page picks seeds
    /// itself), over `u32` as A1111's seeds are.
    #[cfg(not(target_family = "wasm"))]
    pub fn fresh_seed() -> u32 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let mut x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (splitmix64(&mut x) >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_standard_moments() {
        let a = Rng::new(42).normal_vec(200_000);
        assert_eq!(a, Rng::new(42).normal_vec(200_000));
        assert_ne!(a[..16], Rng::new(43).normal_vec(16)[..]);
        let n = a.len() as f64;
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        // Standard errors: 1/√n ≈ 0.0022 for the mean, √(2/n) ≈ 0.0032 for the variance.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "variance {var}");
        assert!(a.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn xoshiro_reference_values() {
        // First outputs of xoshiro256++ for the state [1, 2, 3, 4] (reference implementation).
        let mut rng = Rng { state: [1, 2, 3, 4], spare: None };
        assert_eq!(rng.next_u64(), 41_943_041);
        assert_eq!(rng.next_u64(), 58_720_359);
        assert_eq!(rng.next_u64(), 3_588_806_011_781_223);
    }
}
