//! The quota stores: the conformance suite on every backend, and the
//! multi-server checks of issue 15 §2 on PostgreSQL (three stores on
//! separate pools, as three servers would be; a restart).

use std::sync::Arc;
use std::time::Duration;

use saas_billing::TenantId;
use saas_billing::quota::{
    Consumption, InMemoryQuotaStore, PgQuotaStore, QuotaKey, QuotaStore, ReserveOutcome,
    SqliteQuotaStore,
};
use saas_billing::testing::Cleanup;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

mod memory {
    use std::sync::Arc;

    use saas_billing::quota::{InMemoryQuotaStore, QuotaStore};

    async fn store() -> Option<Arc<dyn QuotaStore>> {
        Some(Arc::new(InMemoryQuotaStore::new()))
    }
    saas_billing::quota_store_conformance!(store);
}

mod postgres {
    use std::sync::Arc;

    use saas_billing::quota::{PgQuotaStore, QuotaStore};
    use saas_billing::testing::Cleanup;

    async fn store() -> Option<(Arc<dyn QuotaStore>, Cleanup)> {
        let (pool, cleanup) =
            crate::sql_stores::pg_pool("saas-billing postgres quota conformance").await?;
        let store = PgQuotaStore::new(pool);
        store.migrate().await.unwrap();
        Some((Arc::new(store), cleanup))
    }
    saas_billing::quota_store_conformance!(store);
}

mod sqlite {
    use std::sync::Arc;

    use saas_billing::quota::{QuotaStore, SqliteQuotaStore};
    use saas_billing::testing::Cleanup;

    async fn store() -> Option<(Arc<dyn QuotaStore>, Cleanup)> {
        let (stores, cleanup) = crate::sql_stores::unmigrated_sqlite_stores().await;
        let store = SqliteQuotaStore::new(stores.pool().clone());
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        Some((Arc::new(store), cleanup))
    }
    saas_billing::quota_store_conformance!(store);
}

/// Another pool on the same schema: another server.
async fn another_server(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap()
}

/// `n` migrated stores on separate pools sharing one fresh schema.
pub(crate) async fn pg_servers(test: &str, n: usize) -> Option<(Vec<PgQuotaStore>, Cleanup)> {
    let (pool, cleanup) = crate::sql_stores::pg_pool(test).await?;
    let mut stores = vec![PgQuotaStore::new(pool.clone())];
    for _ in 1..n {
        stores.push(PgQuotaStore::new(another_server(&pool).await));
    }
    for store in &stores {
        store.migrate().await.unwrap();
    }
    Some((stores, cleanup))
}

pub(crate) async fn close(stores: Vec<PgQuotaStore>) {
    for store in stores {
        store.pool().close().await;
    }
}

/// Three servers × 8 tasks × 1,000 `try_consume` of 1 against a limit of
/// 500: exactly 500 granted in all, and stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_three_servers_grant_exactly_the_limit() {
    let Some((stores, cleanup)) =
        pg_servers("postgres_three_servers_grant_exactly_the_limit", 3).await
    else {
        return;
    };
    let key = QuotaKey::new(TenantId::new(), "api_calls", "2026-12").unwrap();
    let mut runs = Vec::new();
    for store in &stores {
        for _ in 0..8 {
            let (store, key) = (store.clone(), key.clone());
            runs.push(tokio::spawn(async move {
                let mut granted = 0u64;
                for _ in 0..1_000 {
                    if store.try_consume(&key, 1, 500).await.unwrap().is_granted() {
                        granted += 1;
                    }
                }
                granted
            }));
        }
    }
    let mut granted = 0;
    for run in runs {
        granted += run.await.unwrap();
    }
    assert_eq!(granted, 500);
    for store in &stores {
        assert_eq!(store.used(&key).await.unwrap(), 500);
    }
    close(stores).await;
    cleanup.run().await;
}

/// Three servers roll over to a new period at once: the new period's
/// counter starts from zero once, so exactly its limit is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rollover_across_servers_resets_once() {
    let Some((stores, cleanup)) =
        pg_servers("postgres_rollover_across_servers_resets_once", 3).await
    else {
        return;
    };
    let tenant = TenantId::new();
    let old = QuotaKey::new(tenant, "api_calls", "2026-12").unwrap();
    assert!(
        stores[0]
            .try_consume(&old, 100, 100)
            .await
            .unwrap()
            .is_granted()
    );
    let new = QuotaKey::new(tenant, "api_calls", "2027-01").unwrap();
    let mut runs = Vec::new();
    for store in &stores {
        for _ in 0..4 {
            let (store, new) = (store.clone(), new.clone());
            runs.push(tokio::spawn(async move {
                let mut granted = 0u64;
                for _ in 0..50 {
                    if store.try_consume(&new, 1, 100).await.unwrap().is_granted() {
                        granted += 1;
                    }
                }
                granted
            }));
        }
    }
    let mut granted = 0;
    for run in runs {
        granted += run.await.unwrap();
    }
    assert_eq!(granted, 100);
    assert_eq!(stores[2].used(&new).await.unwrap(), 100);
    assert_eq!(stores[1].used(&old).await.unwrap(), 100);
    close(stores).await;
    cleanup.run().await;
}

