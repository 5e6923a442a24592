//! The pool registry's own rules, on in-memory SQLite pools (the registry
//! is the same for every database): eviction order, the room an evicted
//! pool keeps until it has closed, and bounded waits with their counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use saas_core::TenantId;
use saas_tenancy::TenancyError;
use saas_tenancy::registry::{PoolLimits, PoolRegistry};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Pool, Sqlite};

fn open(limits: &PoolLimits) -> Pool<Sqlite> {
    SqlitePoolOptions::new()
        .max_connections(limits.per_tenant)
        .connect_lazy("sqlite::memory:")
        .unwrap()
}

/// Leases `tenant`'s pool and lets the lease go; returns the pool, to
/// watch whether it gets closed.
async fn touch(registry: &PoolRegistry<Sqlite>, tenant: TenantId) -> Pool<Sqlite> {
    let lease = registry.lease(tenant, open).await.unwrap();
    lease.pool().clone()
}

#[tokio::test]
async fn the_least_recently_used_idle_pool_is_evicted_first() {
    let registry = PoolRegistry::new(PoolLimits::new(2, 1)).unwrap();
    let (a, b, c) = (TenantId::new(), TenantId::new(), TenantId::new());
    let pool_a = touch(&registry, a).await;
    let pool_b = touch(&registry, b).await;
    // A is used again: B is now the least recently used.
    touch(&registry, a).await;
    let pool_c = touch(&registry, c).await;
    assert!(pool_b.is_closed(), "B was least recently used");
    assert!(!pool_a.is_closed() && !pool_c.is_closed());
    let stats = registry.stats().await;
    assert_eq!((stats.open_pools, stats.evictions), (2, 1), "{stats:?}");
}

#[tokio::test]
async fn a_full_budget_makes_callers_wait_then_time_out() {
    let limits = PoolLimits::new(2, 1).with_acquire_timeout(Duration::from_millis(200));
    let registry = PoolRegistry::new(limits).unwrap();
    let held_a = registry.lease(TenantId::new(), open).await.unwrap();
    let held_b = registry.lease(TenantId::new(), open).await.unwrap();
    let started = Instant::now();
    let err = registry.lease(TenantId::new(), open).await.unwrap_err();
    assert!(matches!(err, TenancyError::Timeout(_)), "{err:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "gave up early"
    );
    let stats = registry.stats().await;
    assert_eq!((stats.waits, stats.timeouts, stats.evictions), (1, 1, 0));
    // A lease released while a caller waits lets it in.
    let registry = Arc::new(registry);
    let waiter = tokio::spawn({
        let registry = Arc::clone(&registry);
        async move { registry.lease(TenantId::new(), open).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(held_a);
    waiter.await.unwrap().unwrap();
    let stats = registry.stats().await;
    assert_eq!((stats.waits, stats.timeouts, stats.evictions), (2, 1, 1));
    drop(held_b);
}

/// Closing a pool waits for its connections to come back. Until they have,
/// its room stays taken: another caller must evict a pool of its own, not
/// open one beside the closing pool's live connections.
#[tokio::test]
async fn an_evicted_pool_keeps_its_room_until_it_has_closed() {
    let limits = PoolLimits::new(2, 1).with_acquire_timeout(Duration::from_secs(5));
    let registry = Arc::new(PoolRegistry::new(limits).unwrap());
    let pool_a = touch(&registry, TenantId::new()).await;
    // A connection of A's still out (on its way back, say), with no lease.
    let straggler = pool_a.acquire().await.unwrap();
    let pool_b = touch(&registry, TenantId::new()).await;

    // C's lease evicts A (least recently used) and waits for it to close.
    let c = tokio::spawn({
        let registry = Arc::clone(&registry);
        async move { registry.lease(TenantId::new(), open).await.map(drop) }
    });
    for _ in 0..500 {
        if pool_a.is_closed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(pool_a.is_closed(), "A was never evicted");

    // D arrives while A is still closing: the only room is B's.
    let d = registry.lease(TenantId::new(), open).await.unwrap();
    let stats = registry.stats().await;
    assert!(
        pool_b.is_closed(),
        "B stayed open beside the closing A: {stats:?}"
    );
    assert!(stats.reserved <= 2, "{stats:?}");

    drop(straggler);
    c.await.unwrap().unwrap();
    let stats = registry.stats().await;
    assert_eq!((stats.open_pools, stats.evictions), (2, 2), "{stats:?}");
    assert!(stats.reserved <= 2, "{stats:?}");
    drop(d);
}

/// A caller cancelled while its eviction is still closing the victim (a
/// request timeout, say) does not keep the victim's room taken for ever.
#[tokio::test]
async fn a_cancelled_eviction_gives_the_room_back_once_closed() {
    let limits = PoolLimits::new(1, 1).with_acquire_timeout(Duration::from_millis(300));
    let registry = PoolRegistry::new(limits).unwrap();
    let pool_a = touch(&registry, TenantId::new()).await;
    let straggler = pool_a.acquire().await.unwrap();
    let cancelled = tokio::time::timeout(
        Duration::from_millis(50),
        registry.lease(TenantId::new(), open),
    )
    .await;
    assert!(cancelled.is_err(), "the eviction should still be closing A");
    assert!(pool_a.is_closed());
    drop(straggler);
    // The next caller gets the room without timing out.
    let lease = registry.lease(TenantId::new(), open).await.unwrap();
    let stats = registry.stats().await;
    assert_eq!(
        (stats.open_pools, stats.reserved, stats.timeouts),
        (1, 1, 0)
    );
    drop(lease);
}
