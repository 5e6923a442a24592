//! Outbox locations read from the tenant catalog: where the tenants' outbox
//! tables are, for the saas-events relays, in every placement — the shared
//! tables of row tenants once per cluster, each schema tenant's schema,
//! each database tenant's own database or file, reached through the
//! tenancy's pool registry and so within its connection budget.
//!
//! The catalog is listed at most once per refresh interval (one second by
//! default), so a relay polling every few milliseconds does not read the
//! whole catalog on every pass, and a tenant signed up a moment ago is
//! drained within that interval. Only active tenants are listed: events a
//! tenant committed before it was suspended wait in its outbox until it is
//! resumed (its database is not reachable meanwhile).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use saas_core::{TenantId, TenantStatus};
use saas_events::{EventError, LeasedPool, PoolSource};
use saas_tenancy::{DynCatalog, ListOptions, Placement, Tenancy, TenancyError, TenantRecord};
use tokio::sync::Mutex;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PgTenantOutboxes;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteTenantOutboxes;

/// How often the catalog is listed again by default.
const DEFAULT_REFRESH: Duration = Duration::from_secs(1);

/// The active tenants, listed from the catalog at most once per `refresh`.
#[derive(Debug)]
struct Roster {
    catalog: DynCatalog,
    refresh: Duration,
    listed: Mutex<Option<(Instant, Arc<Vec<TenantRecord>>)>>,
}

impl Roster {
    fn new(catalog: DynCatalog) -> Self {
        Self {
            catalog,
            refresh: DEFAULT_REFRESH,
            listed: Mutex::new(None),
        }
    }

    /// The active tenants as of at most `refresh` ago.
    async fn active(&self) -> Result<Arc<Vec<TenantRecord>>, EventError> {
        let mut listed = self.listed.lock().await;
        if let Some((at, tenants)) = &*listed
            && at.elapsed() < self.refresh
        {
            return Ok(Arc::clone(tenants));
        }
        let options = ListOptions::default()
            .with_limit(1000)
            .with_status(TenantStatus::Active);
        let tenants = Arc::new(
            self.catalog
                .list_all(&options)
                .await
                .map_err(tenancy_error)?,
        );
        *listed = Some((Instant::now(), Arc::clone(&tenants)));
        Ok(tenants)
    }
}

/// A database tenant's pool, lent by the tenancy's registry per pass —
/// only while the tenant is still at `placement`, the database its
/// location names: after a move the tenant's lease reaches the target,
/// whose outbox numbers the moved rows anew, and a relay confirming rows
/// it read at the source would delete others there.
#[derive(Debug)]
struct TenantDatabase<T> {
    tenancy: T,
    tenant: TenantId,
    placement: Placement,
}

#[async_trait]
impl<T: Tenancy + Clone> PoolSource<T::Database> for TenantDatabase<T> {
    async fn lease(&self) -> Result<LeasedPool<T::Database>, EventError> {
        let lease = self
            .tenancy
            .lease_database_pool(self.tenant)
            .await
            .map_err(tenancy_error)?;
        if lease.placement() != Some(&self.placement) {
            // Retryable: the next listing names the new location, and
            // this one is forgotten.
            return Err(tenancy_error(TenancyError::TenantMoving {
                tenant: self.tenant,
                detail: format!(
                    "its outbox location at {:?} is no longer its placement; the relay reads \
                     it at the new one",
                    self.placement
                ),
            }));
        }
        Ok(LeasedPool::holding(lease.pool().clone(), lease))
    }
}

/// A tenancy error met while finding or reaching an outbox, as the relay
/// reports it (counted as that location's failure for the pass).
fn tenancy_error(error: TenancyError) -> EventError {
    EventError::Backend {
        backend: "tenancy",
        retryable: error.is_retryable(),
        source: Box::new(error),
    }
}
