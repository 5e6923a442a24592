//! This crate's metrics (feature `metrics`; see saas-foundation's
//! `METRICS.md` for the catalogue). Without the feature every function
//! here is empty and compiles away.

use std::time::Duration;
#[cfg(feature = "metrics")]
use std::time::Instant;

use saas_core::TenantId;

/// Tenant pools opened.
#[cfg(feature = "metrics")]
pub(crate) const POOLS_OPENED: &str = "saas_tenancy_pools_opened_total";
/// Tenant pools open now (a gauge).
#[cfg(feature = "metrics")]
pub(crate) const POOLS_OPEN: &str = "saas_tenancy_pools_open";
/// Connections of the pool budget reserved by open and closing pools.
#[cfg(feature = "metrics")]
pub(crate) const BUDGET_IN_USE: &str = "saas_tenancy_pool_budget_in_use";
/// The pool budget (connections), summed over the process's registries.
#[cfg(feature = "metrics")]
pub(crate) const BUDGET: &str = "saas_tenancy_pool_budget";
/// Pools closed to make room, because they were idle, or replaced.
#[cfg(feature = "metrics")]
pub(crate) const EVICTIONS: &str = "saas_tenancy_pool_evictions_total";
/// Callers that waited for budget.
#[cfg(feature = "metrics")]
pub(crate) const WAITS: &str = "saas_tenancy_pool_waits_total";
/// How long callers that waited for budget waited.
#[cfg(feature = "metrics")]
pub(crate) const WAIT_SECONDS: &str = "saas_tenancy_pool_wait_seconds";
/// Callers that gave up waiting for budget.
#[cfg(feature = "metrics")]
pub(crate) const TIMEOUTS: &str = "saas_tenancy_pool_timeouts_total";
/// Row or schema tenants served on the shared pool for want of room.
#[cfg(feature = "metrics")]
pub(crate) const FALLBACKS: &str = "saas_tenancy_pool_fallbacks_total";
/// Pools that replaced an idle one for a busier tenant.
#[cfg(feature = "metrics")]
pub(crate) const PROMOTIONS: &str = "saas_tenancy_pool_promotions_total";
/// Scoped `begin` / `begin_for_write` / `acquire` latency, until the
/// handle is ready.
#[cfg(feature = "metrics")]
pub(crate) const SCOPE_SECONDS: &str = "saas_tenancy_scope_seconds";
/// Tenant records served from the record cache (`result` hit or miss).
#[cfg(all(feature = "metrics", feature = "postgres"))]
pub(crate) const RECORD_CACHE: &str = "saas_tenancy_record_cache_total";
/// Tenants a fleet migration attempted, by `outcome`.
#[cfg(feature = "metrics")]
pub(crate) const TENANT_MIGRATIONS: &str = "saas_tenancy_tenant_migrations_total";
/// Tenants a running fleet migration has still to attempt.
#[cfg(feature = "metrics")]
pub(crate) const MIGRATION_REMAINING: &str = "saas_tenancy_fleet_migration_remaining";

#[cfg(feature = "metrics")]
use metrics::{counter, gauge, histogram};

pub(crate) fn pool_opened(per_tenant: u32) {
    #[cfg(feature = "metrics")]
    {
        counter!(POOLS_OPENED).increment(1);
        gauge!(POOLS_OPEN).increment(1.0);
        gauge!(BUDGET_IN_USE).increment(f64::from(per_tenant));
    }
    #[cfg(not(feature = "metrics"))]
    let _ = per_tenant;
}

/// A pool taken out of use (its room is held until [`pool_closed`]).
pub(crate) fn pool_taken() {
    #[cfg(feature = "metrics")]
    gauge!(POOLS_OPEN).decrement(1.0);
}

pub(crate) fn pool_closed(per_tenant: u32) {
    #[cfg(feature = "metrics")]
    gauge!(BUDGET_IN_USE).decrement(f64::from(per_tenant));
    #[cfg(not(feature = "metrics"))]
    let _ = per_tenant;
}

