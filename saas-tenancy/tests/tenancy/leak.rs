//! The leak harness against real PostgreSQL, for every placement in both
//! scope modes: at least 1,000 generated cases each (`SAAS_LEAK_CASES`
//! raises it).

use std::sync::Arc;

use saas_tenancy::Strategy;
use saas_tenancy::postgres::{ScopeMode, SqlIdent};
use saas_tenancy::testing::leak::run_leak_harness;
use saas_tenancy::testing::pg_leak::PgLeakTarget;

pub(crate) fn cases() -> u32 {
    std::env::var("SAAS_LEAK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .max(1000)
}

fn harness(strategy: Strategy, mode: ScopeMode) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let test = format!("leak::{strategy}::{mode:?}");
    let Some(mut env) = runtime.block_on(crate::pg_env::sandbox(&test, mode)) else {
        return;
    };
    let tenants = runtime.block_on(async {
        let mut tenants = Vec::new();
        for slug in ["leak-a", "leak-b", "leak-c"] {
            tenants.push(env.tenant(slug, strategy).await.unwrap());
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

#[test]
fn row_placement_never_leaks_shared_mode() {
    harness(Strategy::Shared, ScopeMode::Shared);
}

#[test]
fn schema_placement_never_leaks_shared_mode() {
    harness(Strategy::Schema, ScopeMode::Shared);
}

#[test]
fn row_placement_never_leaks_tenant_pools() {
    harness(Strategy::Shared, ScopeMode::TenantPools);
}

#[test]
fn schema_placement_never_leaks_tenant_pools() {
    harness(Strategy::Schema, ScopeMode::TenantPools);
}

#[test]
fn database_placement_never_leaks() {
    harness(Strategy::Database, ScopeMode::Shared);
}
