//! The [`UsageStore`] contract.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use saas_core::{ErrorKind, TenantId};

use super::fixtures::usage;
use crate::{IngestOutcome, SubscriptionId, UsageStore, dec};

/// The same event twice is recorded once; the second is a duplicate.
pub async fn same_key_same_payload_is_recorded_once(store: Arc<dyn UsageStore>) {
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    let first = store
        .ingest(vec![usage(tenant, sub, "k1", 0)])
        .await
        .unwrap();
    assert_eq!(first[0], Ok(IngestOutcome::Recorded { billed_in: 0 }));
    let again = store
        .ingest(vec![usage(tenant, sub, "k1", 0)])
        .await
        .unwrap();
    assert_eq!(again[0], Ok(IngestOutcome::Duplicate { billed_in: 0 }));
    assert_eq!(store.billed_in(tenant, sub, 0).await.unwrap().len(), 1);
}

/// A reused key with another payload is an `IdempotencyConflict`; the
/// first payload stays.
pub async fn same_key_other_payload_is_a_conflict(store: Arc<dyn UsageStore>) {
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    store
        .ingest(vec![usage(tenant, sub, "k1", 0)])
        .await
        .unwrap();
    let mut other = usage(tenant, sub, "k1", 0);
    other.event.value = dec!(2);
    let out = store.ingest(vec![other]).await.unwrap();
    let err = out[0].clone().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let stored = store.billed_in(tenant, sub, 0).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event.value, dec!(1));
}

/// Two tenants may use the same key.
pub async fn keys_are_per_tenant(store: Arc<dyn UsageStore>) {
    let (a, b, sub) = (TenantId::new(), TenantId::new(), SubscriptionId::new());
    let out = store
        .ingest(vec![usage(a, sub, "same", 0), usage(b, sub, "same", 0)])
        .await
        .unwrap();
    assert!(
        out.iter()
            .all(|o| matches!(o, Ok(IngestOutcome::Recorded { .. })))
    );
}

/// One outcome per record, in order, including repeats within the batch.
pub async fn batch_outcomes_follow_the_batch(store: Arc<dyn UsageStore>) {
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    let mut conflicting = usage(tenant, sub, "a", 0);
    conflicting.event.value = dec!(5);
    let out = store
        .ingest(vec![
            usage(tenant, sub, "a", 0),
            usage(tenant, sub, "b", 0),
            usage(tenant, sub, "a", 0),
            conflicting,
        ])
        .await
        .unwrap();
    assert_eq!(out.len(), 4);
    assert!(matches!(out[0], Ok(IngestOutcome::Recorded { .. })));
    assert!(matches!(out[1], Ok(IngestOutcome::Recorded { .. })));
    assert!(matches!(out[2], Ok(IngestOutcome::Duplicate { .. })));
    assert!(out[3].is_err());
    assert_eq!(store.billed_in(tenant, sub, 0).await.unwrap().len(), 2);
}

/// Racing ingestions of one key store it once.
pub async fn racing_ingestions_store_once(store: Arc<dyn UsageStore>) {
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.ingest(vec![usage(tenant, sub, "race", 0)]).await })
        })
        .collect();
    let mut recorded = 0;
    for task in tasks {
        if let Ok(IngestOutcome::Recorded { .. }) = task.await.unwrap().unwrap()[0] {
            recorded += 1;
        }
    }
    assert_eq!(recorded, 1);
    assert_eq!(store.billed_in(tenant, sub, 0).await.unwrap().len(), 1);
}

/// Usage for a sealed period is billed in the first unsealed one; usage
/// before period 0 (a trial) is never reassigned.
pub async fn sealed_periods_bill_late_usage_in_the_next(store: Arc<dyn UsageStore>) {
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    assert_eq!(store.sealed_through(tenant, sub).await.unwrap(), None);
    assert_eq!(store.seal(tenant, sub, 1).await.unwrap(), 1);
    let out = store
        .ingest(vec![
            usage(tenant, sub, "late", 0),
            usage(tenant, sub, "trial", -1),
            usage(tenant, sub, "now", 2),
        ])
        .await
        .unwrap();
    assert_eq!(out[0], Ok(IngestOutcome::Recorded { billed_in: 2 }));
    assert_eq!(out[1], Ok(IngestOutcome::Recorded { billed_in: -1 }));
    assert_eq!(out[2], Ok(IngestOutcome::Recorded { billed_in: 2 }));
    assert_eq!(store.billed_in(tenant, sub, 2).await.unwrap().len(), 2);
    assert_eq!(store.for_period(tenant, sub, 0, 3).await.unwrap().len(), 1);
    assert_eq!(store.for_period(tenant, sub, 0, 2).await.unwrap().len(), 0);
}

/// Sealing never goes backwards.
pub async fn seal_is_monotonic(store: Arc<dyn UsageStore>) {
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    store.seal(tenant, sub, 3).await.unwrap();
    assert_eq!(store.seal(tenant, sub, 1).await.unwrap(), 3);
    assert_eq!(store.sealed_through(tenant, sub).await.unwrap(), Some(3));
}

/// Queries return one tenant's and subscription's events only.
pub async fn queries_filter_by_tenant_and_subscription(store: Arc<dyn UsageStore>) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let (s1, s2) = (SubscriptionId::new(), SubscriptionId::new());
    store
        .ingest(vec![
            usage(a, s1, "1", 0),
            usage(a, s2, "2", 0),
            usage(b, s1, "3", 0),
        ])
        .await
        .unwrap();
    assert_eq!(store.billed_in(a, s1, 0).await.unwrap().len(), 1);
    assert_eq!(store.for_period(a, s2, 0, 1).await.unwrap().len(), 1);
    assert_eq!(store.billed_in(b, s2, 0).await.unwrap().len(), 0);
}
