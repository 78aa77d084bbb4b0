//! Evaluation: the six decodings of thinking and the unbiased pass@k estimator; [`loglik`], the
//! batched log-likelihood of token sequences (scoring and multiple-choice evaluation).
//!
//! A model is evaluated with thinking decoded in each mode (hard, soft, fuzzy), greedily (argmax for
//! hard, no noise for soft/fuzzy) or sampled (tau = the mode's default, plus noise), and always with
//! greedy answers, as in the paper.

pub mod loglik;

use crate::think::{ThinkConfig, ThinkMode};

/// The unbiased estimate of pass@k from `n` samples of which `c` are correct:
/// 1 - C(n-c, k) / C(n, k), the chance that a random k-subset holds a correct sample.
///
/// The ratio of binomials overflows f64 for large n, so it is computed as the product
/// prod_{i=n-c+1..n} (1 - k/i). Callers ensure k <= n (the estimate needs at least k samples);
/// whenever fewer than k samples are wrong (c > n - k), every k-subset holds a correct one: 1.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n.saturating_sub(c) < k {
        return 1.0;
    }
    let miss: f64 = (n - c + 1..=n).map(|i| 1.0 - k as f64 / i as f64).product();
    1.0 - miss
}

/// One decoding of the thinking at test time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoding {
    pub mode: ThinkMode,
    /// Greedy: argmax tokens for hard thinking, no noise for soft/fuzzy. Otherwise sampled.
    pub greedy: bool,
}

impl Decoding {
    /// The six decodings, in the order of the paper's tables (per mode: greedy, then sample).
    pub const ALL: [Decoding; 6] = [
        Decoding::new(ThinkMode::Hard, true),
        Decoding::new(ThinkMode::Hard, false),
        Decoding::new(ThinkMode::Soft, true),
        Decoding::new(ThinkMode::Soft, false),
        Decoding::new(ThinkMode::Fuzzy, true),
        Decoding::new(ThinkMode::Fuzzy, false),
    ];

    pub const fn new(mode: ThinkMode, greedy: bool) -> Self {
        Decoding { mode, greedy }
    }

    /// `hard-greedy`, `soft-sample`, ...
    pub fn name(self) -> &'static str {
        match (self.mode, self.greedy) {
            (ThinkMode::Hard, true) => "hard-greedy",
            (ThinkMode::Hard, false) => "hard-sample",
            (ThinkMode::Soft, true) => "soft-greedy",
            (ThinkMode::Soft, false) => "soft-sample",
            (ThinkMode::Fuzzy, true) => "fuzzy-greedy",
            (ThinkMode::Fuzzy, false) => "fuzzy-sample",
        }
    }

    /// The inverse of [`Decoding::name`].
    pub fn parse(s: &str) -> Option<Decoding> {
        Decoding::ALL.into_iter().find(|d| d.name() == s)
    }

    /// The thinking configuration of this decoding: the mode's default temperature, greedy
    /// answers; budgets, noise scale and seed are the caller's to set.
    pub fn think_config(self) -> ThinkConfig {
        let mut cfg = ThinkConfig::new(self.mode);
        cfg.greedy = self.greedy;
        cfg.answer_greedy = true;
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binomial(n: usize, k: usize) -> f64 {
        (0..k).map(|i| (n - i) as f64 / (i + 1) as f64).product()
    }

    /// The share of k-subsets of n samples (the first c correct) that hold a correct sample.
    fn enumerated(n: usize, c: usize, k: usize) -> f64 {
        let (mut hit, mut all) = (0u64, 0u64);
        for set in 0u32..1 << n {
            if set.count_ones() as usize == k {
                all += 1;
                hit += u64::from(set & ((1 << c) - 1) != 0);
            }
        }
        hit as f64 / all as f64
    }

    #[test]
    fn pass_at_k_matches_enumeration() {
        for n in 1..=8 {
            for c in 0..=n {
                for k in 1..=n {
                    let (got, want) = (pass_at_k(n, c, k), enumerated(n, c, k));
                    assert!((got - want).abs() < 1e-12, "n={n} c={c} k={k}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn pass_at_k_edges() {
        assert_eq!(pass_at_k(32, 0, 32), 0.0, "no correct sample");
        assert_eq!(pass_at_k(32, 32, 1), 1.0, "all correct");
        assert_eq!(pass_at_k(32, 1, 32), 1.0, "k = n sees every sample");
        assert_eq!(pass_at_k(10, 8, 3), 1.0, "c >= n-k+1: every subset holds a correct one");
        assert!((pass_at_k(32, 5, 1) - 5.0 / 32.0).abs() < 1e-15, "pass@1 is c/n");
        // Large n, where C(n, k) itself overflows f64.
        let big = pass_at_k(10_000, 10, 1000);
        let want = 1.0 - (0..10).map(|i| 1.0 - 1000.0 / (10_000 - i) as f64).product::<f64>();
        assert!(big.is_finite() && (big - want).abs() < 1e-12);
        assert!(binomial(10_000, 1000).is_infinite());
    }

    #[test]
    fn decodings_round_trip_their_names() {
        for d in Decoding::ALL {
            assert_eq!(Decoding::parse(d.name()), Some(d));
            let cfg = d.think_config();
            assert_eq!((cfg.mode, cfg.greedy, cfg.answer_greedy), (d.mode, d.greedy, true));
            assert_eq!(cfg.tau, d.mode.default_tau());
        }
        assert_eq!(Decoding::parse("soft"), None);
        assert_eq!(Decoding::parse("Soft-Greedy"), None);
    }
}
