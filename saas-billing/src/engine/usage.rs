//! Recording usage through the engine.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use saas_core::TenantId;

use super::BillingEngine;
use crate::error::BillingError;
use crate::events::BillingEvent;
use crate::ids::SubscriptionId;
use crate::metering::{Aggregation, UsageEvent};
use crate::store::{IngestOutcome, UsageRecord, UsageWriter};
use crate::subscription::Subscription;

/// Newly recorded usage, and the subscriptions it was checked against.
#[derive(Debug, Default)]
struct Recorded {
    subs: HashMap<(TenantId, SubscriptionId), Subscription>,
    records: Vec<UsageRecord>,
}

/// Usage recorded in a caller's transaction
/// ([`BillingEngine::record_usage_in`]) that the engine's in-memory
/// entitlement counters have not counted yet: pass it to
/// [`BillingEngine::usage_committed`] once the transaction has committed;
/// drop it (or take [`outcome`](Self::outcome)) after a rollback.
#[derive(Debug)]
#[must_use = "after the transaction commits, pass it to BillingEngine::usage_committed, \
              or the entitlement counters miss this usage until restore_entitlements"]
pub struct UncommittedUsage<O> {
    outcome: O,
    recorded: Recorded,
}

impl<O> UncommittedUsage<O> {
    /// The store's outcome (one per event for a batch), as
    /// [`usage_committed`](BillingEngine::usage_committed) returns it.
    pub fn outcome(&self) -> &O {
        &self.outcome
    }

    /// How many events were newly recorded (not duplicates), the ones
    /// [`usage_committed`](BillingEngine::usage_committed) will count.
    pub fn recorded(&self) -> usize {
        self.recorded.records.len()
    }
}

impl BillingEngine {
    /// Records one usage event. See [`record_usage_batch`](Self::record_usage_batch).
    ///
    /// A free plan with 3 API calls a month, on SQLite stores: a retried
    /// request is counted once, the quota's check says what is left, and
    /// an engine started later over the same file restores the count.
    ///
    /// ```
    /// # #[cfg(feature = "sqlite")]
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    ///
    /// use saas_billing::store::sqlite::SqliteBillingStores;
    /// use saas_billing::{
    ///     Aggregation, BillingEngine, Catalog, Charge, Currency, Decimal, DenyReason,
    ///     IngestOutcome, Meter, MeterKey, Money, NewSubscription, PlanId, PlanRef, PlanVersion,
    ///     Product, ProductId, SystemClock, TenantId, UsageEvent, Utc, dec,
    /// };
    /// use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let dir = std::env::temp_dir().join(uuid::Uuid::new_v4().to_string());
    /// std::fs::create_dir_all(&dir)?;
    /// let file = SqliteConnectOptions::new()
    ///     .filename(dir.join("billing.sqlite"))
    ///     .create_if_missing(true);
    /// let stores = SqliteBillingStores::new(SqlitePool::connect_with(file).await?);
    /// stores.migrate().await?;
    ///
    /// let app = ProductId::new("app")?;
    /// let catalog = Arc::new(
    ///     Catalog::builder()
    ///         .product(Product::new(app.clone(), "App"))
    ///         .meter(Meter::new(MeterKey::new("api_calls")?, Aggregation::Count))
    ///         .plan(
    ///             PlanVersion::builder(PlanId::new("free")?, 1, app)
    ///                 .recurring("base", "Free", [Charge::flat(Money::new(dec!(0), Currency::USD))?])
    ///                 .quota("api_calls", "api_calls", dec!(3))
    ///                 .build()?,
    ///         )
    ///         .build()?,
    /// );
    /// let engine = BillingEngine::new(
    ///     Arc::clone(&catalog),
    ///     stores.billing_stores(),
    ///     Arc::new(SystemClock),
    /// );
    /// let tenant = TenantId::new();
    /// let free = PlanRef::new(PlanId::new("free")?, 1);
    /// let sub = engine
    ///     .create_subscription(NewSubscription::new(tenant, free, Currency::USD))
    ///     .await?;
    ///
    /// // One event per request, keyed by the request id.
    /// let now = Utc::now();
    /// let call = |request_id: &str| -> Result<UsageEvent, saas_billing::BillingError> {
    ///     let meter = MeterKey::new("api_calls")?;
    ///     Ok(UsageEvent::new(tenant, sub.id(), meter, Decimal::ONE, now, request_id))
    /// };
    /// engine.record_usage(call("req-1")?).await?;
    /// engine.record_usage(call("req-2")?).await?;
    /// let retried = engine.record_usage(call("req-2")?).await?;
    /// assert!(matches!(retried, IngestOutcome::Duplicate { .. }));
    ///
    /// // Two of three used: one more call is allowed, and is the last.
    /// let quota = engine.check(tenant, "api_calls", Decimal::ONE);
    /// assert!(quota.is_allowed());
    /// assert_eq!(quota.remaining(), Some(dec!(0)));
    /// engine.record_usage(call("req-3")?).await?;
    /// let over = engine.check(tenant, "api_calls", Decimal::ONE);
    /// assert_eq!(over.reason(), Some(DenyReason::OverLimit));
    ///
    /// // The usage is stored: a restarted engine counts it again.
    /// let restarted = BillingEngine::new(catalog, stores.billing_stores(), Arc::new(SystemClock));
    /// restarted.restore_entitlements().await?;
    /// assert!(!restarted.check(tenant, "api_calls", Decimal::ONE).is_allowed());
    ///
    /// stores.pool().close().await;
    /// std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "sqlite"))]
    /// # fn main() {}
    /// ```
    ///
    /// # Errors
    /// As for one event of the batch.
    pub async fn record_usage(&self, event: UsageEvent) -> Result<IngestOutcome, BillingError> {
        let mut outcomes = self.record_usage_batch(vec![event]).await?;
        outcomes
            .pop()
            .unwrap_or_else(|| Err(BillingError::invalid("batch", "no outcome")))
    }

