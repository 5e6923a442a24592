//! When to try a delivery again, and how to wait for it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::middleware::{RandomSource, SeededRandom};

/// The delays before each attempt of a delivery, with jitter.
///
/// The default is Standard Webhooks' (and Svix's) schedule: at once, then
/// after 5 s, 5 min, 30 min, 2 h, 5 h and 10 h — eight attempts over
/// about a day — each delay shortened by up to 10 % at random so that
/// many failed deliveries do not retry in lockstep. (Not the crate's
/// exponential [`Backoff`](crate::middleware::Backoff): this schedule is a
/// table, not a curve.)
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use saas_events::middleware::SeededRandom;
/// use saas_events::webhooks::RetrySchedule;
///
/// let schedule = RetrySchedule::default().with_jitter(0.0);
/// assert_eq!(schedule.attempts(), 8);
/// assert_eq!(schedule.delay_before(2), Some(Duration::from_secs(5)));
/// assert_eq!(schedule.delay_before(9), None); // no ninth attempt
///
/// let jittered = RetrySchedule::new([Duration::from_secs(100)])
///     .with_random(Arc::new(SeededRandom::new(7)));
/// let delay = jittered.delay_before(2).unwrap();
/// assert!(delay <= Duration::from_secs(100) && delay >= Duration::from_secs(90));
/// ```
#[derive(Clone)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
    jitter: f64,
    random: Arc<dyn RandomSource>,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self::new([
            Duration::from_secs(5),
            Duration::from_secs(5 * 60),
            Duration::from_secs(30 * 60),
            Duration::from_secs(2 * 3600),
            Duration::from_secs(5 * 3600),
            Duration::from_secs(10 * 3600),
            Duration::from_secs(10 * 3600),
        ])
    }
}

impl RetrySchedule {
    /// The first attempt at once, then one retry after each of `retry_delays`.
    pub fn new(retry_delays: impl IntoIterator<Item = Duration>) -> Self {
        Self {
            delays: retry_delays.into_iter().collect(),
            jitter: 0.1,
            random: Arc::new(SeededRandom::from_entropy()),
        }
    }

    /// Sets how much of each delay may be taken off at random (0 to 1).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.1
        };
        self
    }

    /// Sets the random source for jitter (a [`SeededRandom`] in tests).
    pub fn with_random(mut self, random: Arc<dyn RandomSource>) -> Self {
        self.random = random;
        self
    }

    /// How many attempts a delivery gets in all.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.delays.len())
            .unwrap_or(u32::MAX - 1)
            .saturating_add(1)
    }

    /// The delay before attempt `attempt` (2 for the first retry), with
    /// jitter; `None` past the last attempt. Attempt 1 has no delay.
    pub fn delay_before(&self, attempt: u32) -> Option<Duration> {
        if attempt <= 1 {
            return Some(Duration::ZERO);
        }
        let base = *self.delays.get(usize::try_from(attempt - 2).ok()?)?;
        let unit = (self.random.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        Some(base.mul_f64(1.0 - self.jitter * unit))
    }
}

impl fmt::Debug for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetrySchedule")
            .field("delays", &self.delays)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

/// A boxed future of a timer.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Waits out retry delays. [`TokioTimer`] sleeps on tokio's clock; a test
/// can inject one that moves a manual clock instead, so hours of backoff
/// take no time and the delays asked for can be asserted.
pub trait RetryTimer: Send + Sync + fmt::Debug {
    /// Completes after `delay`.
    fn sleep(&self, delay: Duration) -> Sleep;
}

/// A [`RetryTimer`] on `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioTimer;

impl RetryTimer for TokioTimer {
    fn sleep(&self, delay: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(delay))
    }
}

/// When an endpoint that keeps failing is disabled: after its attempts
/// have failed without a success in between for at least `window` (from
/// the injected clock) and at least `min_failures` times. Default: 5 days
/// and 10 failures, as Svix does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DisablePolicy {
    /// How long an endpoint must have failed continuously.
    pub window: Duration,
    /// How many attempts must have failed in a row.
    pub min_failures: u32,
}

impl Default for DisablePolicy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(5 * 24 * 3600),
            min_failures: 10,
        }
    }
}

impl DisablePolicy {
    /// Disable after `min_failures` failed attempts in a row spanning at
    /// least `window`.
    pub fn new(window: Duration, min_failures: u32) -> Self {
        Self {
            window,
            min_failures: min_failures.max(1),
        }
    }
}
