//! Where the outbox tables are, for the relays: read from the tenant
//! catalog on every pass, so tenants signed up later are found.

use std::collections::HashMap;
use std::path::PathBuf;

use async_trait::async_trait;
use saas_events::EventError;
use saas_events::postgres::{OutboxLocation, OutboxLocations};
use saas_events::sqlite as lite;
use saas_tenancy::{DynCatalog, ListOptions, Placement, TenantRecord};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};
use tokio::sync::Mutex;

/// Every servable tenant in the catalog, page by page.
async fn servable_tenants(catalog: &DynCatalog) -> Result<Vec<TenantRecord>, EventError> {
    let mut tenants = catalog
        .list_all(&ListOptions::default().with_limit(1000))
        .await
        .map_err(EventError::handler)?;
    tenants.retain(|t| t.status.is_servable());
    Ok(tenants)
}

/// PostgreSQL outboxes: the shared schema once (all row tenants), each
/// schema tenant's schema, each database tenant's database (through a
/// small pool kept per database).
pub(crate) struct PgCatalogOutboxes {
    catalog: DynCatalog,
    admin: PgPool,
    admin_options: PgConnectOptions,
    databases: Mutex<HashMap<String, PgPool>>,
}

impl std::fmt::Debug for PgCatalogOutboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCatalogOutboxes").finish_non_exhaustive()
    }
}

impl PgCatalogOutboxes {
    pub(crate) fn new(catalog: DynCatalog, admin: PgPool, admin_options: PgConnectOptions) -> Self {
        Self {
            catalog,
            admin,
            admin_options,
            databases: Mutex::default(),
        }
    }

    async fn database_pool(&self, database: &str) -> PgPool {
        let mut pools = self.databases.lock().await;
        pools
            .entry(database.to_owned())
            .or_insert_with(|| {
                PgPoolOptions::new()
                    .max_connections(1)
                    .connect_lazy_with(self.admin_options.clone().database(database))
            })
            .clone()
    }

    /// Closes the per-database pools.
    pub(crate) async fn close(&self) {
        for pool in self.databases.lock().await.values() {
            pool.close().await;
        }
    }
}

#[async_trait]
impl OutboxLocations for PgCatalogOutboxes {
    async fn locations(&self) -> Result<Vec<OutboxLocation>, EventError> {
        let mut found = vec![OutboxLocation::new(
            "shared",
            self.admin.clone(),
            Some("public".to_owned()),
        )?];
        for tenant in servable_tenants(&self.catalog).await? {
            match &tenant.placement {
                Placement::Shared { .. } => {}
                // Names are distinct from "shared" whatever the slug: the
                // relay tracks unconfirmed rows by location name.
                Placement::Schema { schema, .. } => found.push(OutboxLocation::new(
                    format!("schema:{}", tenant.slug.as_str()),
                    self.admin.clone(),
                    Some(schema.as_str().to_owned()),
                )?),
                Placement::Database { database, .. } => found.push(OutboxLocation::new(
                    format!("database:{}", tenant.slug.as_str()),
                    self.database_pool(database.as_str()).await,
                    None,
                )?),
                // A placement this app does not know: its events are not
                // relayed until the app learns where its outbox is.
                other => {
                    tracing::warn!(tenant = %tenant.id, placement = ?other, "no outbox location for this placement")
                }
            }
        }
        Ok(found)
    }
}

/// SQLite outboxes: one in each database tenant's file, carrying that
/// tenant (the relay refuses an event claiming another).
pub(crate) struct SqliteCatalogOutboxes {
    catalog: DynCatalog,
    dir: PathBuf,
    files: Mutex<HashMap<String, SqlitePool>>,
}

impl std::fmt::Debug for SqliteCatalogOutboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteCatalogOutboxes")
            .finish_non_exhaustive()
    }
}

impl SqliteCatalogOutboxes {
    pub(crate) fn new(catalog: DynCatalog, dir: PathBuf) -> Self {
        Self {
            catalog,
            dir,
            files: Mutex::default(),
        }
    }

    /// Closes the per-file pools.
    pub(crate) async fn close(&self) {
        for pool in self.files.lock().await.values() {
            pool.close().await;
        }
    }
}

#[async_trait]
impl lite::OutboxLocations for SqliteCatalogOutboxes {
    async fn locations(&self) -> Result<Vec<lite::OutboxLocation>, EventError> {
        let mut found = Vec::new();
        for tenant in servable_tenants(&self.catalog).await? {
            let Placement::Database { database, .. } = &tenant.placement else {
                continue;
            };
            let pool = {
                let mut files = self.files.lock().await;
                files
                    .entry(database.as_str().to_owned())
                    .or_insert_with(|| {
                        let file = self.dir.join(format!("{}.sqlite", database.as_str()));
                        SqlitePoolOptions::new()
                            .max_connections(1)
                            .connect_lazy_with(
                                SqliteConnectOptions::new()
                                    .filename(file)
                                    .journal_mode(SqliteJournalMode::Wal)
                                    .busy_timeout(std::time::Duration::from_secs(5)),
                            )
                    })
                    .clone()
            };
            found
                .push(lite::OutboxLocation::new(tenant.slug.as_str(), pool).with_tenant(tenant.id));
        }
        Ok(found)
    }
}
