//! `ScopeMode::TenantPools` past its budget: more active row and schema
//! tenants than pools are all served — each its own rows only — by
//! falling back to the shared runtime pool, never by evicting and
//! connecting per request, and never with more server connections than
//! the budget plus the runtime pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use saas_core::TenantContext;
use saas_tenancy::Strategy;
use saas_tenancy::postgres::{PgTenancy, PoolLimits, ScopeMode};

use crate::pg_env::{insert_note, sandbox_with_limits};

const TENANTS: usize = 12;
const CLIENTS: usize = 8;
const REQUESTS: usize = 40;
/// The sandbox's shared runtime pool.
const RUNTIME_POOL: i64 = 2;
const BUDGET: u32 = 2;

/// One request: a note of `ctx`'s, and a look at what the scope shows.
async fn request(tenancy: &PgTenancy, ctx: &TenantContext, n: usize) {
    let mut tx = tenancy.begin(ctx).await.unwrap();
    insert_note(&mut tx, ctx, &format!("{} {n}", ctx.slug())).await;
    let foreign: i64 = sqlx::query_scalar("SELECT count(*) FROM notes WHERE body NOT LIKE $1")
        .bind(format!("{} %", ctx.slug()))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(foreign, 0, "{} saw another tenant's notes", ctx.slug());
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_active_tenants_than_pools_are_all_served_within_the_budget() {
    let limits = PoolLimits::new(BUDGET, 1).with_acquire_timeout(Duration::from_millis(500));
    let Some(mut env) =
        sandbox_with_limits("pg_past_budget::served", ScopeMode::TenantPools, limits).await
    else {
        return;
    };
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        let strategy = if i % 2 == 0 {
            Strategy::Shared
        } else {
            Strategy::Schema
        };
        tenants.push(env.tenant(&format!("t{i}"), strategy).await.unwrap());
    }
    let tenants = Arc::new(tenants);

    // Server connections of the runtime role, sampled throughout: those of
    // tenant pools (named by their application) and all of them.
    let running = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (admin, role, running) = (
            env.admin.clone(),
            env.runtime_role.clone(),
            Arc::clone(&running),
        );
        async move {
            let mut most = (0i64, 0i64);
            while running.load(Ordering::Acquire) {
                let (pooled, all): (i64, i64) = sqlx::query_as(
                    "SELECT count(*) FILTER (WHERE application_name LIKE 'saas_tenant_%'), \
                     count(*) FROM pg_stat_activity WHERE usename = $1",
                )
                .bind(&role)
                .fetch_one(&admin)
                .await
                .unwrap();
                most = (most.0.max(pooled), most.1.max(all));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            most
        }
    });
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (tenancy, tenants) = (env.tenancy.clone(), Arc::clone(&tenants));
        clients.push(tokio::spawn(async move {
            for n in 0..REQUESTS {
                let ctx = &tenants[(client * 5 + n) % TENANTS];
                request(&tenancy, ctx, client * REQUESTS + n).await;
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    running.store(false, Ordering::Release);
    let (most_pooled, most_all) = sampler.await.unwrap();
    assert!(
        most_pooled <= i64::from(BUDGET),
        "{most_pooled} tenant-pool connections"
    );
    assert!(
        most_all <= i64::from(BUDGET) + RUNTIME_POOL,
        "{most_all} runtime-role connections"
    );

    let stats = env.tenancy.pool_stats().await;
    assert_eq!((stats.waits, stats.timeouts), (0, 0), "{stats:?}");
    assert!(stats.fallbacks > 0, "nobody was past the budget: {stats:?}");
    // No least-recently-used eviction for row and schema tenants: a pool
    // goes only to make room for a busier tenant.
    assert_eq!(stats.evictions, stats.promotions, "{stats:?}");
    assert!(stats.reserved <= BUDGET);

    // Every note is where it was written, and only there.
    let mut total = 0;
    for ctx in tenants.iter() {
        let mut conn = env.tenancy.acquire(ctx).await.unwrap();
        let (mine, all): (i64, i64) =
            sqlx::query_as("SELECT count(*) FILTER (WHERE body LIKE $1), count(*) FROM notes")
                .bind(format!("{} %", ctx.slug()))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(mine, all, "{} sees foreign notes", ctx.slug());
        total += all;
    }
    assert_eq!(total, (CLIENTS * REQUESTS) as i64);
    env.cleanup().await;
}
