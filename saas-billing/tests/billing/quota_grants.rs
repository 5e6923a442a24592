//! Entitlement grants (issue 20): the grant conformance suite on every
//! quota store, and a restart on each store that persists — the grants
//! and what was spent from them survive it.

use std::sync::Arc;

use saas_billing::TenantId;
use saas_billing::quota::{
    Consumption, GrantedQuota, GrantingQuotaStore, PgQuotaStore, QuotaGrant, QuotaKey,
    SqliteQuotaStore,
};
use saas_core::SystemClock;
use sqlx::postgres::PgPoolOptions;

mod memory {
    use std::sync::Arc;

    use saas_billing::quota::{GrantingQuotaStore, InMemoryQuotaStore};

    async fn store() -> Option<Arc<dyn GrantingQuotaStore>> {
        Some(Arc::new(InMemoryQuotaStore::new()))
    }
    saas_billing::quota_grant_conformance!(store);
}

mod postgres {
    use std::sync::Arc;

    use saas_billing::quota::{GrantingQuotaStore, PgQuotaStore};
    use saas_billing::testing::Cleanup;

    async fn store() -> Option<(Arc<dyn GrantingQuotaStore>, Cleanup)> {
        let (pool, cleanup) =
            crate::sql_stores::pg_pool("saas-billing postgres quota grant conformance").await?;
        let store = PgQuotaStore::new(pool);
        store.migrate().await.unwrap();
        Some((Arc::new(store), cleanup))
    }
    saas_billing::quota_grant_conformance!(store);
}

mod sqlite {
    use std::sync::Arc;

    use saas_billing::quota::{GrantingQuotaStore, SqliteQuotaStore};
    use saas_billing::testing::Cleanup;

    async fn store() -> Option<(Arc<dyn GrantingQuotaStore>, Cleanup)> {
        let (stores, cleanup) = crate::sql_stores::unmigrated_sqlite_stores().await;
        let store = SqliteQuotaStore::new(stores.pool().clone());
        store.migrate().await.unwrap();
        Some((Arc::new(store), cleanup))
    }
    saas_billing::quota_grant_conformance!(store);
}

mod redis {
    use std::sync::Arc;

    use saas_billing::quota::GrantingQuotaStore;
    use saas_billing::testing::Cleanup;

    async fn store() -> Option<(Arc<dyn GrantingQuotaStore>, Cleanup)> {
        let fixture =
            crate::redis_quotas::RedisQuotaFixture::new("saas-billing redis quota grants")?;
        let store = fixture.server().await;
        Some((Arc::new(store), fixture.cleanup()))
    }
    saas_billing::quota_grant_conformance!(store);
}

/// Before a restart: a grant of 5 on a plan of 3, the plan and 2 of the
/// grant spent. Returns the key and the grant.
async fn spend_before_restart<S: GrantingQuotaStore + 'static>(
    before: Arc<S>,
) -> (QuotaKey, QuotaGrant) {
    let quotas = GrantedQuota::over(before, Arc::new(SystemClock));
    let tenant = TenantId::new();
    let key = QuotaKey::new(tenant, "api_calls", "2026-12").unwrap();
    let grant = QuotaGrant::for_period(tenant, "api_calls", "2026-12", 5).unwrap();
    quotas.grant(&grant).await.unwrap();
    assert!(quotas.try_consume(&key, 3, 3).await.unwrap().is_granted());
    assert!(quotas.try_consume(&key, 2, 3).await.unwrap().is_granted());
    (key, grant)
}

/// After it: the grant is known, 3 of it are left, then nothing.
async fn spend_after_restart<S: GrantingQuotaStore + 'static>(
    after: Arc<S>,
    key: &QuotaKey,
    grant: &QuotaGrant,
) {
    assert_eq!(
        after.grants(key.tenant(), "api_calls").await.unwrap(),
        vec![grant.clone()]
    );
    assert_eq!(after.used(&grant.counter()).await.unwrap(), 2);
    let quotas = GrantedQuota::over(after, Arc::new(SystemClock));
    assert_eq!(quotas.remaining(key, 3).await.unwrap(), 3);
    assert_eq!(
        quotas.try_consume(key, 3, 3).await.unwrap(),
        Consumption::Granted { remaining: 0 }
    );
    assert_eq!(
        quotas.try_consume(key, 1, 3).await.unwrap(),
        Consumption::Denied { remaining: 0 }
    );
}