/// A registry with `budget` connections came (`true`) or went.
pub(crate) fn budget(budget: u32, added: bool) {
    #[cfg(feature = "metrics")]
    match added {
        true => gauge!(BUDGET).increment(f64::from(budget)),
        false => gauge!(BUDGET).decrement(f64::from(budget)),
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (budget, added);
}

pub(crate) fn evicted(pools: usize) {
    #[cfg(feature = "metrics")]
    counter!(EVICTIONS).increment(pools as u64);
    #[cfg(not(feature = "metrics"))]
    let _ = pools;
}

/// A caller that waited `waited` for budget got it or (`timed_out`) not.
pub(crate) fn waited(waited: Duration, timed_out: bool) {
    #[cfg(feature = "metrics")]
    {
        counter!(WAITS).increment(1);
        histogram!(WAIT_SECONDS).record(waited.as_secs_f64());
        if timed_out {
            counter!(TIMEOUTS).increment(1);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (waited, timed_out);
}

pub(crate) fn fell_back() {
    #[cfg(feature = "metrics")]
    counter!(FALLBACKS).increment(1);
}

pub(crate) fn promoted() {
    #[cfg(feature = "metrics")]
    counter!(PROMOTIONS).increment(1);
}

#[cfg(feature = "postgres")]
pub(crate) fn record_cache(hit: bool) {
    #[cfg(feature = "metrics")]
    counter!(RECORD_CACHE, "result" => if hit { "hit" } else { "miss" }).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = hit;
}

/// A fleet migration running: the remaining-tenants gauge is set to its
/// size now and back to zero when dropped (the run ended, by any path).
pub(crate) struct FleetRun;

impl FleetRun {
    pub(crate) fn start(tenants: usize) -> Self {
        #[cfg(feature = "metrics")]
        gauge!(MIGRATION_REMAINING).set(tenants as f64);
        #[cfg(not(feature = "metrics"))]
        let _ = tenants;
        FleetRun
    }
}

impl Drop for FleetRun {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        gauge!(MIGRATION_REMAINING).set(0.0);
    }
}

/// One fleet-migration attempt ended (`outcome`: applied, current,
/// failed), `remaining` tenants to go.
pub(crate) fn tenant_migrated(outcome: &'static str, remaining: usize) {
    #[cfg(feature = "metrics")]
    {
        counter!(TENANT_MIGRATIONS, "outcome" => outcome).increment(1);
        gauge!(MIGRATION_REMAINING).set(remaining as f64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (outcome, remaining);
}

/// Times one scoped `begin`/`acquire`; see [`Scope::done`].
pub(crate) struct Scope {
    #[cfg(feature = "metrics")]
    started: Instant,
    #[cfg(feature = "metrics")]
    op: &'static str,
    #[cfg(feature = "metrics")]
    backend: &'static str,
}

impl Scope {
    /// Starts timing `op` (begin, begin_for_write, acquire) on `backend`.
    #[inline]
    pub(crate) fn start(op: &'static str, backend: &'static str) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = (op, backend);
        Scope {
            #[cfg(feature = "metrics")]
            started: Instant::now(),
            #[cfg(feature = "metrics")]
            op,
            #[cfg(feature = "metrics")]
            backend,
        }
    }

    /// Records the time since `start` for `tenant`, by outcome.
    #[inline]
    pub(crate) fn done<T, E>(self, tenant: TenantId, result: &Result<T, E>) {
        #[cfg(feature = "metrics")]
        {
            let outcome = if result.is_ok() { "ok" } else { "error" };
            let labels = vec![
                metrics::Label::new("op", self.op),
                metrics::Label::new("backend", self.backend),
                metrics::Label::new("outcome", outcome),
            ];
            let labels = saas_core::metrics::with_tenant(labels, Some(tenant));
            histogram!(SCOPE_SECONDS, labels).record(self.started.elapsed().as_secs_f64());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (self, tenant, result);
    }
}
