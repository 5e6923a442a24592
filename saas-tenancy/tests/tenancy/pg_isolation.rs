//! Scoped access on PostgreSQL: every placement, and the ways a tenant
//! could leak into another tenant's data or connection.

use std::time::Duration;

use std::sync::Arc;

use saas_core::{ManualClock, TenantContext, TenantStatus};
use saas_tenancy::postgres::{PoolLimits, ScopeMode};
use saas_tenancy::{Placement, Strategy, TenancyError};
use sqlx::Executor;

use saas_tenancy::testing::pg::PgSandbox;

use crate::pg_env::{add_note, sandbox, sandbox_with_clock, sandbox_with_limits};

async fn notes(env: &PgSandbox, ctx: &TenantContext) -> Vec<String> {
    let mut conn = env.tenancy.acquire(ctx).await.unwrap();
    let mut bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    bodies.sort();
    bodies
}

async fn every_placement_serves_the_same_code_in_isolation(mode: ScopeMode) {
    let Some(mut env) = sandbox("pg_isolation::every_placement", mode).await else {
        return;
    };
    let row_a = env.tenant("row-a", Strategy::Shared).await.unwrap();
    let row_b = env.tenant("row-b", Strategy::Shared).await.unwrap();
    let schema_c = env.tenant("schema-c", Strategy::Schema).await.unwrap();
    let db_d = env.tenant("db-d", Strategy::Database).await.unwrap();
    let all = [&row_a, &row_b, &schema_c, &db_d];
    for ctx in all {
        for i in 0..2 {
            add_note(&env, ctx, &format!("{} #{i}", ctx.slug())).await;
        }
    }
    for ctx in all {
        let expected = vec![format!("{} #0", ctx.slug()), format!("{} #1", ctx.slug())];
        assert_eq!(notes(&env, ctx).await, expected, "{}", ctx.slug());
    }
    let tx = env.tenancy.begin(&db_d).await.unwrap();
    assert!(matches!(tx.placement(), Placement::Database { .. }));
    drop(tx);
    env.cleanup().await;
}

async fn row_security_refuses_cross_tenant_writes(mode: ScopeMode) {
    let Some(mut env) = sandbox("pg_isolation::row_writes", mode).await else {
        return;
    };
    let a = env.tenant("a", Strategy::Shared).await.unwrap();
    let b = env.tenant("b", Strategy::Shared).await.unwrap();
    add_note(&env, &a, "a1").await;
    add_note(&env, &b, "b1").await;

    // Inserting a row for B from A's scope: WITH CHECK refuses it.
    let mut tx = env.tenancy.begin(&a).await.unwrap();
    let err = sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, 'forged')")
        .bind(b.tenant_id())
        .execute(&mut *tx)
        .await
        .unwrap_err();
    let code = err.as_database_error().and_then(|e| e.code()).unwrap();
    assert_eq!(code, "42501", "row-level security violation");
    drop(tx);

    // Updating or deleting everything only touches A's rows.
    let mut tx = env.tenancy.begin(&a).await.unwrap();
    let updated = sqlx::query("UPDATE notes SET body = 'mine'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(updated, 1);
    // Moving A's row to B is a write into B: refused.
    let moved = sqlx::query("UPDATE notes SET tenant_id = $1")
        .bind(b.tenant_id())
        .execute(&mut *tx)
        .await;
    assert!(moved.is_err());
    drop(tx);
    let mut tx = env.tenancy.begin(&a).await.unwrap();
    let deleted = sqlx::query("DELETE FROM notes")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(deleted, 1);
    tx.commit().await.unwrap();
    assert_eq!(notes(&env, &b).await, vec!["b1".to_owned()]);
    assert!(notes(&env, &a).await.is_empty());
    env.cleanup().await;
}

async fn schema_tenants_cannot_reach_each_other(mode: ScopeMode) {
    let Some(mut env) = sandbox("pg_isolation::schema", mode).await else {
        return;
    };
    let a = env.tenant("a", Strategy::Schema).await.unwrap();
    let b = env.tenant("b", Strategy::Schema).await.unwrap();
    add_note(&env, &a, "secret of a").await;
    let a_schema = env
        .tenancy
        .begin(&a)
        .await
        .unwrap()
        .placement()
        .object_name()
        .unwrap()
        .quoted();

    // B names A's schema explicitly: the database refuses.
    let mut tx = env.tenancy.begin(&b).await.unwrap();
    let sql = format!("SELECT body FROM {a_schema}.notes");
    let err = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).unwrap(),
        "42501"
    );
    drop(tx);
    // …and the shared row tables are invisible to a schema tenant's role.
    let mut tx = env.tenancy.begin(&b).await.unwrap();
    let shared = format!("SELECT count(*) FROM \"{}\".notes", env.shared_schema);
    assert!(
        sqlx::query(sqlx::AssertSqlSafe(shared))
            .fetch_one(&mut *tx)
            .await
            .is_err()
    );
    drop(tx);
    assert!(notes(&env, &b).await.is_empty());
    env.cleanup().await;
}