#[tokio::test]
async fn postgres_grants_survive_a_restart() {
    let Some((pool, cleanup)) =
        crate::sql_stores::pg_pool("postgres_grants_survive_a_restart").await
    else {
        return;
    };
    let options = (*pool.connect_options()).clone();
    let before = Arc::new(PgQuotaStore::new(pool));
    before.migrate().await.unwrap();
    let (key, grant) = spend_before_restart(before.clone()).await;
    before.pool().close().await;
    let after_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    let after = Arc::new(PgQuotaStore::new(after_pool));
    after.migrate().await.unwrap();
    spend_after_restart(after.clone(), &key, &grant).await;
    after.pool().close().await;
    cleanup.run().await;
}

#[tokio::test]
async fn sqlite_grants_survive_a_restart() {
    let (stores, cleanup) = crate::sql_stores::unmigrated_sqlite_stores().await;
    let options = (*stores.pool().connect_options()).clone();
    let before = Arc::new(SqliteQuotaStore::new(stores.pool().clone()));
    before.migrate().await.unwrap();
    let (key, grant) = spend_before_restart(before.clone()).await;
    stores.pool().close().await;
    let after_pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    let after = Arc::new(SqliteQuotaStore::new(after_pool));
    spend_after_restart(after.clone(), &key, &grant).await;
    after.pool().close().await;
    cleanup.run().await;
}

#[tokio::test]
async fn redis_grants_survive_a_restart() {
    let Some(fixture) =
        crate::redis_quotas::RedisQuotaFixture::new("redis_grants_survive_a_restart")
    else {
        return;
    };
    let (key, grant) = spend_before_restart(Arc::new(fixture.server().await)).await;
    spend_after_restart(Arc::new(fixture.server().await), &key, &grant).await;
    fixture.cleanup().run().await;
}

/// Three checkers (servers) over one PostgreSQL store, racing: the plan's
/// 5 calls and the period's grant of 3 are allowed once in all; the next
/// period has the plan's 5 alone; another tenant never gets the grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkers_spend_the_plan_then_the_periods_grant() {
    use chrono::{TimeDelta, TimeZone, Utc};
    use saas_billing::quota::QuotaStore;
    use saas_billing::{
        BillingCalendar, Cadence, Entitlement, EntitlementChecker, FeatureKey, MeterKey, dec,
    };
    use saas_core::ManualClock;

    let Some((pool, cleanup)) =
        crate::sql_stores::pg_pool("checkers_spend_the_plan_then_the_periods_grant").await
    else {
        return;
    };
    let store = Arc::new(PgQuotaStore::new(pool));
    store.migrate().await.unwrap();
    let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let calendar = BillingCalendar::new(start, chrono_tz::UTC, Cadence::monthly());
    let plan = [Entitlement::quota(
        FeatureKey::new("calls").unwrap(),
        MeterKey::new("calls").unwrap(),
        dec!(5),
    )];
    let (tenant, other) = (TenantId::new(), TenantId::new());
    let quotas = GrantedQuota::over(store.clone(), clock.clone());
    let servers: Vec<Arc<EntitlementChecker>> = (0..3)
        .map(|_| {
            let checker = EntitlementChecker::new(clock.clone());
            checker.set_plan(tenant, &plan, calendar);
            checker.set_plan(other, &plan, calendar);
            Arc::new(checker)
        })
        .collect();
    let key = servers[0].quota_key(tenant, "calls").unwrap().unwrap();
    let grant = QuotaGrant::for_period(tenant, "calls", key.period(), 3).unwrap();
    quotas.grant(&grant).await.unwrap();

    let mut tasks = Vec::new();
    for server in &servers {
        for _ in 0..2 {
            let (server, quotas) = (server.clone(), quotas.clone());
            tasks.push(tokio::spawn(async move {
                let mut allowed = 0;
                for _ in 0..5 {
                    let decision = server
                        .try_consume_with_grants(&quotas, tenant, "calls", 1)
                        .await
                        .unwrap();
                    allowed += u64::from(decision.is_allowed());
                }
                allowed
            }));
        }
    }
    let mut allowed = 0;
    for task in tasks {
        allowed += task.await.unwrap();
    }
    assert_eq!(allowed, 8);
    assert_eq!(store.used(&key).await.unwrap(), 5);
    assert_eq!(store.used(&grant.counter()).await.unwrap(), 3);

    // Another tenant on the same plan: its own 5, not the grant.
    let mut others = 0;
    for _ in 0..7 {
        let decision = servers[1]
            .try_consume_with_grants(&quotas, other, "calls", 1)
            .await
            .unwrap();
        others += u64::from(decision.is_allowed());
    }
    assert_eq!(others, 5);

    // February: the January grant ended with its period.
    clock.set(start + TimeDelta::days(31));
    let mut february = 0;
    for _ in 0..7 {
        let decision = servers[2]
            .try_consume_with_grants(&quotas, tenant, "calls", 1)
            .await
            .unwrap();
        february += u64::from(decision.is_allowed());
    }
    assert_eq!(february, 5);
    assert_eq!(store.used(&grant.counter()).await.unwrap(), 3);
    store.pool().close().await;
    cleanup.run().await;
}

