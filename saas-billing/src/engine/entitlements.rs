//! Keeping the entitlement checker in step with subscriptions, and
//! rebuilding it from the stores at startup.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use saas_core::TenantId;

use super::BillingEngine;
use crate::entitlement::EntitlementValue;
use crate::error::BillingError;
use crate::metering::Aggregation;
use crate::subscription::{Subscription, SubscriptionStatus};

/// Subscriptions read per store round trip.
const PAGE: usize = 500;

impl BillingEngine {
    /// Brings the checker in line with a saved subscription: a closed one
    /// is forgotten; one not served now (paused, unpaid, incomplete,
    /// canceled, past its end) keeps its plan's counters but grants
    /// nothing; a served one grants its plan version's entitlements.
    /// Every path that changes a status calls this after saving.
    pub(super) fn sync_entitlements(&self, sub: &Subscription) -> Result<(), BillingError> {
        if sub.closed {
            self.entitlements.remove(sub.tenant_id);
            return Ok(());
        }
        let plan = self.catalog.plan(&sub.plan)?;
        let now = self.clock.now();
        let suspended = (!sub.is_served(now)).then(|| {
            // A served status past its end (cancel at period end, before
            // the cycle closes it) is reported as canceled.
            if sub.ended_at.is_some_and(|end| now >= end) {
                SubscriptionStatus::Canceled
            } else {
                sub.status
            }
        });
        self.entitlements
            .install(sub.tenant_id, plan.entitlements(), sub.calendar, suspended);
        Ok(())
    }

    /// Rebuilds the entitlement checker from the stores: loads the plan
    /// version entitlements of every open subscription (granted if it is
    /// served now, denied with its status if not) and sets each quota's
    /// usage to what the usage store holds for the tenant's current
    /// period. Returns how many subscriptions were loaded.
    ///
    /// The checker lives in memory, so a new process (or a second API
    /// server) must call this once at startup, before answering
    /// [`check`](Self::check)es: without it every existing tenant is
    /// denied ([`DenyReason::UnknownTenant`](crate::DenyReason)) and quota
    /// counters start at zero. Static limits (`seats`) are holdings the
    /// host knows, not usage: set them with
    /// [`EntitlementChecker::set_used`](crate::EntitlementChecker::set_used).
    ///
    /// A tenant with several open subscriptions gets the entitlements of a
    /// served one over one that is not, then of the latest created (the
    /// checker holds one subscription per tenant).
    ///
    /// # Errors
    /// A store failure, or a subscription on a plan version missing from
    /// the catalog (`NotFound`); subscriptions loaded before it stay.
    pub async fn restore_entitlements(&self) -> Result<usize, BillingError> {
        let now = self.clock.now();
        // Per tenant: whether the loaded subscription is served, and when
        // it was created — what decides which of several wins.
        let mut loaded: HashMap<TenantId, (bool, DateTime<Utc>)> = HashMap::new();
        let mut count = 0;
        let mut after = None;
        loop {
            let page = self.stores.subscriptions.open(after, PAGE).await?;
            for sub in &page {
                let rank = (sub.is_served(now), sub.created_at);
                if loaded.get(&sub.tenant_id).is_some_and(|best| *best > rank) {
                    continue;
                }
                self.restore_one(sub, now).await?;
                loaded.insert(sub.tenant_id, rank);
                count += 1;
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.id),
                _ => break,
            }
        }
        Ok(count)
    }

    /// Loads one subscription's entitlements and its quotas' usage in the
    /// period containing `now`, counted as recording does: one per event
    /// on a count meter, the values on a sum meter.
    async fn restore_one(
        &self,
        sub: &Subscription,
        now: DateTime<Utc>,
    ) -> Result<(), BillingError> {
        self.sync_entitlements(sub)?;
        let plan = self.catalog.plan(&sub.plan)?;
        let quotas: Vec<_> = plan
            .entitlements()
            .iter()
            .filter_map(|e| match e.value() {
                EntitlementValue::Quota { meter, .. } => Some((e.feature(), meter)),
                _ => None,
            })
            .collect();
        if quotas.is_empty() {
            return Ok(());
        }
        let period = sub.calendar.period_containing(now)?.index();
        let events = self
            .stores
            .usage
            .for_period(sub.tenant_id, sub.id, period, i64::MAX)
            .await?;
        for (feature, meter) in quotas {
            let aggregation = self.catalog.meter(meter)?.aggregation();
            let mut used = Decimal::ZERO;
            for u in events.iter().filter(|u| &u.event.meter == meter) {
                used = used.saturating_add(match aggregation {
                    Aggregation::Count => Decimal::ONE,
                    Aggregation::Sum => u.event.value,
                    // Not cumulative: recording does not count these either.
                    _ => Decimal::ZERO,
                });
            }
            self.entitlements
                .set_used(sub.tenant_id, feature.as_str(), used);
        }
        Ok(())
    }
}