/// A new store after a restart (a new pool) sees the used amount and the
/// live reservations, and can commit or release a reservation made
/// before the restart.
#[tokio::test]
async fn postgres_restart_sees_the_used_amount() {
    let Some((pool, cleanup)) =
        crate::sql_stores::pg_pool("postgres_restart_sees_the_used_amount").await
    else {
        return;
    };
    let options = (*pool.connect_options()).clone();
    let tenant = TenantId::new();
    let calls = QuotaKey::new(tenant, "api_calls", "2026-12").unwrap();
    let projects = QuotaKey::standing(tenant, "projects").unwrap();
    let before = PgQuotaStore::new(pool);
    before.migrate().await.unwrap();
    assert!(
        before
            .try_consume(&calls, 7, 10)
            .await
            .unwrap()
            .is_granted()
    );
    let ReserveOutcome::Reserved(kept) = before
        .reserve(&projects, 1, 3, Duration::from_secs(600))
        .await
        .unwrap()
    else {
        panic!("reservation refused");
    };
    let ReserveOutcome::Reserved(dropped) = before
        .reserve(&projects, 1, 3, Duration::from_secs(600))
        .await
        .unwrap()
    else {
        panic!("reservation refused");
    };
    before.pool().close().await;

    let after_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    let after = PgQuotaStore::new(after_pool);
    after.migrate().await.unwrap();
    assert_eq!(after.used(&calls).await.unwrap(), 7);
    assert_eq!(
        after.try_consume(&calls, 4, 10).await.unwrap(),
        Consumption::Denied { remaining: 3 }
    );
    assert_eq!(after.used(&projects).await.unwrap(), 2);
    after.commit(&kept).await.unwrap();
    after.release(&dropped).await.unwrap();
    assert_eq!(after.used(&projects).await.unwrap(), 1);
    after.pool().close().await;
    cleanup.run().await;
}

/// The in-memory store is per process: a second store starts from zero.
/// (What the PostgreSQL store fixes; documented on `InMemoryQuotaStore`.)
#[tokio::test]
async fn in_memory_stores_do_not_share_counts() {
    let key = QuotaKey::new(TenantId::new(), "api_calls", "1").unwrap();
    let first: Arc<dyn QuotaStore> = Arc::new(InMemoryQuotaStore::new());
    let second: Arc<dyn QuotaStore> = Arc::new(InMemoryQuotaStore::new());
    assert!(first.try_consume(&key, 1, 1).await.unwrap().is_granted());
    assert!(second.try_consume(&key, 1, 1).await.unwrap().is_granted());
    let clone = InMemoryQuotaStore::new();
    let shared = clone.clone();
    assert!(clone.try_consume(&key, 1, 1).await.unwrap().is_granted());
    assert!(!shared.try_consume(&key, 1, 1).await.unwrap().is_granted());
}

/// Two SQLite stores on separate pools over one database file (two
/// processes) × 4 tasks × 200 grants of 1 against 300: exactly 300.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_pools_grant_exactly_the_limit() {
    let (stores, cleanup) = crate::sql_stores::unmigrated_sqlite_stores().await;
    let first = SqliteQuotaStore::new(stores.pool().clone());
    first.migrate().await.unwrap();
    let other_pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with((*stores.pool().connect_options()).clone())
        .await
        .unwrap();
    let second = SqliteQuotaStore::new(other_pool);
    let key = QuotaKey::new(TenantId::new(), "api_calls", "1").unwrap();
    let mut runs = Vec::new();
    for store in [&first, &second] {
        for _ in 0..4 {
            let (store, key) = (store.clone(), key.clone());
            runs.push(tokio::spawn(async move {
                let mut granted = 0u64;
                for _ in 0..200 {
                    if store.try_consume(&key, 1, 300).await.unwrap().is_granted() {
                        granted += 1;
                    }
                }
                granted
            }));
        }
    }
    let mut granted = 0;
    for run in runs {
        granted += run.await.unwrap();
    }
    assert_eq!(granted, 300);
    assert_eq!(second.used(&key).await.unwrap(), 300);
    second.pool().close().await;
    cleanup.run().await;
}

mod checker {
    use std::sync::Arc;

    use chrono::{TimeDelta, TimeZone, Utc};
    use saas_billing::quota::{InMemoryQuotaStore, PgQuotaStore, QuotaKey, QuotaStore};
    use saas_billing::{
        BillingCalendar, Cadence, DenyReason, Entitlement, EntitlementChecker, FeatureKey,
        MeterKey, SubscriptionStatus, TenantId, dec,
    };
    use saas_core::ManualClock;

    fn plan() -> Vec<Entitlement> {
        vec![
            Entitlement::flag(FeatureKey::new("sso").unwrap()),
            Entitlement::limit(FeatureKey::new("projects").unwrap(), dec!(3.5)),
            Entitlement::quota(
                FeatureKey::new("calls").unwrap(),
                MeterKey::new("calls").unwrap(),
                dec!(5),
            ),
        ]
    }

