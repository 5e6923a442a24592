//! SQLite's pool registry for file tenants: one connection budget across
//! tenants, least-recently-used eviction, idle eviction, bounded waits and
//! the counters that report them.

use std::time::Duration;

use saas_core::TenantContext;
use saas_tenancy::sqlite::{PoolLimits, PoolStats, SqliteTenancy};
use saas_tenancy::testing::sqlite::{SqliteSandbox, sqlite_migrations};
use saas_tenancy::{Strategy, TenancyError};

const BUDGET: u32 = 2;

async fn within_budget(tenancy: &SqliteTenancy, when: &str) -> PoolStats {
    let stats = tenancy.pool_stats().await;
    assert!(stats.reserved <= BUDGET, "{when}: {stats:?}");
    assert!(stats.connections <= BUDGET, "{when}: {stats:?}");
    stats
}

async fn write(tenancy: &SqliteTenancy, ctx: &TenantContext, id: i64) {
    let mut conn = tenancy.acquire(ctx).await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, ?, 'x')")
        .bind(ctx.tenant_id())
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn file_tenant_pools_stay_within_the_budget_and_are_evicted() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let limits = PoolLimits::new(BUDGET, 1)
        .with_acquire_timeout(Duration::from_millis(300))
        .with_idle_pool_timeout(Duration::from_millis(50));
    let tenancy = sandbox
        .builder(sqlite_migrations())
        .unwrap()
        .pool_limits(limits)
        .build()
        .unwrap();
    let mut tenants = Vec::new();
    for i in 0..5 {
        tenants.push(
            sandbox
                .tenant(&format!("f{i}"), Strategy::Database)
                .await
                .unwrap(),
        );
    }

    // More tenants than the budget, one after another: pools make room
    // for each other, least recently used first.
    for round in 0..2 {
        for (i, ctx) in tenants.iter().enumerate() {
            write(&tenancy, ctx, round * 10 + i as i64).await;
            within_budget(&tenancy, &format!("round {round}, tenant {i}")).await;
        }
    }
    let stats = within_budget(&tenancy, "after the rounds").await;
    assert_eq!(stats.open_pools, 2);
    assert_eq!(stats.evictions, 8, "10 first uses, 2 without eviction");
    assert_eq!((stats.waits, stats.timeouts), (0, 0));

    // Both pools held: a third tenant waits, then gets the typed error.
    let h0 = tenancy.acquire(&tenants[0]).await.unwrap();
    let h1 = tenancy.acquire(&tenants[1]).await.unwrap();
    let started = std::time::Instant::now();
    let err = tenancy.acquire(&tenants[2]).await.unwrap_err();
    assert!(matches!(err, TenancyError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let stats = within_budget(&tenancy, "while held").await;
    assert_eq!((stats.waits, stats.timeouts), (1, 1));
    // A waiter is let in as soon as a holder lets go.
    let waiter = {
        let tenancy = tenancy.clone();
        let ctx = tenants[2].clone();
        tokio::spawn(async move { tenancy.begin(&ctx).await.map(drop) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(h0);
    waiter.await.unwrap().unwrap();
    let stats = within_budget(&tenancy, "after the wait").await;
    assert_eq!((stats.waits, stats.timeouts), (2, 1));

    // Idle pools are closed; the one in use stays whatever its age.
    tokio::time::sleep(Duration::from_millis(120)).await;
    let evictions = stats.evictions;
    assert_eq!(tenancy.evict_idle_pools().await, 1);
    let stats = within_budget(&tenancy, "after idle eviction").await;
    assert_eq!((stats.open_pools, stats.evictions), (1, evictions + 1));
    drop(h1);

    // Nothing was lost along the way: each tenant has its two rows.
    for ctx in &tenants {
        let mut conn = tenancy.acquire(ctx).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(n, 2);
    }
    within_budget(&tenancy, "at the end").await;
    drop(tenancy);
    sandbox.cleanup().await;
}
