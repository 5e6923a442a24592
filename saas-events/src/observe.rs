//! This crate's metrics (feature `metrics`; catalogue in saas-foundation's
//! `METRICS.md`). Without the feature every function here is empty.

#[cfg(all(feature = "metrics", any(feature = "postgres", feature = "sqlite")))]
use std::cell::Cell;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
use std::time::Duration;

use saas_core::TenantId;

#[cfg(feature = "metrics")]
mod names {
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(super) const RELAYED: &str = "saas_events_relayed_total";
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(super) const RELAY_ERRORS: &str = "saas_events_relay_errors_total";
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(super) const RELAY_LAG: &str = "saas_events_relay_lag_seconds";
    pub(super) const HANDLER_SECONDS: &str = "saas_events_handler_seconds";
    pub(super) const RETRIES: &str = "saas_events_retries_total";
    pub(super) const DEAD_LETTERED: &str = "saas_events_dead_lettered_total";
    pub(super) const REDRIVEN: &str = "saas_events_redriven_total";
}

#[cfg(all(feature = "metrics", any(feature = "postgres", feature = "sqlite")))]
tokio::task_local! {
    /// What a relay pass has read so far: `None` before any read, then
    /// the oldest age among the rows read (`Some(None)`: reads returned
    /// no rows).
    static PASS_OLDEST: Cell<Option<Option<Duration>>>;
}

/// Runs one relay pass, then sets the lag gauge to the age of the oldest
/// event it read, or to zero when its reads returned none (nothing left
/// to forward). A pass that read nothing — no room while forwarded rows
/// await confirmation, a failure before the read — leaves the gauge as it
/// was, so a stalled relay does not report zero lag.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) async fn relay_pass<T>(pass: impl Future<Output = T>) -> T {
    #[cfg(feature = "metrics")]
    {
        let (result, read) = PASS_OLDEST
            .scope(Cell::new(None), async {
                let result = pass.await;
                (result, PASS_OLDEST.with(Cell::get))
            })
            .await;
        if let Some(oldest) = read {
            let lag = oldest.unwrap_or_default().as_secs_f64();
            metrics::gauge!(names::RELAY_LAG).set(lag);
        }
        result
    }
    #[cfg(not(feature = "metrics"))]
    pass.await
}

/// A relay pass read rows whose oldest event was created `age` ago
/// (`None`: no rows, or none with a time).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn relay_read(age: Option<Duration>) {
    #[cfg(feature = "metrics")]
    {
        let _ = PASS_OLDEST.try_with(|read| read.set(Some(read.get().flatten().max(age))));
    }
    #[cfg(not(feature = "metrics"))]
    let _ = age;
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn relayed(events: usize) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::RELAYED).increment(events as u64);
    #[cfg(not(feature = "metrics"))]
    let _ = events;
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn relay_failed() {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::RELAY_ERRORS).increment(1);
}

/// How a delivery was settled: the `outcome` label.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Ack,
    Nack,
    Panic,
}

impl Outcome {
    #[cfg(feature = "metrics")]
    fn label(self) -> &'static str {
        match self {
            Outcome::Ack => "ack",
            Outcome::Nack => "nack",
            Outcome::Panic => "panic",
        }
    }
}

/// A router worker's handler-latency histograms. The handles are kept
/// while the recorder stays the same (one registry lookup per worker, not
/// per event, on the hot path), and taken again when another recorder is
/// in place — one installed later, or a test's thread-local one.
#[derive(Default)]
pub(crate) struct HandlerTimes {
    #[cfg(feature = "metrics")]
    cached: Option<(usize, [metrics::Histogram; 3])>,
}

/// When a delivery's handling started; nothing without the feature.
#[derive(Clone, Copy)]
pub(crate) struct Started(#[cfg(feature = "metrics")] std::time::Instant);

impl HandlerTimes {
    /// Starts timing a delivery (no clock read without the feature).
    pub(crate) fn start(&self) -> Started {
        Started(
            #[cfg(feature = "metrics")]
            std::time::Instant::now(),
        )
    }

    /// A delivery of `tenant`, handled since `started`, settled as
    /// `outcome`.
    pub(crate) fn record(&mut self, tenant: Option<TenantId>, outcome: Outcome, started: Started) {
        #[cfg(feature = "metrics")]
        {
            let seconds = started.0.elapsed().as_secs_f64();
            if let Some(tenant) = tenant.and_then(saas_core::metrics::tenant_label) {
                metrics::histogram!(
                    names::HANDLER_SECONDS,
                    "outcome" => outcome.label(),
                    saas_core::metrics::TENANT_LABEL => tenant
                )
                .record(seconds);
                return;
            }
            // The recorder's address says whether the cached handles are
            // its own.
            let recorder = metrics::with_recorder(|r| std::ptr::from_ref(r).cast::<()>() as usize);
            let handles = match &self.cached {
                Some((cached, handles)) if *cached == recorder => handles,
                _ => {
                    let handles = [
                        metrics::histogram!(names::HANDLER_SECONDS, "outcome" => "ack"),
                        metrics::histogram!(names::HANDLER_SECONDS, "outcome" => "nack"),
                        metrics::histogram!(names::HANDLER_SECONDS, "outcome" => "panic"),
                    ];
                    &self.cached.insert((recorder, handles)).1
                }
            };
            handles[outcome as usize].record(seconds);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (self, tenant, outcome, started);
    }
}

pub(crate) fn retried() {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::RETRIES).increment(1);
}

pub(crate) fn dead_lettered() {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::DEAD_LETTERED).increment(1);
}

pub(crate) fn redriven() {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::REDRIVEN).increment(1);
}