/// After one way of ending a scoped handle: the shared runtime pool's
/// connections carry no tenant, role, search path or open transaction and
/// see no rows; in `TenantPools` mode the tenant's own pool connections
/// (held two at once, so not only the one just used) are out of any
/// transaction and still carry exactly their own tenant.
async fn no_state_left(env: &PgSandbox, mode: ScopeMode, ctx: &TenantContext, what: &str) {
    crate::pg_cancel::runtime_pool_is_clean(env, what).await;
    let pool = env.tenancy.runtime_pool(&env.cluster).unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(visible, 0, "{what}: rows visible without a tenant");
    drop(conn);
    if mode != ScopeMode::TenantPools {
        return;
    }
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = env.tenancy.acquire(ctx).await.unwrap();
        let tenant: Option<String> =
            sqlx::query_scalar("SELECT NULLIF(current_setting('saas.tenant_id', true), '')")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(tenant, Some(ctx.tenant_id().to_string()), "{what}");
        assert!(
            !crate::pg_cancel::in_transaction(&mut conn).await,
            "{what}: a transaction was left open"
        );
        held.push(conn);
    }
}

async fn no_tenant_state_survives_on_pooled_connections(mode: ScopeMode) {
    let Some(mut env) = sandbox("pg_isolation::connection_state", mode).await else {
        return;
    };
    let row = env.tenant("row", Strategy::Shared).await.unwrap();
    let schema = env.tenant("schema", Strategy::Schema).await.unwrap();
    add_note(&env, &row, "r").await;

    // Commit, rollback, an error mid-transaction, a cancelled future, and
    // a panic while holding a scoped transaction; then the same for
    // single-statement connections. Checked after each one, before any
    // later checkout could reset what it left.
    for (ctx, placement) in [(&row, "row"), (&schema, "schema")] {
        let what = |case: &str| format!("{mode:?} {placement}: {case}");
        env.tenancy
            .begin(ctx)
            .await
            .unwrap()
            .commit()
            .await
            .unwrap();
        no_state_left(&env, mode, ctx, &what("commit")).await;
        env.tenancy
            .begin(ctx)
            .await
            .unwrap()
            .rollback()
            .await
            .unwrap();
        no_state_left(&env, mode, ctx, &what("rollback")).await;
        let mut tx = env.tenancy.begin(ctx).await.unwrap();
        assert!(tx.execute("SELECT 1/0").await.is_err());
        drop(tx);
        no_state_left(&env, mode, ctx, &what("error in a transaction")).await;
        let mut tx = env.tenancy.begin(ctx).await.unwrap();
        let slow = tx.execute("SELECT pg_sleep(5)");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), slow)
                .await
                .is_err()
        );
        drop(tx);
        no_state_left(
            &env,
            mode,
            ctx,
            &what("transaction cancelled mid-statement"),
        )
        .await;
        let tenancy = env.tenancy.clone();
        let owned = ctx.clone();
        let panicked = tokio::spawn(async move {
            let mut tx = tenancy.begin(&owned).await.unwrap();
            tx.execute("SELECT 1").await.unwrap();
            panic!("handler bug while holding a scoped transaction");
        })
        .await;
        assert!(panicked.unwrap_err().is_panic());
        no_state_left(&env, mode, ctx, &what("panic in a transaction")).await;

        let mut conn = env.tenancy.acquire(ctx).await.unwrap();
        conn.execute("SELECT 1").await.unwrap();
        drop(conn);
        no_state_left(&env, mode, ctx, &what("connection")).await;
        let mut conn = env.tenancy.acquire(ctx).await.unwrap();
        assert!(conn.execute("SELECT 1/0").await.is_err());
        drop(conn);
        no_state_left(&env, mode, ctx, &what("error on a connection")).await;
        let mut conn = env.tenancy.acquire(ctx).await.unwrap();
        let slow = conn.execute("SELECT pg_sleep(5)");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), slow)
                .await
                .is_err()
        );
        drop(conn);
        no_state_left(&env, mode, ctx, &what("connection cancelled mid-statement")).await;
        // Cancelled somewhere in acquire (a timer tick, not a chosen point;
        // pg_cancel.rs cancels at each suspension, after the checkout too).
        let _ = tokio::time::timeout(Duration::from_micros(1), env.tenancy.acquire(ctx)).await;
        no_state_left(&env, mode, ctx, &what("acquire cancelled")).await;
        let tenancy = env.tenancy.clone();
        let owned = ctx.clone();
        let panicked = tokio::spawn(async move {
            let mut conn = tenancy.acquire(&owned).await.unwrap();
            conn.execute("SELECT 1").await.unwrap();
            panic!("handler bug while holding a scoped connection");
        })
        .await;
        assert!(panicked.unwrap_err().is_panic());
        no_state_left(&env, mode, ctx, &what("panic on a connection")).await;
    }
    env.cleanup().await;
}

