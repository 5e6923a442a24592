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
use crate::store::{IngestOutcome, UsageRecord};
use crate::subscription::Subscription;

impl BillingEngine {
    /// Records one usage event. See [`record_usage_batch`](Self::record_usage_batch).
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
        let subs = self.batch_subscriptions(&events).await;
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
        let stored = self.stores.usage.ingest(records.clone()).await?;
        for ((position, record), outcome) in positions.into_iter().zip(records).zip(stored) {
            if let Ok(IngestOutcome::Recorded { .. }) = outcome {
                let sub = subs.get(&(record.event.tenant_id, record.event.subscription_id));
                if let Some(Ok(sub)) = sub {
                    self.count_quota(sub, &record, now).await;
                }
            }
            if let Some(slot) = outcomes.get_mut(position) {
                *slot = Some(outcome);
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(BillingError::invalid("batch", "no outcome"))))
            .collect())
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
