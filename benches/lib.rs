//! Benchmarks for saas-foundation; see `BENCHMARKS.md` at the repository
//! root for how to run them and the latest figures.
//!
//! Each benchmark reports ratios against a baseline measured in the same
//! run, so figures compare across machines. The helpers here time paired
//! rounds of a baseline and a candidate.

use std::future::Future;
use std::time::{Duration, Instant};

/// A baseline and a candidate duration (e.g. one timed run of each) and
/// their ratio.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    /// The baseline's time.
    pub baseline: Duration,
    /// The candidate's time.
    pub candidate: Duration,
}

impl Comparison {
    /// Candidate time over baseline time, in thousandths (1150 = 1.15×),
    /// computed in integers.
    pub fn ratio_milli(&self) -> u128 {
        let base = self.baseline.as_nanos().max(1);
        self.candidate.as_nanos() * 1000 / base
    }

    /// The ratio formatted as `1.234×`.
    pub fn ratio_text(&self) -> String {
        milli_text(self.ratio_milli())
    }
}

/// A paired comparison: many short rounds, each timing a baseline and a
/// candidate batch back to back (in alternating order), summarised by
/// medians. One slow round — a checkpoint, autovacuum, another process
/// taking the core — moves a mean of totals by tens of percent on a
/// two-core machine; it moves a median of per-round ratios hardly at all.
#[derive(Debug, Clone)]
pub struct PairedComparison {
    /// Median baseline time per operation over the rounds.
    pub baseline: Duration,
    /// Median candidate time per operation over the rounds.
    pub candidate: Duration,
    /// Per-round candidate/baseline ratios in thousandths, sorted.
    pub ratios_milli: Vec<u128>,
}

impl PairedComparison {
    /// The per-round ratio at the `q_percent` quantile (50 = median), in
    /// thousandths.
    pub fn ratio_at(&self, q_percent: usize) -> u128 {
        if self.ratios_milli.is_empty() {
            return 0;
        }
        let i = (self.ratios_milli.len() - 1) * q_percent.min(100) / 100;
        self.ratios_milli[i]
    }
}

fn milli_text(m: u128) -> String {
    format!("{}.{:03}×", m / 1000, m % 1000)
}

/// Runs `rounds` rounds, each `per_round` baseline operations and
/// `per_round` candidate operations back to back — baseline first in even
/// rounds, candidate first in odd ones, so neither side always runs on a
/// warmer cache — after one warm-up round of each.
pub async fn compare_paired<B, BF, C, CF>(
    rounds: u32,
    per_round: u32,
    mut baseline: B,
    mut candidate: C,
) -> PairedComparison
where
    B: FnMut() -> BF,
    BF: Future<Output = ()>,
    C: FnMut() -> CF,
    CF: Future<Output = ()>,
{
    for _ in 0..per_round {
        baseline().await;
        candidate().await;
    }
    let mut base = Vec::with_capacity(rounds as usize);
    let mut cand = Vec::with_capacity(rounds as usize);
    for round in 0..rounds {
        let mut time_baseline = Duration::ZERO;
        let mut time_candidate = Duration::ZERO;
        for side in [round % 2, 1 - round % 2] {
            let start = Instant::now();
            for _ in 0..per_round {
                if side == 0 {
                    baseline().await;
                } else {
                    candidate().await;
                }
            }
            if side == 0 {
                time_baseline = start.elapsed();
            } else {
                time_candidate = start.elapsed();
            }
        }
        base.push(time_baseline / per_round.max(1));
        cand.push(time_candidate / per_round.max(1));
    }
    let mut ratios_milli: Vec<u128> = base
        .iter()
        .zip(&cand)
        .map(|(b, c)| c.as_nanos() * 1000 / b.as_nanos().max(1))
        .collect();
    ratios_milli.sort_unstable();
    base.sort_unstable();
    cand.sort_unstable();
    let mid = base.len() / 2;
    PairedComparison {
        baseline: base.get(mid).copied().unwrap_or_default(),
        candidate: cand.get(mid).copied().unwrap_or_default(),
        ratios_milli,
    }
}

/// Tenant indices drawn from Zipf(`s`) over `n` (index 0 the busiest), by
/// inverting the cumulative distribution; a xorshift generator seeded per
/// client, so both sides see the same sequence.
#[derive(Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
    state: u64,
}

impl Zipf {
    /// Zipf(`s`) over `n` tenants (`s = 0`: uniform), seeded.
    pub fn new(n: usize, s: f64, seed: u64) -> Self {
        let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Zipf {
            cdf,
            state: seed.max(1),
        }
    }

    /// The next tenant index.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let u = (self.state >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1)
    }
}
