//! The PostgreSQL sandbox, skipped (or failed, when required) without a server.

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
