//! A new engine on existing stores rebuilds its entitlements with
//! `restore_entitlements`: same grants, same remaining quotas.

use std::sync::Arc;

use saas_billing::{
    BillingEngine, BillingStores, Currency, DenyReason, MeterKey, NewSubscription,
    SubscriptionStatus, UsageEvent, dec,
};
use saas_core::{ManualClock, TenantId};

use crate::fixtures::{at, catalog, plan};
use crate::sql_stores::{pg_stores, sqlite_stores};

fn engine(stores: BillingStores, clock: &ManualClock) -> BillingEngine {
    BillingEngine::new(Arc::new(catalog()), stores, Arc::new(clock.clone()))
}

/// Engine A records usage for an active and a paused tenant; engine B on
/// the same stores answers exactly as A does once restored.
async fn restart_keeps_grants_and_quotas(stores: BillingStores) {
    let clock = ManualClock::new(at(2024, 4, 1, 0));
    let a = engine(stores.clone(), &clock);
    let (active, paused) = (TenantId::new(), TenantId::new());
    let sub = a
        .create_subscription(NewSubscription::new(
            active,
            plan("basic", 1),
            Currency::USD,
        ))
        .await
        .unwrap();
    let other = a
        .create_subscription(NewSubscription::new(
            paused,
            plan("basic", 1),
            Currency::USD,
        ))
        .await
        .unwrap();
    clock.set(at(2024, 4, 2, 0));
    let calls = MeterKey::new("calls").unwrap();
    let tokens = MeterKey::new("tokens").unwrap();
    let events = vec![
        UsageEvent::new(
            active,
            sub.id(),
            calls.clone(),
            dec!(1),
            at(2024, 4, 2, 0),
            "c1",
        ),
        UsageEvent::new(
            active,
            sub.id(),
            calls.clone(),
            dec!(1),
            at(2024, 4, 2, 0),
            "c2",
        ),
        UsageEvent::new(
            active,
            sub.id(),
            tokens.clone(),
            dec!(7),
            at(2024, 4, 2, 0),
            "t1",
        ),
        UsageEvent::new(active, sub.id(), tokens, dec!(5.5), at(2024, 4, 2, 0), "t2"),
    ];
    for outcome in a.record_usage_batch(events).await.unwrap() {
        outcome.unwrap();
    }
    a.pause(paused, other.id()).await.unwrap();
    let quota_a = a.check(active, "api_calls", dec!(1));
    let tokens_a = a.check(active, "tokens", dec!(1));
    assert_eq!(quota_a.remaining(), Some(dec!(9997)));
    assert_eq!(tokens_a.remaining(), Some(dec!(86.5)));

    clock.set(at(2024, 4, 3, 0));
    let b = engine(stores, &clock);
    assert_eq!(
        b.check(active, "api_calls", dec!(1)).reason(),
        Some(DenyReason::UnknownTenant)
    );
    assert_eq!(b.restore_entitlements().await.unwrap(), 2);
    assert_eq!(b.check(active, "api_calls", dec!(1)), quota_a);
    assert_eq!(b.check(active, "tokens", dec!(1)), tokens_a);
    assert!(b.check(active, "export", dec!(1)).is_allowed());
    assert_eq!(
        b.check(paused, "export", dec!(1)).reason(),
        Some(DenyReason::NotServed(SubscriptionStatus::Paused))
    );
    // Restoring twice changes nothing.
    b.restore_entitlements().await.unwrap();
    assert_eq!(b.check(active, "api_calls", dec!(1)), quota_a);
}

#[tokio::test]
async fn restart_keeps_grants_and_quotas_in_memory() {
    restart_keeps_grants_and_quotas(BillingStores::in_memory()).await;
}

#[tokio::test]
async fn restart_keeps_grants_and_quotas_on_sql_stores() {
    let (sqlite, cleanup) = sqlite_stores().await;
    restart_keeps_grants_and_quotas(sqlite.billing_stores()).await;
    cleanup.run().await;
    if let Some((pg, cleanup)) = pg_stores("restart_keeps_grants_and_quotas").await {
        restart_keeps_grants_and_quotas(pg.billing_stores()).await;
        cleanup.run().await;
    }
}