async fn suspended_and_unknown_tenants_get_no_handle(mode: ScopeMode) {
    let clock = ManualClock::new(chrono::Utc::now());
    let Some(mut env) =
        sandbox_with_clock("pg_isolation::status", mode, Arc::new(clock.clone())).await
    else {
        return;
    };
    let a = env.tenant("a", Strategy::Shared).await.unwrap();
    let b = env.tenant("b", Strategy::Schema).await.unwrap();
    add_note(&env, &a, "a1").await;
    add_note(&env, &b, "b1").await;

    // Through this tenancy: refused at once, for begin and acquire.
    env.tenancy
        .set_status(a.tenant_id(), TenantStatus::Suspended)
        .await
        .unwrap();
    let err = env.tenancy.begin(&a).await.unwrap_err();
    assert!(matches!(
        err,
        TenancyError::TenantNotServable {
            status: TenantStatus::Suspended,
            ..
        }
    ));
    assert!(env.tenancy.acquire(&a).await.is_err());

    // Through another process (the catalog directly): refused once the
    // cached record has expired, never later than the TTL.
    env.tenancy
        .catalog()
        .set_status(b.tenant_id(), TenantStatus::Suspended)
        .await
        .unwrap();
    clock.advance(chrono::Duration::milliseconds(1001));
    assert!(matches!(
        env.tenancy.acquire(&b).await.unwrap_err(),
        TenancyError::TenantNotServable { .. }
    ));
    // Data kept: resumed tenants see their rows again.
    env.tenancy
        .set_status(b.tenant_id(), TenantStatus::Active)
        .await
        .unwrap();
    assert_eq!(notes(&env, &b).await, vec!["b1".to_owned()]);

    let stranger = TenantContext::new(saas_core::TenantId::new(), a.slug().clone());
    assert!(matches!(
        env.tenancy.begin(&stranger).await.unwrap_err(),
        TenancyError::TenantNotFound(_)
    ));
    env.cleanup().await;
}

async fn tenant_database_pools_stay_within_the_budget(mode: ScopeMode) {
    let limits = PoolLimits::new(2, 1).with_acquire_timeout(Duration::from_millis(300));
    let Some(mut env) = sandbox_with_limits("pg_isolation::budget", mode, limits).await else {
        return;
    };
    let t1 = env.tenant("d1", Strategy::Database).await.unwrap();
    let t2 = env.tenant("d2", Strategy::Database).await.unwrap();
    let t3 = env.tenant("d3", Strategy::Database).await.unwrap();
    let h1 = env.tenancy.begin(&t1).await.unwrap();
    let h2 = env.tenancy.begin(&t2).await.unwrap();
    // Budget full and both pools in use: the third caller waits, then fails.
    let err = env.tenancy.begin(&t3).await.unwrap_err();
    assert!(matches!(err, TenancyError::Timeout(_)), "{err:?}");
    let stats = env.tenancy.pool_stats().await;
    assert_eq!(stats.timeouts, 1);
    assert!(stats.reserved <= 2 && stats.open_pools == 2);
    // Releasing one lets the third in by evicting the least recently used.
    drop(h1);
    let h3 = env.tenancy.begin(&t3).await.unwrap();
    let stats = env.tenancy.pool_stats().await;
    assert_eq!(stats.evictions, 1);
    assert!(stats.reserved <= 2 && stats.connections <= 2, "{stats:?}");
    drop((h2, h3));
    env.cleanup().await;
}

