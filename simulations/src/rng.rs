//! Seeded random helpers. Every draw in a simulation comes from one `ChaCha8Rng` seeded
//! with the printed seed (or a sub-seed derived from it).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The simulation's random number generator.
pub type SimRng = ChaCha8Rng;

/// A new generator for `seed`, separated by `stream` so that adding draws to one part of
/// the world does not shift the others.
pub fn rng(seed: u64, stream: u64) -> SimRng {
    use rand::SeedableRng;
    let mut s = ChaCha8Rng::seed_from_u64(seed);
    s.set_stream(stream);
    s
}

/// A standard normal draw (Box-Muller).
pub fn normal(rng: &mut SimRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A log-normal draw with the given median and log-space sigma.
pub fn lognormal_median(rng: &mut SimRng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// A log-normal draw with the given mean and log-space sigma.
pub fn lognormal_mean(rng: &mut SimRng, mean: f64, sigma: f64) -> f64 {
    lognormal_median(rng, mean / (sigma * sigma / 2.0).exp(), sigma)
}

/// Zipf-like ranks: rank `r` (0-based) has weight `(r+1)^-s`.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// Ranks `0..n` with exponent `s`.
    pub fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf = Vec::with_capacity(n.max(1));
        for r in 0..n.max(1) {
            acc += ((r + 1) as f64).powf(-s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    /// One rank.
    pub fn sample(&self, rng: &mut SimRng) -> usize {
        let u: f64 = rng.gen();
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1)
    }
}

/// `k` distinct indices out of `0..n` (Floyd's algorithm), in draw order.
pub fn distinct(rng: &mut SimRng, n: usize, k: usize) -> Vec<usize> {
    let k = k.min(n);
    let mut chosen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(k);
    for j in n - k..n {
        let t = rng.gen_range(0..=j);
        let pick = if chosen.contains(&t) { j } else { t };
        chosen.insert(pick);
        out.push(pick);
    }
    out
}

/// Percentile (0..=100) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on what they did not expect
mod tests {
    use super::*;

    #[test]
    fn draws_are_reproducible_and_distinct_is_distinct() {
        let a: Vec<usize> = distinct(&mut rng(7, 1), 100, 30);
        let b: Vec<usize> = distinct(&mut rng(7, 1), 100, 30);
        assert_eq!(a, b);
        let set: std::collections::BTreeSet<_> = a.iter().collect();
        assert_eq!(set.len(), 30);
        let z = Zipf::new(300, 1.1);
        let mut r = rng(1, 2);
        let top = (0..10_000).filter(|_| z.sample(&mut r) == 0).count();
        assert!(top > 1000 && top < 2500, "{top}");
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
    }
}
