//! The leak harness against real PostgreSQL, in both scope modes with
//! two tenants of every placement side by side: at least 1,000 generated
//! cases per run, so per placement and mode (`SAAS_LEAK_CASES` raises it), with session-level raw SQL
//! (settings, role, search path, PREPARE/DEALLOCATE, LISTEN, advisory
//! locks, temporary tables, held cursors, a refused COPY, a transaction
//! left open) between the scoped uses.

use std::sync::Arc;

use saas_tenancy::Strategy;
use saas_tenancy::postgres::{PoolLimits, ScopeMode, SqlIdent};
use saas_tenancy::testing::leak::{LeakTarget, run_leak_harness};
use saas_tenancy::testing::pg_leak::PgLeakTarget;
use sqlx::Executor;

pub(crate) fn cases() -> u32 {
    std::env::var("SAAS_LEAK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .max(1000)
}

/// Two tenants of every placement, side by side: each case meets row,
/// schema and database tenants on the same runtime connections, so one
/// run covers every placement in a mode, a placement against itself
/// (two row tenants share a table) and against the others.
pub(crate) const EVERY_PLACEMENT: [Strategy; 6] = [
    Strategy::Shared,
    Strategy::Schema,
    Strategy::Database,
    Strategy::Shared,
    Strategy::Schema,
    Strategy::Database,
];

/// Slugs of the harness's tenants, one per placement given.
pub(crate) const SLUGS: [&str; 6] = ["leak-a", "leak-b", "leak-c", "leak-d", "leak-e", "leak-f"];

/// Tenants with these placements, one table, `cases()` cases.
fn harness_mixed(strategies: &[Strategy], mode: ScopeMode) {
    harness_with_limits(strategies, mode, PoolLimits::default());
}

/// As [`harness_mixed`], with these pool limits.
fn harness_with_limits(strategies: &[Strategy], mode: ScopeMode, limits: PoolLimits) {
    let runtime = crate::fixtures::harness_runtime();
    let test = format!("leak::{strategies:?}::{mode:?}::{}", limits.budget);
    let sandbox = crate::pg_env::sandbox_with_limits(&test, mode, limits);
    let Some(mut env) = runtime.block_on(sandbox) else {
        return;
    };
    let tenants = runtime.block_on(async {
        let mut tenants = Vec::new();
        for (slug, strategy) in SLUGS.into_iter().zip(strategies) {
            tenants.push(env.tenant(slug, *strategy).await.unwrap());
        }
        tenants
    });
    let ident = |s: &str| SqlIdent::new(s).unwrap();
    let target = PgLeakTarget::new(
        env.tenancy.clone(),
        env.cluster.clone(),
        &ident("notes"),
        &ident("tenant_id"),
        &ident("id"),
        &ident("body"),
    );
    let result = run_leak_harness(runtime.handle(), Arc::new(target), tenants, cases());
    runtime.block_on(env.cleanup());
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// The default mode: row and schema tenants share the runtime
/// connections, database tenants have pools of their own.
#[test]
fn every_placement_never_leaks_shared_mode() {
    harness_mixed(&EVERY_PLACEMENT, ScopeMode::Shared);
}

#[test]
fn every_placement_never_leaks_tenant_pools() {
    harness_mixed(&EVERY_PLACEMENT, ScopeMode::TenantPools);
}

/// TenantPools past its budget (one pool for three tenants): the tenants
/// without a pool share the runtime connections, and a busy one may take
/// over the pool — nothing a session leaves reaches another tenant.
#[test]
fn row_and_schema_tenants_past_the_budget_never_leak() {
    let limits = PoolLimits::new(1, 1).with_promotion(
        4,
        std::time::Duration::from_millis(200),
        std::time::Duration::from_millis(50),
    );
    harness_with_limits(
        &[Strategy::Shared, Strategy::Schema, Strategy::Shared],
        ScopeMode::TenantPools,
        limits,
    );
}

/// The tenant-less check is not vacuous for schema and database tenants:
/// it fails as soon as the runtime role could read a tenant schema
/// without being scoped to it.
#[tokio::test]
async fn the_tenant_less_check_sees_a_readable_tenant_schema() {
    let Some(mut env) = crate::pg_env::sandbox("leak::unscoped_check", ScopeMode::Shared).await
    else {
        return;
    };
    let row = env.tenant("u-row", Strategy::Shared).await.unwrap();
    let schema = env.tenant("u-schema", Strategy::Schema).await.unwrap();
    let database = env.tenant("u-db", Strategy::Database).await.unwrap();
    let ident = |s: &str| SqlIdent::new(s).unwrap();
    let target = PgLeakTarget::new(
        env.tenancy.clone(),
        env.cluster.clone(),
        &ident("notes"),
        &ident("tenant_id"),
        &ident("id"),
        &ident("body"),
    );
    for ctx in [&row, &schema, &database] {
        target
            .insert(ctx, ctx.tenant_id(), 1, "secret")
            .await
            .unwrap();
    }
    let tenants = [row, schema.clone(), database];
    assert_eq!(target.unscoped_count(&tenants).await.unwrap(), 0);

    // A grant that lets the bare runtime role into the tenant's schema.
    let name = saas_tenancy::TenantObjectName::for_tenant(schema.tenant_id()).quoted();
    let runtime = format!("\"{}\"", env.runtime_role);
    env.admin
        .execute(sqlx::AssertSqlSafe(format!(
            "GRANT USAGE ON SCHEMA {name} TO {runtime}; \
             GRANT SELECT ON {name}.notes TO {runtime}"
        )))
        .await
        .unwrap();
    let err = target.unscoped_count(&tenants).await.unwrap_err();
    assert!(err.contains("permission denied"), "{err}");
    env.cleanup().await;
}
