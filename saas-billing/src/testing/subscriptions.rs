//! The [`SubscriptionStore`] contract.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::TimeDelta;
use saas_core::{ErrorKind, TenantId};

use super::fixtures::{catalog, start, subscription};
use crate::{
    AddOn, BillingError, PlanId, PlanRef, PriceKey, ProrationPolicy, RoundingMode,
    SubscriptionStore,
};

/// Inserted subscriptions read back equal, with version 1.
pub async fn insert_then_get(store: Arc<dyn SubscriptionStore>) {
    let tenant = TenantId::new();
    let sub = subscription(tenant, start());
    let saved = store.insert(sub.clone()).await.unwrap();
    assert_eq!(saved.version(), 1);
    assert_eq!(store.get(tenant, sub.id()).await.unwrap(), saved);
}

/// Add-ons, the period's add-ons and scheduled add-on changes read back
/// as written, through insert and update.
pub async fn addons_round_trip(store: Arc<dyn SubscriptionStore>) {
    let tenant = TenantId::new();
    let catalog = catalog();
    let storage = |quantity| {
        AddOn::new(
            PlanRef::new(PlanId::new("addons").unwrap(), 1),
            PriceKey::new("storage").unwrap(),
            quantity,
        )
    };
    let mut sub = subscription(tenant, start());
    let mid = start() + TimeDelta::days(10);
    let policy = ProrationPolicy::default();
    sub.set_addon(storage(3), &catalog, policy, mid, RoundingMode::HalfEven)
        .unwrap();
    assert_eq!(sub.addons(), [storage(3)]);
    assert_eq!(sub.pending_lines().len(), 1, "the attach's proration debit");
    let saved = store.insert(sub).await.unwrap();
    let read = store.get(tenant, saved.id()).await.unwrap();
    assert_eq!(read, saved);
    assert_eq!(read.addons(), [storage(3)]);

    let mut changed = read;
    changed
        .set_addon(storage(0), &catalog, policy, mid, RoundingMode::HalfEven)
        .unwrap();
    assert_eq!(changed.scheduled_addons(), [storage(0)]);
    let updated = store.update(changed).await.unwrap();
    let read = store.get(tenant, updated.id()).await.unwrap();
    assert_eq!(read, updated);
    assert_eq!(read.addons(), [storage(3)]);
    assert_eq!(read.scheduled_addons(), [storage(0)]);

    // A metered add-on's billed span reads back as written.
    let calls = AddOn::new(
        PlanRef::new(PlanId::new("addons").unwrap(), 1),
        PriceKey::new("extra_calls").unwrap(),
        1,
    );
    let mut metered = read;
    metered
        .set_addon(calls, &catalog, policy, mid, RoundingMode::HalfEven)
        .unwrap();
    assert_eq!(metered.metered_addon_spans().len(), 1);
    assert_eq!(metered.metered_addon_spans()[0].from, Some(mid));
    let updated = store.update(metered).await.unwrap();
    let read = store.get(tenant, updated.id()).await.unwrap();
    assert_eq!(read, updated);
    assert_eq!(read.metered_addon_spans(), updated.metered_addon_spans());
}

/// A second insert of one id is `AlreadyExists`.
pub async fn duplicate_insert_is_already_exists(store: Arc<dyn SubscriptionStore>) {
    let sub = subscription(TenantId::new(), start());
    store.insert(sub.clone()).await.unwrap();
    let err = store.insert(sub).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
}