    /// Records usage events, one outcome per event, in order. An event is
    /// refused (`InvalidInput`) when its value is negative, its key empty,
    /// its timestamp beyond the clock plus the allowed skew, before the
    /// subscription's creation or at/after its end, or when the
    /// subscription's final invoice is finalized; `NotFound` for an unknown
    /// subscription or meter; `IdempotencyConflict` for a reused key with
    /// another payload. Accepted usage also counts against quotas
    /// (publishing `QuotaExceeded` when one is crossed).
    ///
    /// Each distinct subscription of the batch is read once and the
    /// accepted events are stored with one `ingest` call, so the store
    /// round trips grow with the subscriptions in the batch, not with its
    /// events.
    ///
    /// # Errors
    /// A store failure fails the whole batch.
    pub async fn record_usage_batch(
        &self,
        events: Vec<UsageEvent>,
    ) -> Result<Vec<Result<IngestOutcome, BillingError>>, BillingError> {
        let now = self.clock.now();
        let (outcomes, recorded) = self.record(events, None).await?;
        self.count_recorded(&recorded, now).await;
        Ok(outcomes)
    }

    /// Records one usage event in the caller's transaction. See
    /// [`record_usage_batch_in`](Self::record_usage_batch_in).
    ///
    /// # Errors
    /// As for one event of [`record_usage_batch`](Self::record_usage_batch),
    /// and a store failure.
    pub async fn record_usage_in(
        &self,
        writer: &mut (dyn UsageWriter + '_),
        event: UsageEvent,
    ) -> Result<UncommittedUsage<IngestOutcome>, BillingError> {
        let (mut outcomes, recorded) = self.record(vec![event], Some(writer)).await?;
        let outcome = outcomes
            .pop()
            .unwrap_or_else(|| Err(BillingError::invalid("batch", "no outcome")))?;
        Ok(UncommittedUsage { outcome, recorded })
    }

    /// Records usage events through `writer` — a connection inside the
    /// caller's open transaction (`&mut *tx` for a `sqlx::Transaction` or
    /// a saas-tenancy `PgTenantTx`) — so the business write, the usage and
    /// whatever else the transaction holds (a quota consumption with
    /// `try_consume_in`, an outbox event) commit or roll back together.
    ///
    /// The events are checked as by [`record_usage_batch`](Self::record_usage_batch)
    /// (subscriptions and seals are read through the engine's stores,
    /// outside the transaction) and stored by
    /// [`UsageWriter::ingest_usage`] with the same outcomes: idempotency,
    /// duplicates and conflicts are decided inside the transaction.
    ///
    /// The engine's in-memory entitlement counters (what
    /// [`check`](Self::check) answers) are **not** changed here: the
    /// transaction may still roll back. Once it has committed, pass the
    /// returned [`UncommittedUsage`] to
    /// [`usage_committed`](Self::usage_committed), which counts it (and
    /// publishes `QuotaExceeded` when a quota is crossed); after a
    /// rollback drop it. Counting on the caller's word rather than before
    /// the commit keeps the counters from ever holding usage that does
    /// not exist; if the process stops between the commit and
    /// `usage_committed`, the counters are low until
    /// [`restore_entitlements`](Self::restore_entitlements) reloads them
    /// from the stored usage. Where a quota must be exact across servers,
    /// consume it in the same transaction with the quota store's
    /// `try_consume_in` — that count is the durable one.
    ///
    /// ```no_run
    /// # #[cfg(feature = "postgres")]
    /// # async fn example(
    /// #     engine: saas_billing::BillingEngine,
    /// #     pool: sqlx::PgPool,
    /// #     event: saas_billing::UsageEvent,
    /// # ) -> Result<(), Box<dyn std::error::Error>> {
    /// use saas_billing::quota::{PgQuotaStore, QuotaKey};
    ///
    /// let quotas = PgQuotaStore::new(pool.clone());
    /// let key = QuotaKey::new(event.tenant_id, "api_calls", "2026-12")?;
    ///
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("INSERT INTO orders (id) VALUES (gen_random_uuid())")
    ///     .execute(&mut *tx)
    ///     .await?;
    /// let usage = engine.record_usage_in(&mut *tx, event).await?;
    /// if !quotas.try_consume_in(&mut tx, &key, 1, 10_000).await?.is_granted() {
    ///     tx.rollback().await?; // nothing of the three remains
    ///     return Ok(());
    /// }
    /// tx.commit().await?;
    /// let outcome = engine.usage_committed(usage).await; // now counted
    /// # let _ = outcome;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A store failure (reading subscriptions, or the writer's) fails the
    /// whole batch; the caller's transaction then holds none of it (the
    /// writer's savepoint was rolled back) and may continue or roll back.
    pub async fn record_usage_batch_in(
        &self,
        writer: &mut (dyn UsageWriter + '_),
        events: Vec<UsageEvent>,
    ) -> Result<UncommittedUsage<Vec<Result<IngestOutcome, BillingError>>>, BillingError> {
        let (outcome, recorded) = self.record(events, Some(writer)).await?;
        Ok(UncommittedUsage { outcome, recorded })
    }

    /// Counts usage recorded by [`record_usage_in`](Self::record_usage_in)
    /// or [`record_usage_batch_in`](Self::record_usage_batch_in) whose
    /// transaction has committed in the in-memory entitlement counters
    /// (usage of the period current by the clock now; events that were
    /// duplicates are not counted again), publishing `QuotaExceeded` when
    /// a quota is crossed, and returns the outcome. Call it once, after
    /// the commit; never after a rollback.
    pub async fn usage_committed<O>(&self, usage: UncommittedUsage<O>) -> O {
        self.count_recorded(&usage.recorded, self.clock.now()).await;
        usage.outcome
    }

    /// Checks the events and stores the admitted ones with one `ingest`
    /// on the engine's usage store (`writer` `None`) or on `writer`.
    /// Returns one outcome per event and what was newly recorded, with
    /// its subscription, for the quota counters.
    async fn record(
        &self,
        events: Vec<UsageEvent>,
        writer: Option<&mut (dyn UsageWriter + '_)>,
    ) -> Result<(Vec<Result<IngestOutcome, BillingError>>, Recorded), BillingError> {
        let now = self.clock.now();
        let mut subs = self.batch_subscriptions(&events).await;
        let mut outcomes: Vec<Option<Result<IngestOutcome, BillingError>>> =
            Vec::with_capacity(events.len());
        let mut records = Vec::new();
        let mut positions = Vec::new();
        for event in events {
            let sub = subs.get(&(event.tenant_id, event.subscription_id));
            match self.admit(&event, sub, now).await {
                Ok(period) => {
                    positions.push(outcomes.len());
                    outcomes.push(None);
                    records.push(UsageRecord { event, period });
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        let stored = match writer {
            None => self.stores.usage.ingest(records.clone()).await?,
            Some(writer) => writer.ingest_usage(records.clone()).await?,
        };
        let mut recorded = Recorded::default();
        for ((position, record), outcome) in positions.into_iter().zip(records).zip(stored) {
            if let Ok(IngestOutcome::Recorded { .. }) = outcome {
                recorded.records.push(record);
            }
            if let Some(slot) = outcomes.get_mut(position) {
                *slot = Some(outcome);
            }
        }
        for record in &recorded.records {
            let key = (record.event.tenant_id, record.event.subscription_id);
            if let Entry::Vacant(slot) = recorded.subs.entry(key)
                && let Some(Ok(sub)) = subs.remove(&key)
            {
                slot.insert(sub);
            }
        }
        let outcomes = outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(BillingError::invalid("batch", "no outcome"))))
            .collect();
        Ok((outcomes, recorded))
    }

    async fn count_recorded(&self, recorded: &Recorded, now: DateTime<Utc>) {
        for record in &recorded.records {
            let key = (record.event.tenant_id, record.event.subscription_id);
            if let Some(sub) = recorded.subs.get(&key) {
                self.count_quota(sub, record, now).await;
            }
        }
    }

    /// Reads each distinct subscription of the batch once. A failed read
    /// is kept as that subscription's events' outcome, as before batching.
    async fn batch_subscriptions(
        &self,
        events: &[UsageEvent],
    ) -> HashMap<(TenantId, SubscriptionId), Result<Subscription, BillingError>> {
        let mut subs = HashMap::new();
        for event in events {
            let key = (event.tenant_id, event.subscription_id);
            if let Entry::Vacant(slot) = subs.entry(key) {
                slot.insert(self.stores.subscriptions.get(key.0, key.1).await);
            }
        }
        subs
    }

    /// Checks an event against its subscription; returns its period.
    async fn admit(
        &self,
        event: &UsageEvent,
        sub: Option<&Result<Subscription, BillingError>>,
        now: DateTime<Utc>,
    ) -> Result<i64, BillingError> {
        event.validate()?;
        let sub = match sub {
            Some(Ok(sub)) => sub,
            Some(Err(e)) => return Err(e.clone()),
            None => {
                return Err(BillingError::not_found(
                    "subscription",
                    event.subscription_id,
                ));
            }
        };
        self.catalog.meter(&event.meter)?;
        if now
            .checked_add_signed(self.config.max_clock_skew)
            .is_some_and(|limit| event.timestamp > limit)
        {
            return Err(BillingError::invalid("timestamp", "is in the future"));
        }
        if event.timestamp < sub.started_at() {
            return Err(BillingError::invalid(
                "timestamp",
                "is before the subscription began",
            ));
        }
        if sub.ended_at.is_some_and(|end| event.timestamp >= end) {
            return Err(BillingError::invalid(
                "timestamp",
                "is after the subscription ended",
            ));
        }
        let period = sub.calendar.period_containing(event.timestamp)?.index();
        if period < 0 && event.timestamp >= sub.paid_start() {
            // The prorated first period before a billing cycle anchor.
            // Stores treat negative periods as trial usage, never moved
            // to a later invoice, so once its invoice is finalized late
            // usage of it is refused rather than dropped.
            let sealed = self
                .stores
                .usage
                .sealed_through(sub.tenant_id, sub.id)
                .await?;
            if sealed.is_some_and(|s| s >= period) {
                return Err(BillingError::invalid(
                    "timestamp",
                    "falls in the prorated first period before the billing cycle anchor, \
                     whose invoice is finalized; late usage of that period cannot be corrected",
                ));
            }
        }
        if sub.closed {
            let sealed = self
                .stores
                .usage
                .sealed_through(sub.tenant_id, sub.id)
                .await?;
            if sealed.is_some_and(|s| s >= sub.current_period) {
                return Err(BillingError::invalid(
                    "timestamp",
                    "the subscription's final invoice is finalized; no invoice is left to correct",
                ));
            }
        }
        Ok(period)
    }

    async fn count_quota(&self, sub: &Subscription, record: &UsageRecord, now: DateTime<Utc>) {
        let tenant = record.event.tenant_id;
        let current = sub.calendar.period_containing(now).map(|p| p.index()).ok();
        if current != Some(record.period) {
            return;
        }
        // Quotas count events on count meters and values on sum meters;
        // other aggregations are not cumulative and are not counted here.
        let amount = match self
            .catalog
            .meter(&record.event.meter)
            .map(|m| m.aggregation())
        {
            Ok(Aggregation::Count) => Decimal::ONE,
            Ok(Aggregation::Sum) => record.event.value,
            _ => return,
        };
        if let Some((feature, limit)) =
            self.entitlements
                .record_usage(tenant, &record.event.meter, amount)
        {
            self.events
                .publish(BillingEvent::QuotaExceeded {
                    tenant_id: tenant,
                    feature,
                    limit,
                    at: now,
                })
                .await;
        }
    }
}
