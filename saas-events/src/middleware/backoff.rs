//! Exponential backoff with jitter from an injected random source.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A source of random numbers for jitter. Inject a [`SeededRandom`] in
/// tests so delays are reproducible.
pub trait RandomSource: Send + Sync + fmt::Debug {
    /// The next random 64-bit value.
    fn next_u64(&self) -> u64;
}

/// A small, fast, seedable generator (SplitMix64). Not for cryptography.
#[derive(Debug)]
pub struct SeededRandom {
    state: AtomicU64,
}

impl SeededRandom {
    /// A generator that yields the same sequence for the same seed.
    pub fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// A generator seeded from the operating system's random source (the
    /// random bits of a UUID v7 and std's per-process hash keys).
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let uuid_bits = uuid::Uuid::now_v7().as_u128() as u64;
        let hash_bits = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self::new(uuid_bits ^ hash_bits)
    }
}

impl RandomSource for SeededRandom {
    fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Exponential backoff: `initial × multiplier^(attempt-1)`, capped at `max`,
/// then reduced by up to `jitter` (a fraction from 0 to 1) at random so
/// that failing consumers do not retry in lockstep.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use saas_events::middleware::{Backoff, SeededRandom};
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
///     .with_jitter(0.0);
/// assert_eq!(backoff.delay(1), Duration::from_millis(100));
/// assert_eq!(backoff.delay(3), Duration::from_millis(400));
/// assert_eq!(backoff.delay(30), Duration::from_secs(10));
///
/// let seeded = |seed| Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
///     .with_random(Arc::new(SeededRandom::new(seed)));
/// assert_eq!(seeded(7).delay(2), seeded(7).delay(2)); // reproducible
/// assert!(seeded(7).delay(2) <= Duration::from_millis(200));
/// ```
#[derive(Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
    random: Arc<dyn RandomSource>,
}

impl Backoff {
    /// Doubling from `initial` up to `max`, with full jitter, seeded from the
    /// operating system.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            multiplier: 2.0,
            jitter: 1.0,
            random: Arc::new(SeededRandom::from_entropy()),
        }
    }

    /// Sets the growth factor (at least 1).
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            2.0
        };
        self
    }

    /// Sets how much of each delay may be taken off at random (0 to 1).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            1.0
        };
        self
    }

    /// Sets the random source for jitter.
    pub fn with_random(mut self, random: Arc<dyn RandomSource>) -> Self {
        self.random = random;
        self
    }

    /// The delay before retry number `attempt` (1 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let unit = (self.random.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let jittered = capped * (1.0 - self.jitter * unit);
        Duration::try_from_secs_f64(jittered).unwrap_or(self.max)
    }
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backoff")
            .field("initial", &self.initial)
            .field("max", &self.max)
            .field("multiplier", &self.multiplier)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}