/// Another tenant cannot read or update it: `NotFound`.
pub async fn other_tenants_subscription_is_not_found(store: Arc<dyn SubscriptionStore>) {
    let sub = store
        .insert(subscription(TenantId::new(), start()))
        .await
        .unwrap();
    let err = store.get(TenantId::new(), sub.id()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let mut foreign = subscription(TenantId::new(), start());
    foreign.id = sub.id();
    foreign.version = sub.version();
    let err = store.update(foreign).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// Updates bump the version; an update from a stale read is refused.
pub async fn update_bumps_version_and_refuses_stale(store: Arc<dyn SubscriptionStore>) {
    let sub = store
        .insert(subscription(TenantId::new(), start()))
        .await
        .unwrap();
    let mut changed = sub.clone();
    changed.seats = 3;
    let saved = store.update(changed).await.unwrap();
    assert_eq!(saved.version(), 2);
    let err = store.update(sub.clone()).await.unwrap_err();
    assert!(matches!(
        err,
        BillingError::StaleVersion {
            expected: 1,
            found: 2,
            ..
        }
    ));
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(
        store.get(sub.tenant_id(), sub.id()).await.unwrap().seats(),
        3
    );
}

/// Of several updates from one read, exactly one succeeds.
pub async fn concurrent_updates_one_wins(store: Arc<dyn SubscriptionStore>) {
    let sub = store
        .insert(subscription(TenantId::new(), start()))
        .await
        .unwrap();
    let tasks: Vec<_> = (2..10)
        .map(|seats| {
            let (store, mut sub) = (store.clone(), sub.clone());
            sub.seats = seats;
            tokio::spawn(async move { store.update(sub).await })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        if task.await.unwrap().is_ok() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(
        store
            .get(sub.tenant_id(), sub.id())
            .await
            .unwrap()
            .version(),
        2
    );
}

/// `due` returns subscriptions whose next due instant has passed, earliest
/// first, up to the limit.
pub async fn due_lists_by_next_due_at(store: Arc<dyn SubscriptionStore>) {
    let tenant = TenantId::new();
    let early = store.insert(subscription(tenant, start())).await.unwrap();
    let late = store
        .insert(subscription(tenant, start() + TimeDelta::days(10)))
        .await
        .unwrap();
    let month_end = early.next_due_at().unwrap();
    let due = store.due(month_end, 10).await.unwrap();
    assert!(due.iter().any(|s| s.id() == early.id()));
    assert!(!due.iter().any(|s| s.id() == late.id()));
    let all = store.due(late.next_due_at().unwrap(), 10).await.unwrap();
    let ours: Vec<_> = all
        .iter()
        .filter(|s| s.tenant_id() == tenant)
        .map(|s| s.id())
        .collect();
    assert_eq!(ours, [early.id(), late.id()]);
    assert_eq!(
        store
            .due(late.next_due_at().unwrap(), 1)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// `list` returns one tenant's subscriptions only.
pub async fn list_is_per_tenant(store: Arc<dyn SubscriptionStore>) {
    let (a, b) = (TenantId::new(), TenantId::new());
    store.insert(subscription(a, start())).await.unwrap();
    store.insert(subscription(a, start())).await.unwrap();
    store.insert(subscription(b, start())).await.unwrap();
    assert_eq!(store.list(a).await.unwrap().len(), 2);
    assert_eq!(store.list(b).await.unwrap().len(), 1);
}

/// `open` pages through open subscriptions across tenants by id, leaving
/// closed ones out.
pub async fn open_pages_by_id_and_skips_closed(store: Arc<dyn SubscriptionStore>) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let mut ours = Vec::new();
    for tenant in [a, a, b] {
        ours.push(
            store
                .insert(subscription(tenant, start()))
                .await
                .unwrap()
                .id(),
        );
    }
    let mut closed = store.insert(subscription(b, start())).await.unwrap();
    closed.closed = true;
    let closed = store.update(closed).await.unwrap();
    ours.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.open(after, 2).await.unwrap();
        assert!(page.len() <= 2);
        // Ascending ids, all after the cursor.
        assert!(page.windows(2).all(|w| w[0].id() < w[1].id()));
        assert!(after.is_none_or(|a| page.iter().all(|s| s.id() > a)));
        seen.extend(page.iter().map(|s| s.id()));
        match page.last() {
            Some(last) if page.len() == 2 => after = Some(last.id()),
            _ => break,
        }
    }
    let found: Vec<_> = seen
        .iter()
        .copied()
        .filter(|id| ours.contains(id))
        .collect();
    assert_eq!(found, ours);
    assert!(!seen.contains(&closed.id()));
}