async fn idle_tenant_pools_are_closed(mode: ScopeMode) {
    let limits = PoolLimits::new(4, 1).with_idle_pool_timeout(Duration::from_millis(50));
    let Some(mut env) = sandbox_with_limits("pg_isolation::idle", mode, limits).await else {
        return;
    };
    let busy = env.tenant("busy", Strategy::Database).await.unwrap();
    let idle = env.tenant("idle", Strategy::Database).await.unwrap();
    drop(env.tenancy.begin(&idle).await.unwrap());
    let held = env.tenancy.begin(&busy).await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    // The idle pool goes; the one in use stays whatever its age.
    assert_eq!(env.tenancy.evict_idle_pools().await, 1);
    let stats = env.tenancy.pool_stats().await;
    assert_eq!((stats.open_pools, stats.evictions), (1, 1));
    held.commit().await.unwrap();
    // The evicted tenant simply gets a new pool.
    assert!(env.tenancy.begin(&idle).await.is_ok());
    env.cleanup().await;
}

async fn acquire_statements_commit_on_their_own(mode: ScopeMode) {
    let Some(mut env) = sandbox("pg_isolation::acquire", mode).await else {
        return;
    };
    let row = env.tenant("row", Strategy::Shared).await.unwrap();
    let schema = env.tenant("schema", Strategy::Schema).await.unwrap();
    for ctx in [&row, &schema] {
        let mut conn = env.tenancy.acquire(ctx).await.unwrap();
        sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, 'autocommitted')")
            .bind(ctx.tenant_id())
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        assert_eq!(notes(&env, ctx).await, vec!["autocommitted".to_owned()]);
    }
    env.cleanup().await;
}

/// The server drops every connection of the runtime role (a restart, a
/// failover, an idle timeout): the pools open fresh connections, on which
/// sqlx's `before_acquire` never runs. Each must carry its own tenant's
/// scope and nothing else — for the shared runtime pool and for tenant
/// pools, whose fresh connections get the scope from the startup packet.
async fn fresh_connections_carry_only_their_own_scope(mode: ScopeMode) {
    let Some(mut env) = sandbox("pg_isolation::fresh_connections", mode).await else {
        return;
    };
    let a = env.tenant("fresh-a", Strategy::Shared).await.unwrap();
    let b = env.tenant("fresh-b", Strategy::Shared).await.unwrap();
    let s = env.tenant("fresh-s", Strategy::Schema).await.unwrap();
    for (ctx, body) in [(&a, "a1"), (&b, "b1"), (&s, "s1")] {
        add_note(&env, ctx, body).await;
    }
    for round in 0..3 {
        let dropped: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
        )
        .bind(&env.runtime_role)
        .fetch_all(&env.admin)
        .await
        .unwrap();
        assert!(!dropped.is_empty(), "round {round}: no runtime connection");
        // Termination is a signal: wait until the backends are gone, so the
        // pools find them dead instead of losing them mid-statement.
        let mut left = i64::MAX;
        for _ in 0..500 {
            left = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1")
                .bind(&env.runtime_role)
                .fetch_one(&env.admin)
                .await
                .unwrap();
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            left, 0,
            "round {round}: terminated backends still alive after 5 s"
        );
        for (ctx, body) in [(&a, "a1"), (&b, "b1"), (&s, "s1")] {
            assert_eq!(
                notes(&env, ctx).await,
                vec![body.to_owned()],
                "round {round}"
            );
            let mut tx = env.tenancy.begin(ctx).await.unwrap();
            let seen: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            assert_eq!(seen, vec![body.to_owned()], "round {round}");
            tx.commit().await.unwrap();
        }
        no_state_left(&env, mode, &a, &format!("round {round}")).await;
    }
    env.cleanup().await;
}

/// One test per behaviour and scope mode.
macro_rules! both_modes {
    ($($name:ident),+) => {
        mod shared_mode {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::ScopeMode::Shared).await;
                }
            )+
        }
        mod tenant_pools_mode {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::ScopeMode::TenantPools).await;
                }
            )+
        }
    };
}

both_modes!(
    idle_tenant_pools_are_closed,
    acquire_statements_commit_on_their_own,
    every_placement_serves_the_same_code_in_isolation,
    row_security_refuses_cross_tenant_writes,
    schema_tenants_cannot_reach_each_other,
    no_tenant_state_survives_on_pooled_connections,
    fresh_connections_carry_only_their_own_scope,
    suspended_and_unknown_tenants_get_no_handle,
    tenant_database_pools_stay_within_the_budget
);
