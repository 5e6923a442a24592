//! A simulated-clock harness: drive the engine month by month.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use saas_core::{Clock, ManualClock};

use crate::{
    BillingCalendar, BillingConfig, BillingEngine, BillingError, BillingEvent, BillingStores,
    Cadence, Catalog, CycleReport, InMemoryEventRecorder,
};

/// An engine on a [`ManualClock`] with in-memory stores (or given ones)
/// and an event recorder.
#[derive(Debug, Clone)]
pub struct BillingHarness {
    clock: ManualClock,
    engine: BillingEngine,
    events: Arc<InMemoryEventRecorder>,
    months: BillingCalendar,
    month: i64,
}

impl BillingHarness {
    /// A harness starting at `start`, with in-memory stores.
    pub fn new(catalog: Catalog, start: DateTime<Utc>, config: BillingConfig) -> BillingHarness {
        BillingHarness::with_stores(catalog, start, config, BillingStores::in_memory())
    }

    /// A harness over the given stores (to run scenarios on another backend).
    pub fn with_stores(
        catalog: Catalog,
        start: DateTime<Utc>,
        config: BillingConfig,
        stores: BillingStores,
    ) -> BillingHarness {
        let clock = ManualClock::new(start);
        let events = Arc::new(InMemoryEventRecorder::new());
        let engine = BillingEngine::new(Arc::new(catalog), stores, Arc::new(clock.clone()))
            .with_config(config)
            .with_event_sink(events.clone());
        BillingHarness {
            clock,
            engine,
            events,
            months: BillingCalendar::new(start, chrono_tz::UTC, Cadence::monthly()),
            month: 0,
        }
    }

    /// The harness with its engine changed by `f` (a tax resolver, an
    /// invoice issuer…); the engine keeps the harness's clock and event
    /// recorder.
    pub fn map_engine(mut self, f: impl FnOnce(BillingEngine) -> BillingEngine) -> BillingHarness {
        self.engine = f(self.engine);
        self
    }

    /// The engine.
    pub fn engine(&self) -> &BillingEngine {
        &self.engine
    }

    /// The clock.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Sets the clock (forwards or backwards) without running the cycle.
    pub fn set_time(&self, at: DateTime<Utc>) {
        self.clock.set(at);
    }

    /// Moves the clock to `at` and runs the billing cycle.
    ///
    /// # Errors
    /// From the cycle.
    pub async fn advance_to(&mut self, at: DateTime<Utc>) -> Result<CycleReport, BillingError> {
        self.clock.set(at);
        self.engine.run_billing_cycle().await
    }

    /// Moves the clock by `by` and runs the billing cycle.
    ///
    /// # Errors
    /// From the cycle.
    pub async fn advance(&mut self, by: TimeDelta) -> Result<CycleReport, BillingError> {
        self.clock.advance(by);
        self.engine.run_billing_cycle().await
    }

    /// Advances `n` calendar months from the harness start (month-end
    /// clamped, derived from the start), running the cycle at each month
    /// boundary; returns the reports in order.
    ///
    /// # Errors
    /// From the cycle.
    pub async fn advance_months(&mut self, n: u32) -> Result<Vec<CycleReport>, BillingError> {
        let mut reports = Vec::new();
        for _ in 0..n {
            self.month += 1;
            let at = self.months.period(self.month)?.start();
            reports.push(self.advance_to(at).await?);
        }
        Ok(reports)
    }

    /// Every domain event so far.
    pub fn events(&self) -> Vec<BillingEvent> {
        self.events.events()
    }

    /// Takes the events so far.
    pub fn take_events(&self) -> Vec<BillingEvent> {
        self.events.take()
    }
}
