//! Every tenant's outbox on SQLite.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use saas_events::EventError;
use saas_events::sqlite::{DEFAULT_OUTBOX_TABLE, OutboxLocation, OutboxLocations};
use saas_tenancy::sqlite::SqliteTenancy;
use saas_tenancy::{ClusterName, Placement};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use tokio::sync::Mutex;

use super::{Roster, TenantDatabase, tenancy_error};

/// The outboxes of every active tenant of a [`SqliteTenancy`], for a
/// [`saas_events::sqlite::OutboxRelay`]:
///
/// - `shared:<cluster>` — the shared file's outbox of row tenants, once per
///   cluster, when the outbox table is one of the tenancy's declared tenant
///   tables: its physical table ([`TenantTable::physical`]), read through
///   one unscoped connection per shared file (a tenant view must not hide
///   rows from the relay); each row carries its tenant;
/// - `database:<tenant id>` — a database tenant's own file, through the
///   tenant's pool lent by the tenancy's pool registry for one pass at a
///   time ([`SqliteTenancy::lease_database_pool`]): within the registry's
///   budget however many tenants there are, and a deletion of the tenant
///   waits for the pass. The relay stamps the tenant on its events and
///   refuses any claiming another.
///
/// [`TenantTable::physical`]: saas_tenancy::TenantTable::physical
///
/// ```no_run
/// # async fn run(tenancy: saas_tenancy::sqlite::SqliteTenancy) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use saas_events::InMemoryBus;
/// use saas_events::sqlite::{OutboxRelay, RelayConfig};
/// use saas_foundation::outboxes::SqliteTenantOutboxes;
///
/// let bus = InMemoryBus::new();
/// let outboxes = Arc::new(SqliteTenantOutboxes::new(&tenancy));
/// let relay = OutboxRelay::new(outboxes.clone(), Arc::new(bus.clone()), RelayConfig::default())
///     .spawn();
/// // … serve …
/// relay.shutdown().await;
/// outboxes.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SqliteTenantOutboxes {
    tenancy: SqliteTenancy,
    roster: Roster,
    table: String,
    extra: Vec<OutboxLocation>,
    shared_files: Mutex<HashMap<ClusterName, SqlitePool>>,
}

impl SqliteTenantOutboxes {
    /// The outboxes of `tenancy`'s tenants, in tables named
    /// [`DEFAULT_OUTBOX_TABLE`].
    pub fn new(tenancy: &SqliteTenancy) -> Self {
        Self {
            tenancy: tenancy.clone(),
            roster: Roster::new(Arc::clone(tenancy.catalog())),
            table: DEFAULT_OUTBOX_TABLE.to_owned(),
            extra: Vec::new(),
            shared_files: Mutex::default(),
        }
    }

    /// Outbox tables named `table` (as the tenants' `SqliteOutbox`).
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Lists the catalog again at most every `every` (default one second):
    /// how long a new tenant's first events may wait for the relay.
    pub fn with_refresh(mut self, every: Duration) -> Self {
        self.roster.refresh = every;
        self
    }

    /// Drains `location` as well: an outbox that belongs to no tenant (the
    /// catalog's or the billing file's own).
    pub fn with_location(mut self, location: OutboxLocation) -> Self {
        self.extra.push(location);
        self
    }

    /// Closes the shared files' connections (the tenants' pools belong to
    /// the tenancy). Call it after the relay has stopped.
    pub async fn close(&self) {
        let pools: Vec<SqlitePool> = self
            .shared_files
            .lock()
            .await
            .drain()
            .map(|(_, p)| p)
            .collect();
        for pool in pools {
            pool.close().await;
        }
    }

    /// One connection on `cluster`'s shared file, opened once.
    async fn shared_file(&self, cluster: &ClusterName) -> Result<SqlitePool, EventError> {
        let mut files = self.shared_files.lock().await;
        if let Some(pool) = files.get(cluster) {
            return Ok(pool.clone());
        }
        let config = self
            .tenancy
            .cluster_config(cluster)
            .map_err(tenancy_error)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(
                SqliteConnectOptions::new()
                    .filename(&config.shared_file)
                    .create_if_missing(false)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5)),
            );
        files.insert(cluster.clone(), pool.clone());
        Ok(pool)
    }
}

#[async_trait]
impl OutboxLocations for SqliteTenantOutboxes {
    async fn locations(&self) -> Result<Vec<OutboxLocation>, EventError> {
        let mut found = self.extra.clone();
        let declared = self
            .tenancy
            .tenant_tables()
            .iter()
            .find(|t| t.table.as_str() == self.table);
        if let Some(declared) = declared {
            let physical = declared.physical().map_err(tenancy_error)?;
            for cluster in self.tenancy.clusters() {
                let pool = self.shared_file(&cluster).await?;
                found.push(
                    OutboxLocation::new(format!("shared:{cluster}"), pool)
                        .with_table(physical.as_str())?,
                );
            }
        }
        for tenant in self.roster.active().await?.iter() {
            // The cluster in the name: see `PgTenantOutboxes`.
            if let Placement::Database { cluster, .. } = &tenant.placement {
                let source = Arc::new(TenantDatabase {
                    tenancy: self.tenancy.clone(),
                    tenant: tenant.id,
                    placement: tenant.placement.clone(),
                });
                found.push(
                    OutboxLocation::lent(format!("database:{cluster}:{}", tenant.id), source)
                        .with_table(&self.table)?
                        .with_tenant(tenant.id),
                );
            }
        }
        Ok(found)
    }
}
