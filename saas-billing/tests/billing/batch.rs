//! The engine's batch ingestion reads each subscription of a batch once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use saas_billing::store::InMemorySubscriptionStore;
use saas_billing::{
    BillingEngine, BillingError, BillingStores, Currency, IngestOutcome, MeterKey, NewSubscription,
    Subscription, SubscriptionId, SubscriptionStore, UsageEvent, dec,
};
use saas_core::{ErrorKind, ManualClock, TenantId};

use crate::fixtures::{at, catalog, plan};

/// Counts `get`s on the way to an in-memory store.
#[derive(Debug, Default)]
struct CountingGets {
    inner: InMemorySubscriptionStore,
    gets: AtomicUsize,
}

#[async_trait::async_trait]
impl SubscriptionStore for CountingGets {
    async fn insert(&self, s: Subscription) -> Result<Subscription, BillingError> {
        self.inner.insert(s).await
    }
    async fn get(&self, t: TenantId, id: SubscriptionId) -> Result<Subscription, BillingError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(t, id).await
    }
    async fn update(&self, s: Subscription) -> Result<Subscription, BillingError> {
        self.inner.update(s).await
    }
    async fn due(&self, at: DateTime<Utc>, n: usize) -> Result<Vec<Subscription>, BillingError> {
        self.inner.due(at, n).await
    }
    async fn list(&self, t: TenantId) -> Result<Vec<Subscription>, BillingError> {
        self.inner.list(t).await
    }
    async fn open(
        &self,
        after: Option<SubscriptionId>,
        n: usize,
    ) -> Result<Vec<Subscription>, BillingError> {
        self.inner.open(after, n).await
    }
}

#[tokio::test]
async fn a_batch_reads_each_subscription_once_and_keeps_per_event_outcomes() {
    let counting = Arc::new(CountingGets::default());
    let stores = BillingStores {
        subscriptions: counting.clone(),
        ..BillingStores::in_memory()
    };
    let clock = ManualClock::new(at(2024, 4, 1, 0));
    let engine = BillingEngine::new(Arc::new(catalog()), stores, Arc::new(clock.clone()));
    let (a, b) = (TenantId::new(), TenantId::new());
    let mut subs = Vec::new();
    for tenant in [a, b] {
        let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD);
        subs.push((tenant, engine.create_subscription(new).await.unwrap().id()));
    }
    clock.set(at(2024, 4, 2, 0));
    let calls = MeterKey::new("calls").unwrap();
    let mut events: Vec<UsageEvent> = (0..10)
        .map(|i| {
            let (tenant, sub) = subs[i % 2];
            let key = format!("k{i}");
            UsageEvent::new(tenant, sub, calls.clone(), dec!(1), at(2024, 4, 2, 0), key)
        })
        .collect();
    // An unknown subscription fails its own event only.
    let unknown = SubscriptionId::new();
    events.push(UsageEvent::new(
        a,
        unknown,
        calls,
        dec!(1),
        at(2024, 4, 2, 0),
        "x",
    ));
    let before = counting.gets.load(Ordering::SeqCst);
    let outcomes = engine.record_usage_batch(events).await.unwrap();
    // Three distinct subscriptions (two known, one unknown): three reads.
    assert_eq!(counting.gets.load(Ordering::SeqCst) - before, 3);
    assert_eq!(outcomes.len(), 11);
    for outcome in &outcomes[..10] {
        assert_eq!(outcome, &Ok(IngestOutcome::Recorded { billed_in: 0 }));
    }
    assert_eq!(
        outcomes[10].as_ref().unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // Quotas counted every recorded event: 5 calls each.
    let left = engine.check(a, "api_calls", dec!(0)).remaining();
    assert_eq!(left, Some(dec!(9995)));
}
