//! In-memory stores: one mutex per store is the critical section that a
//! SQL store's transaction would be. Invoices (with credit notes and the
//! credit ledger) and coupons have files of their own.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::TenantId;

use super::{IngestOutcome, StoredUsage, SubscriptionStore, UsageRecord, UsageStore};
use crate::error::BillingError;
use crate::ids::SubscriptionId;
use crate::subscription::Subscription;

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Subscriptions in memory.
#[derive(Debug, Default)]
pub struct InMemorySubscriptionStore {
    rows: Mutex<HashMap<SubscriptionId, Subscription>>,
}

impl InMemorySubscriptionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SubscriptionStore for InMemorySubscriptionStore {
    async fn insert(&self, mut subscription: Subscription) -> Result<Subscription, BillingError> {
        let mut rows = lock(&self.rows);
        if rows.contains_key(&subscription.id) {
            return Err(BillingError::AlreadyExists {
                what: "subscription",
                id: subscription.id.to_string(),
            });
        }
        subscription.version = 1;
        rows.insert(subscription.id, subscription.clone());
        Ok(subscription)
    }

    async fn get(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
    ) -> Result<Subscription, BillingError> {
        lock(&self.rows)
            .get(&id)
            .filter(|s| s.tenant_id == tenant)
            .cloned()
            .ok_or_else(|| BillingError::not_found("subscription", id))
    }

    async fn update(&self, mut subscription: Subscription) -> Result<Subscription, BillingError> {
        let mut rows = lock(&self.rows);
        let stored = rows
            .get_mut(&subscription.id)
            .filter(|s| s.tenant_id == subscription.tenant_id)
            .ok_or_else(|| BillingError::not_found("subscription", subscription.id))?;
        if stored.version != subscription.version {
            return Err(BillingError::StaleVersion {
                what: "subscription",
                id: subscription.id.to_string(),
                expected: subscription.version,
                found: stored.version,
            });
        }
        subscription.version += 1;
        *stored = subscription.clone();
        Ok(subscription)
    }

    async fn due(
        &self,
        at: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Subscription>, BillingError> {
        let rows = lock(&self.rows);
        let mut due: Vec<(DateTime<Utc>, &Subscription)> = rows
            .values()
            .filter_map(|s| s.next_due_at().filter(|d| *d <= at).map(|d| (d, s)))
            .collect();
        due.sort_by_key(|(d, s)| (*d, s.id));
        Ok(due
            .into_iter()
            .take(limit)
            .map(|(_, s)| s.clone())
            .collect())
    }

    async fn list(&self, tenant: TenantId) -> Result<Vec<Subscription>, BillingError> {
        let rows = lock(&self.rows);
        let mut list: Vec<Subscription> = rows
            .values()
            .filter(|s| s.tenant_id == tenant)
            .cloned()
            .collect();
        list.sort_by_key(|s| (s.created_at, s.id));
        Ok(list)
    }

    async fn open(
        &self,
        after: Option<SubscriptionId>,
        limit: usize,
    ) -> Result<Vec<Subscription>, BillingError> {
        let rows = lock(&self.rows);
        let mut open: Vec<&Subscription> = rows
            .values()
            .filter(|s| s.next_due_at().is_some() && after.is_none_or(|a| s.id > a))
            .collect();
        open.sort_by_key(|s| s.id);
        Ok(open.into_iter().take(limit).cloned().collect())
    }
}

#[derive(Debug, Default)]
struct UsageState {
    /// (tenant, idempotency key) → index in `events`.
    keys: HashMap<(TenantId, String), usize>,
    events: Vec<StoredUsage>,
    sealed: HashMap<(TenantId, SubscriptionId), i64>,
}

/// Usage events in memory.
#[derive(Debug, Default)]
pub struct InMemoryUsageStore {
    state: Mutex<UsageState>,
}

impl InMemoryUsageStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl UsageStore for InMemoryUsageStore {
    async fn ingest(
        &self,
        batch: Vec<UsageRecord>,
    ) -> Result<Vec<Result<IngestOutcome, BillingError>>, BillingError> {
        let mut state = lock(&self.state);
        let mut outcomes = Vec::with_capacity(batch.len());
        for record in batch {
            let event = record.event;
            let key = (event.tenant_id, event.idempotency_key.clone());
            if let Some(&index) = state.keys.get(&key) {
                let stored = &state.events[index];
                outcomes.push(if stored.event == event {
                    Ok(IngestOutcome::Duplicate {
                        billed_in: stored.billed_in,
                    })
                } else {
                    Err(BillingError::IdempotencyConflict { key: key.1 })
                });
                continue;
            }
            let sealed = state
                .sealed
                .get(&(event.tenant_id, event.subscription_id))
                .copied();
            let billed_in = match sealed {
                Some(through) if record.period >= 0 && record.period <= through => {
                    through.saturating_add(1)
                }
                _ => record.period,
            };
            let sequence = state.events.len() as u64;
            let index = state.events.len();
            state.events.push(StoredUsage {
                event,
                period: record.period,
                billed_in,
                sequence,
            });
            state.keys.insert(key, index);
            outcomes.push(Ok(IngestOutcome::Recorded { billed_in }));
        }
        Ok(outcomes)
    }

    async fn seal(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        through: i64,
    ) -> Result<i64, BillingError> {
        let mut state = lock(&self.state);
        let sealed = state
            .sealed
            .entry((tenant, subscription))
            .or_insert(through);
        *sealed = (*sealed).max(through);
        Ok(*sealed)
    }

    async fn sealed_through(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Option<i64>, BillingError> {
        Ok(lock(&self.state)
            .sealed
            .get(&(tenant, subscription))
            .copied())
    }

    async fn billed_in(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        invoice_period: i64,
    ) -> Result<Vec<StoredUsage>, BillingError> {
        Ok(select(&lock(&self.state), tenant, subscription, |u| {
            u.billed_in == invoice_period
        }))
    }

    async fn for_period(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        period: i64,
        billed_before: i64,
    ) -> Result<Vec<StoredUsage>, BillingError> {
        Ok(select(&lock(&self.state), tenant, subscription, |u| {
            u.period == period && u.billed_in < billed_before
        }))
    }
}

fn select(
    state: &UsageState,
    tenant: TenantId,
    subscription: SubscriptionId,
    keep: impl Fn(&StoredUsage) -> bool,
) -> Vec<StoredUsage> {
    state
        .events
        .iter()
        .filter(|u| {
            u.event.tenant_id == tenant && u.event.subscription_id == subscription && keep(u)
        })
        .cloned()
        .collect()
}