    fn servers(n: usize) -> (Arc<ManualClock>, TenantId, Vec<Arc<EntitlementChecker>>) {
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let calendar = BillingCalendar::new(start, chrono_tz::UTC, Cadence::monthly());
        let tenant = TenantId::new();
        let checkers = (0..n)
            .map(|_| {
                let checker = EntitlementChecker::new(clock.clone());
                checker.set_plan(tenant, &plan(), calendar);
                Arc::new(checker)
            })
            .collect();
        (clock, tenant, checkers)
    }

    /// Two checkers (servers) on one store grant a quota once in all, the
    /// next period starts from zero, and static limits are whole units.
    #[tokio::test]
    async fn checkers_sharing_a_store_grant_the_quota_once() {
        let store = InMemoryQuotaStore::new();
        let (clock, tenant, servers) = servers(2);
        let mut granted = 0;
        for i in 0..12 {
            let server = &servers[i % 2];
            let decision = server
                .try_consume_with(&store, tenant, "calls", 1)
                .await
                .unwrap();
            if decision.is_allowed() {
                granted += 1;
            } else {
                assert_eq!(decision.reason(), Some(DenyReason::OverLimit));
                assert_eq!(decision.remaining(), Some(dec!(0)));
                assert_eq!(decision.limit(), Some(dec!(5)));
            }
        }
        assert_eq!(granted, 5);
        // The in-memory counters are untouched.
        assert!(servers[0].check(tenant, "calls", dec!(5)).is_allowed());

        clock.advance(TimeDelta::days(31));
        let next = servers[1]
            .try_consume_with(&store, tenant, "calls", 5)
            .await
            .unwrap();
        assert!(next.is_allowed());
        assert_eq!(next.remaining(), Some(dec!(0)));

        // 3.5 projects is 3 whole units.
        for _ in 0..3 {
            assert!(
                servers[0]
                    .try_consume_with(&store, tenant, "projects", 1)
                    .await
                    .unwrap()
                    .is_allowed()
            );
        }
        assert!(
            !servers[1]
                .try_consume_with(&store, tenant, "projects", 1)
                .await
                .unwrap()
                .is_allowed()
        );
        let standing = QuotaKey::standing(tenant, "projects").unwrap();
        assert_eq!(store.used(&standing).await.unwrap(), 3);
    }

    /// Flags, unknown tenants and features, and suspended tenants are
    /// answered from memory and leave the store untouched.
    #[tokio::test]
    async fn memory_answers_what_the_store_does_not_count() {
        let store = InMemoryQuotaStore::new();
        let (_, tenant, servers) = servers(1);
        let server = &servers[0];
        let sso = server
            .try_consume_with(&store, tenant, "sso", 1)
            .await
            .unwrap();
        assert!(sso.is_allowed());
        assert_eq!(sso.remaining(), None);
        let unknown = server
            .try_consume_with(&store, TenantId::new(), "calls", 1)
            .await
            .unwrap();
        assert_eq!(unknown.reason(), Some(DenyReason::UnknownTenant));
        let missing = server
            .try_consume_with(&store, tenant, "scim", 1)
            .await
            .unwrap();
        assert_eq!(missing.reason(), Some(DenyReason::UnknownFeature));
        assert!(server.suspend(tenant, SubscriptionStatus::Paused));
        let paused = server
            .try_consume_with(&store, tenant, "calls", 1)
            .await
            .unwrap();
        assert_eq!(
            paused.reason(),
            Some(DenyReason::NotServed(SubscriptionStatus::Paused))
        );
        let standing = QuotaKey::standing(tenant, "projects").unwrap();
        assert_eq!(store.used(&standing).await.unwrap(), 0);
    }

    /// Three checkers on three PostgreSQL pools × 4 tasks × 100 against a
    /// quota of 5: exactly 5 granted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_checkers_on_three_servers_grant_the_quota_once() {
        let Some((stores, cleanup)) =
            super::pg_servers("postgres_checkers_on_three_servers_grant_the_quota_once", 3).await
        else {
            return;
        };
        let (_, tenant, servers) = servers(3);
        let mut runs = Vec::new();
        for (server, store) in servers.iter().zip(&stores) {
            for _ in 0..4 {
                let (server, store): (_, PgQuotaStore) = (server.clone(), store.clone());
                runs.push(tokio::spawn(async move {
                    let mut granted = 0u64;
                    for _ in 0..100 {
                        let decision = server
                            .try_consume_with(&store, tenant, "calls", 1)
                            .await
                            .unwrap();
                        if decision.is_allowed() {
                            granted += 1;
                        }
                    }
                    granted
                }));
            }
        }
        let mut granted = 0;
        for run in runs {
            granted += run.await.unwrap();
        }
        assert_eq!(granted, 5);
        super::close(stores).await;
        cleanup.run().await;
    }
}
