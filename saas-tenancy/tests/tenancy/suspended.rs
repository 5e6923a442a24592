//! A handle held while its tenant is suspended: suspension refuses *new*
//! handles; one already held keeps working until it is committed or
//! dropped (the documented semantics of `set_status` / `suspend`). The
//! data is kept and is there again after resume.

use saas_core::{TenantContext, TenantStatus};
use saas_tenancy::postgres::ScopeMode;
use saas_tenancy::testing::pg::PgSandbox;
use saas_tenancy::testing::sqlite::SqliteSandbox;
use saas_tenancy::{Strategy, TenancyError};

use crate::pg_env::{insert_note, sandbox};

fn assert_refused_as_suspended<T: std::fmt::Debug>(result: Result<T, TenancyError>, what: &str) {
    match result {
        Err(TenancyError::TenantNotServable {
            status: TenantStatus::Suspended,
            ..
        }) => {}
        other => panic!("{what}: expected TenantNotServable(Suspended), got {other:?}"),
    }
}

async fn pg_bodies(env: &PgSandbox, ctx: &TenantContext) -> Vec<String> {
    let mut tx = env.tenancy.begin(ctx).await.unwrap();
    let mut bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    bodies.sort();
    bodies
}

async fn pg_suspend(env: &PgSandbox, ctx: &TenantContext, to: TenantStatus) {
    env.tenancy.set_status(ctx.tenant_id(), to).await.unwrap();
}

async fn pg_held_handles_outlive_suspension(mode: ScopeMode) {
    let Some(mut env) = sandbox("suspended::pg_held_handles", mode).await else {
        return;
    };
    for strategy in [Strategy::Shared, Strategy::Schema, Strategy::Database] {
        let ctx = env
            .tenant(&format!("held-{strategy}"), strategy)
            .await
            .unwrap();
        let label = format!("{mode:?} {strategy}");

        // A transaction held across the suspension works and commits.
        let mut tx = env.tenancy.begin(&ctx).await.unwrap();
        insert_note(&mut tx, &ctx, "before").await;
        pg_suspend(&env, &ctx, TenantStatus::Suspended).await;
        insert_note(&mut tx, &ctx, "in held tx").await;
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(seen, 2, "{label}: the held transaction still sees its rows");
        tx.commit().await.unwrap();
        assert_refused_as_suspended(env.tenancy.begin(&ctx).await, &label);
        assert_refused_as_suspended(env.tenancy.acquire(&ctx).await, &label);
        pg_suspend(&env, &ctx, TenantStatus::Active).await;

        // The same for a single-statement connection.
        let mut conn = env.tenancy.acquire(&ctx).await.unwrap();
        pg_suspend(&env, &ctx, TenantStatus::Suspended).await;
        insert_note(&mut conn, &ctx, "in held conn").await;
        drop(conn);
        assert_refused_as_suspended(env.tenancy.acquire(&ctx).await, &label);
        assert_refused_as_suspended(env.tenancy.begin(&ctx).await, &label);

        // Nothing was lost: resumed, the tenant sees all three rows.
        pg_suspend(&env, &ctx, TenantStatus::Active).await;
        assert_eq!(
            pg_bodies(&env, &ctx).await,
            ["before", "in held conn", "in held tx"],
            "{label}"
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn pg_held_handles_outlive_suspension_in_shared_mode() {
    pg_held_handles_outlive_suspension(ScopeMode::Shared).await;
}

#[tokio::test]
async fn pg_held_handles_outlive_suspension_in_tenant_pools_mode() {
    pg_held_handles_outlive_suspension(ScopeMode::TenantPools).await;
}

async fn sqlite_insert(
    conn: &mut sqlx::SqliteConnection,
    ctx: &TenantContext,
    id: i64,
    body: &str,
) {
    sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, ?, ?)")
        .bind(ctx.tenant_id())
        .bind(id)
        .bind(body)
        .execute(conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn sqlite_held_handles_outlive_suspension() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let tenancy = &sandbox.tenancy;
    for strategy in [Strategy::Shared, Strategy::Database] {
        let ctx = sandbox
            .tenant(&format!("held-{strategy}"), strategy)
            .await
            .unwrap();
        let id = ctx.tenant_id();
        let label = strategy.to_string();

        let mut tx = tenancy.begin(&ctx).await.unwrap();
        sqlite_insert(&mut tx, &ctx, 1, "before").await;
        tenancy.suspend(id).await.unwrap();
        sqlite_insert(&mut tx, &ctx, 2, "in held tx").await;
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(seen, 2, "{label}: the held transaction still sees its rows");
        tx.commit().await.unwrap();
        assert_refused_as_suspended(tenancy.begin(&ctx).await, &label);
        assert_refused_as_suspended(tenancy.acquire(&ctx).await, &label);
        tenancy.resume(id).await.unwrap();

        let mut conn = tenancy.acquire(&ctx).await.unwrap();
        tenancy.suspend(id).await.unwrap();
        sqlite_insert(&mut conn, &ctx, 3, "in held conn").await;
        drop(conn);
        assert_refused_as_suspended(tenancy.acquire(&ctx).await, &label);
        assert_refused_as_suspended(tenancy.begin_immediate(&ctx).await, &label);

        tenancy.resume(id).await.unwrap();
        let mut conn = tenancy.acquire(&ctx).await.unwrap();
        let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(bodies, ["before", "in held tx", "in held conn"], "{label}");
    }
    sandbox.cleanup().await;
}
