//! The [`QuotaGrantStore`](crate::quota::QuotaGrantStore) contract and
//! [`GrantedQuota`] over each backend: the plan's quota first, then
//! grants; expiry; per-period grants; exact under races; per tenant.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use saas_core::{ErrorKind, ManualClock, TenantId};

use crate::quota::{
    Consumption, GrantedQuota, GrantingQuotaStore, QuotaGrant, QuotaKey, QuotaStore,
};

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
}

fn quotas(store: &Arc<dyn GrantingQuotaStore>) -> (GrantedQuota, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(start()));
    let quota: Arc<dyn QuotaStore> = store.clone();
    (
        GrantedQuota::new(quota, store.clone(), clock.clone()),
        clock,
    )
}

fn key(tenant: TenantId, period: &str) -> QuotaKey {
    QuotaKey::new(tenant, "api_calls", period).unwrap()
}

/// The plan's quota is spent first; the grant only once it is gone; then
/// everything is refused.
pub async fn plan_quota_is_spent_before_grants(store: Arc<dyn GrantingQuotaStore>) {
    let (quotas, _) = quotas(&store);
    let tenant = TenantId::new();
    let k = key(tenant, "2026-12");
    let grant = QuotaGrant::for_period(tenant, "api_calls", "2026-12", 2).unwrap();
    quotas.grant(&grant).await.unwrap();
    for left in [4, 3, 2] {
        assert_eq!(
            quotas.try_consume(&k, 1, 3).await.unwrap(),
            Consumption::Granted { remaining: left }
        );
        assert_eq!(
            store.used(&grant.counter()).await.unwrap(),
            0,
            "grant untouched"
        );
    }
    assert_eq!(store.used(&k).await.unwrap(), 3);
    for left in [1, 0] {
        assert_eq!(
            quotas.try_consume(&k, 1, 3).await.unwrap(),
            Consumption::Granted { remaining: left }
        );
    }
    assert_eq!(store.used(&grant.counter()).await.unwrap(), 2);
    assert_eq!(store.used(&k).await.unwrap(), 3);
    assert_eq!(
        quotas.try_consume(&k, 1, 3).await.unwrap(),
        Consumption::Denied { remaining: 0 }
    );
    assert_eq!(quotas.remaining(&k, 3).await.unwrap(), 0);
}

/// A grant with an expiry is usable before it and not from it on; what
/// was spent from it stays spent and another grant keeps all it has left.
pub async fn a_grant_lapses_at_its_expiry(store: Arc<dyn GrantingQuotaStore>) {
    let (quotas, clock) = quotas(&store);
    let tenant = TenantId::new();
    let k = key(tenant, "2026-12");
    let soon = QuotaGrant::until(tenant, "api_calls", 10, start() + TimeDelta::days(10)).unwrap();
    let later = QuotaGrant::until(tenant, "api_calls", 10, start() + TimeDelta::days(20)).unwrap();
    quotas.grant(&soon).await.unwrap();
    quotas.grant(&later).await.unwrap();
    // Plan 5, then 6 from the grant expiring first.
    assert!(quotas.try_consume(&k, 5, 5).await.unwrap().is_granted());
    assert_eq!(
        quotas.try_consume(&k, 6, 5).await.unwrap(),
        Consumption::Granted { remaining: 14 }
    );
    assert_eq!(store.used(&soon.counter()).await.unwrap(), 6);
    assert_eq!(store.used(&later.counter()).await.unwrap(), 0);
    clock.set(start() + TimeDelta::days(10));
    // The 4 left of the first lapse; the second keeps all 10.
    assert_eq!(quotas.remaining(&k, 5).await.unwrap(), 10);
    assert_eq!(
        quotas.try_consume(&k, 10, 5).await.unwrap(),
        Consumption::Granted { remaining: 0 }
    );
    assert_eq!(store.used(&soon.counter()).await.unwrap(), 6);
    clock.set(start() + TimeDelta::days(20));
    assert_eq!(
        quotas.try_consume(&k, 1, 5).await.unwrap(),
        Consumption::Denied { remaining: 0 }
    );
    // An expired grant is refused before anything is recorded.
    let past = QuotaGrant::until(tenant, "api_calls", 1, start()).unwrap();
    let err = quotas.grant(&past).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(store.grants(tenant, "api_calls").await.unwrap().len() == 2);
}