/// Three servers (stores on their own pools) racing with leases of 7
/// over a plan of 40 and grants of 25 and 15: exactly 80 granted in all;
/// after every lease is released the counters hold what was granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_servers_with_leases_grant_exactly_plan_plus_grants() {
    use chrono::{TimeDelta, Utc};
    use saas_billing::quota::QuotaStore;

    let Some((stores, cleanup)) = crate::quotas::pg_servers(
        "postgres_servers_with_leases_grant_exactly_plan_plus_grants",
        3,
    )
    .await
    else {
        return;
    };
    let tenant = TenantId::new();
    let key = QuotaKey::new(tenant, "api_calls", "2026-12").unwrap();
    let first = GrantedQuota::over(Arc::new(stores[0].clone()), Arc::new(SystemClock));
    let a = QuotaGrant::for_period(tenant, "api_calls", "2026-12", 25).unwrap();
    let b = QuotaGrant::until(tenant, "api_calls", 15, Utc::now() + TimeDelta::days(1)).unwrap();
    first.grant(&a).await.unwrap();
    first.grant(&b).await.unwrap();

    let mut tasks = Vec::new();
    for store in &stores {
        let quotas = GrantedQuota::over(Arc::new(store.clone()), Arc::new(SystemClock));
        let lease = Arc::new(quotas.lease(&key, 40, 7).await.unwrap());
        for _ in 0..3 {
            let lease = lease.clone();
            tasks.push(tokio::spawn(async move {
                let mut granted = 0u64;
                // 3 × 40 tries per server, more than there is to grant, so
                // no server can stop while its blocks still hold units.
                for _ in 0..40 {
                    granted += u64::from(lease.try_consume(1).await.unwrap());
                }
                (granted, lease)
            }));
        }
    }
    let mut granted = 0;
    let mut leases = Vec::new();
    for task in tasks {
        let (n, lease) = task.await.unwrap();
        granted += n;
        leases.push(lease);
    }
    assert_eq!(granted, 80);
    for lease in &leases {
        lease.release().await.unwrap();
    }
    let used = stores[1].used(&key).await.unwrap()
        + stores[1].used(&a.counter()).await.unwrap()
        + stores[1].used(&b.counter()).await.unwrap();
    assert_eq!(used, 80);
    assert_eq!(stores[2].used(&key).await.unwrap(), 40);
    crate::quotas::close(stores).await;
    cleanup.run().await;
}
