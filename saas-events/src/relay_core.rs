//! What the PostgreSQL and SQLite outbox relays share: the counters, the
//! "one batch from every location" pass and the task that runs passes
//! until it is stopped. Each backend supplies only how one location is
//! drained ([`RelayBackend`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::EventError;

/// Counters of a relay, shared with its `RelayHandle`.
#[derive(Debug, Default)]
pub struct RelayStats {
    relayed: AtomicU64,
    errors: AtomicU64,
}

impl RelayStats {
    /// Events forwarded (a batch forwarded again after a failure counts
    /// again).
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }

    /// Failed passes over a location (each also logged with `tracing`).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub(crate) fn add_relayed(&self, events: usize) {
        self.relayed.fetch_add(events as u64, Ordering::Relaxed);
    }
}

/// One backend's relay, as the shared pass and task drive it.
#[async_trait]
pub(crate) trait RelayBackend: Clone + Send + Sync + 'static {
    /// Where one outbox table is.
    type Location: Send + Sync;

    /// The relay's counters.
    fn counters(&self) -> &RelayStats;
    /// Rows per batch: a pass that forwarded this many looks again at once.
    fn batch_rows(&self) -> u32;
    /// How long an idle or failing relay waits before the next pass.
    fn idle_wait(&self) -> Duration;
    /// The locations to drain, asked again on every pass.
    async fn current_locations(&self) -> Result<Vec<Self::Location>, EventError>;
    /// The location's name, for the log.
    fn location_name(location: &Self::Location) -> &str;
    /// Forwards one batch from `location`; returns how many events.
    async fn drain_location(&self, location: &Self::Location) -> Result<usize, EventError>;
}

/// Implements [`RelayBackend`] for a backend's `OutboxRelay`, whose fields
/// (`locations`, `stats`, `config.batch_size`, `config.poll_interval`)
/// and `relay_location` method have the same names in both backends.
macro_rules! impl_relay_backend {
    ($relay:ty, $location:ty) => {
        #[async_trait::async_trait]
        impl $crate::relay_core::RelayBackend for $relay {
            type Location = $location;

            fn counters(&self) -> &$crate::relay_core::RelayStats {
                &self.stats
            }

            fn batch_rows(&self) -> u32 {
                self.config.batch_size
            }

            fn idle_wait(&self) -> std::time::Duration {
                self.config.poll_interval
            }

            async fn current_locations(&self) -> Result<Vec<$location>, $crate::EventError> {
                self.locations.locations().await
            }

            fn location_name(location: &$location) -> &str {
                location.name()
            }

            async fn drain_location(
                &self,
                location: &$location,
            ) -> Result<usize, $crate::EventError> {
                self.relay_location(location).await
            }
        }
    };
}
pub(crate) use impl_relay_backend;

/// At most one batch from every location: a location that fails is logged
/// and counted and the others are still drained; the first error is
/// returned after, if nothing was forwarded.
pub(crate) async fn relay_once<R: RelayBackend>(relay: &R) -> Result<usize, EventError> {
    let mut total = 0;
    let mut first_error = None;
    for location in relay.current_locations().await? {
        match relay.drain_location(&location).await {
            Ok(n) => total += n,
            Err(error) => {
                relay.counters().errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(location = R::location_name(&location), %error, "outbox relay pass failed");
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) if total == 0 => Err(error),
        _ => Ok(total),
    }
}

/// Runs `relay` on a tokio task until [`RelayHandle::shutdown`]: passes
/// back to back while there is work, `idle_wait` apart when idle or
/// failing.
pub(crate) fn spawn<R: RelayBackend>(relay: R) -> RelayHandle<R> {
    let (stop, mut stopped) = watch::channel(false);
    let runner = relay.clone();
    let task = tokio::spawn(async move {
        loop {
            let full = match relay_once(&runner).await {
                Ok(n) => n >= runner.batch_rows() as usize,
                Err(_) => false, // logged and counted in relay_once
            };
            if *stopped.borrow() {
                break;
            }
            if !full {
                tokio::select! {
                    _ = tokio::time::sleep(runner.idle_wait()) => {}
                    _ = stopped.changed() => break,
                }
            }
        }
    });
    RelayHandle { relay, stop, task }
}

/// A relay running on a task (`R` is the backend's `OutboxRelay`).
#[derive(Debug)]
pub struct RelayHandle<R> {
    relay: R,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl<R> RelayHandle<R> {
    /// The relay (for its `oldest_pending_age` and its stats).
    pub fn relay(&self) -> &R {
        &self.relay
    }

    /// Stops after the current pass and waits for it.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Stops at once, abandoning the current pass (its transaction rolls
    /// back, so its batch is forwarded again later).
    pub fn abort(self) {
        self.task.abort();
    }
}
