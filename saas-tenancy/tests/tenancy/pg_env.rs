//! The PostgreSQL sandbox, skipped (or failed, when required) without a server.

use saas_core::TenantContext;
use saas_tenancy::postgres::{PoolLimits, ScopeMode};
use saas_tenancy::testing::pg::PgSandbox;
use saas_test_support::{Service, service_url};

pub(crate) async fn sandbox(test: &str, mode: ScopeMode) -> Option<PgSandbox> {
    sandbox_with_limits(test, mode, PoolLimits::default()).await
}

pub(crate) async fn sandbox_with_limits(
    test: &str,
    mode: ScopeMode,
    limits: PoolLimits,
) -> Option<PgSandbox> {
    let url = service_url(Service::Postgres, test)?;
    Some(PgSandbox::with_limits(&url, mode, limits).await.unwrap())
}

pub(crate) async fn sandbox_with_clock(
    test: &str,
    mode: ScopeMode,
    clock: saas_core::SharedClock,
) -> Option<PgSandbox> {
    let url = service_url(Service::Postgres, test)?;
    Some(
        PgSandbox::with_clock(&url, mode, PoolLimits::default(), clock)
            .await
            .unwrap(),
    )
}

/// Writes a note for `ctx` through its scoped transaction.
pub(crate) async fn add_note(env: &PgSandbox, ctx: &TenantContext, body: &str) {
    let mut tx = env.tenancy.begin(ctx).await.unwrap();
    insert_note(&mut tx, ctx, body).await;
    tx.commit().await.unwrap();
}

/// Inserts a note of `ctx` through a scoped handle's connection.
pub(crate) async fn insert_note(conn: &mut sqlx::PgConnection, ctx: &TenantContext, body: &str) {
    sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, $2)")
        .bind(ctx.tenant_id())
        .bind(body)
        .execute(conn)
        .await
        .unwrap();
}

/// The schema or database name of a schema or database tenant, quoted.
pub(crate) async fn quoted_object_name(env: &PgSandbox, ctx: &TenantContext) -> String {
    let record = env
        .tenancy
        .catalog()
        .get(ctx.tenant_id())
        .await
        .unwrap()
        .unwrap();
    record.placement.object_name().unwrap().quoted()
}
