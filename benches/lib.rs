//! Benchmarks for saas-foundation; see `BENCHMARKS.md` at the repository
//! root for how to run them and the latest figures.
//!
//! Each benchmark reports ratios against a baseline measured in the same
//! run, so figures compare across machines. The helpers here time
//! alternating rounds of a baseline and a candidate.

use std::future::Future;
use std::time::{Duration, Instant};

/// Mean time per operation of a baseline and a candidate, measured in
/// alternating rounds so drift affects both alike.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    /// Mean baseline time per operation.
    pub baseline: Duration,
    /// Mean candidate time per operation.
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
        let m = self.ratio_milli();
        format!("{}.{:03}×", m / 1000, m % 1000)
    }
}

/// Runs `rounds` alternating rounds of `per_round` baseline and candidate
/// operations (after one warm-up round of each).
pub async fn compare<B, BF, C, CF>(
    rounds: u32,
    per_round: u32,
    mut baseline: B,
    mut candidate: C,
) -> Comparison
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
    let mut base_total = Duration::ZERO;
    let mut cand_total = Duration::ZERO;
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..per_round {
            baseline().await;
        }
        base_total += start.elapsed();
        let start = Instant::now();
        for _ in 0..per_round {
            candidate().await;
        }
        cand_total += start.elapsed();
    }
    let n = rounds * per_round;
    Comparison {
        baseline: base_total / n,
        candidate: cand_total / n,
    }
}