/// A per-period grant tops up its period only: the next period has the
/// plan's quota alone.
pub async fn a_period_grant_ends_with_its_period(store: Arc<dyn GrantingQuotaStore>) {
    let (quotas, _) = quotas(&store);
    let tenant = TenantId::new();
    let december = key(tenant, "2026-12");
    let january = key(tenant, "2027-01");
    let grant = QuotaGrant::for_period(tenant, "api_calls", "2026-12", 5).unwrap();
    quotas.grant(&grant).await.unwrap();
    assert_eq!(quotas.remaining(&december, 2).await.unwrap(), 7);
    assert_eq!(quotas.remaining(&january, 2).await.unwrap(), 2);
    assert!(
        quotas
            .try_consume(&january, 2, 2)
            .await
            .unwrap()
            .is_granted()
    );
    assert_eq!(
        quotas.try_consume(&january, 1, 2).await.unwrap(),
        Consumption::Denied { remaining: 0 }
    );
    assert_eq!(store.used(&grant.counter()).await.unwrap(), 0);
}

/// Racing consumers are granted exactly the plan's quota plus the grants.
pub async fn racing_consumers_never_exceed_plan_plus_grants(store: Arc<dyn GrantingQuotaStore>) {
    let (quotas, _) = quotas(&store);
    let tenant = TenantId::new();
    let k = key(tenant, "2026-12");
    let a = QuotaGrant::for_period(tenant, "api_calls", "2026-12", 30).unwrap();
    let b = QuotaGrant::until(tenant, "api_calls", 20, start() + TimeDelta::days(5)).unwrap();
    quotas.grant(&a).await.unwrap();
    quotas.grant(&b).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (quotas, k) = (quotas.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            let mut granted = 0u64;
            for _ in 0..25 {
                if quotas.try_consume(&k, 1, 50).await.unwrap().is_granted() {
                    granted += 1;
                }
            }
            granted
        }));
    }
    let mut granted = 0;
    for task in tasks {
        granted += task.await.unwrap();
    }
    assert_eq!(granted, 100);
    assert_eq!(store.used(&k).await.unwrap(), 50);
    assert_eq!(store.used(&a.counter()).await.unwrap(), 30);
    assert_eq!(store.used(&b.counter()).await.unwrap(), 20);
}

/// One tenant's grant is never listed for, nor spent by, another.
pub async fn a_tenants_grant_is_never_another_tenants(store: Arc<dyn GrantingQuotaStore>) {
    let (quotas, _) = quotas(&store);
    let (a, b) = (TenantId::new(), TenantId::new());
    let grant = QuotaGrant::for_period(a, "api_calls", "2026-12", 5).unwrap();
    quotas.grant(&grant).await.unwrap();
    assert!(store.grants(b, "api_calls").await.unwrap().is_empty());
    assert!(store.grants(a, "storage").await.unwrap().is_empty());
    let kb = key(b, "2026-12");
    assert!(quotas.try_consume(&kb, 1, 1).await.unwrap().is_granted());
    assert_eq!(
        quotas.try_consume(&kb, 1, 1).await.unwrap(),
        Consumption::Denied { remaining: 0 }
    );
    assert_eq!(store.used(&grant.counter()).await.unwrap(), 0);
    assert_eq!(quotas.remaining(&key(a, "2026-12"), 1).await.unwrap(), 6);
}

/// Recording a grant again changes nothing; its id with other terms is
/// `AlreadyExists` and the first terms stay.
pub async fn recording_a_grant_is_idempotent(store: Arc<dyn GrantingQuotaStore>) {
    let tenant = TenantId::new();
    let expiry = start() + TimeDelta::nanoseconds(86_400_000_000_123);
    let grant = QuotaGrant::for_period(tenant, "api_calls", "2026-12", 5)
        .unwrap()
        .expiring_at(expiry);
    store.add_grant(&grant).await.unwrap();
    store.add_grant(&grant).await.unwrap();
    let other = QuotaGrant::for_period(tenant, "api_calls", "2026-12", 6)
        .unwrap()
        .with_id(grant.id());
    let err = store.add_grant(&other).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        store.grants(tenant, "api_calls").await.unwrap(),
        vec![grant]
    );
}

/// A lease over the plan and its grants grants exactly their sum, the
/// plan's quota first, and gives back what it did not spend.
pub async fn a_lease_spends_the_plan_then_grants(store: Arc<dyn GrantingQuotaStore>) {
    let (quotas, _) = quotas(&store);
    let tenant = TenantId::new();
    let k = key(tenant, "2026-12");
    let grant = QuotaGrant::for_period(tenant, "api_calls", "2026-12", 7).unwrap();
    quotas.grant(&grant).await.unwrap();
    let lease = quotas.lease(&k, 10, 4).await.unwrap();
    let mut granted = 0;
    while lease.try_consume(1).await.unwrap() {
        granted += 1;
        if granted == 10 {
            assert_eq!(store.used(&grant.counter()).await.unwrap(), 0);
        }
    }
    assert_eq!(granted, 17);
    assert_eq!(lease.release().await.unwrap(), 0);
    assert_eq!(store.used(&k).await.unwrap(), 10);
    assert_eq!(store.used(&grant.counter()).await.unwrap(), 7);
}
