//! The foundation in SQLite files, no server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use saas_billing::store::sqlite::SqliteBillingStores;
use saas_core::TenantId;
use saas_events::sqlite::{OutboxRelay, RelayConfig, SqliteOutbox};
use saas_events::{Event, EventError, Publisher};
use saas_tenancy::sqlite::{SqliteClusterConfig, SqliteTenancy, SqliteTenancyBuilder};
use saas_tenancy::{ClusterName, DynCatalog, SqliteCatalog, TenancyError};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{SqliteConnection, SqlitePool};

use super::{Stack, StackBackend, StackError};
use crate::outboxes::SqliteTenantOutboxes;
use crate::services::Services;

/// Catalog, billing and tenants in SQLite files in one directory:
/// `catalog.sqlite`, `billing.sqlite`, `shared.sqlite` (row tenants) and a
/// file per database tenant (cluster `local`).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use saas_events::InMemoryBus;
/// use saas_foundation::services::Services;
/// use saas_foundation::stack::SqliteStack;
///
/// let mut services = Services::new();
/// let stack = SqliteStack::open("app-data", &mut services, |tenancy| tenancy).await?;
/// let bus = InMemoryBus::new();
/// stack.start_relay(Arc::new(bus.clone()), Default::default(), &mut services);
/// // … serve with stack.tenancy() …
/// services.shutdown().await;
/// # Ok(()) }
/// ```
pub type SqliteStack = Stack<SqliteTenancy>;

impl Stack<SqliteTenancy> {
    /// Creates `dir` and the files if missing, the catalog and billing
    /// tables, builds the tenancy — `configure` adds the app's tenant
    /// tables, migrations, limits, clock — and runs its shared migrations
    /// and setup. The catalog and billing pools are closed by `services`
    /// on shutdown, after everything registered later.
    ///
    /// # Errors
    /// [`StackError`]: a directory or file that cannot be created, a
    /// migration failing, an invalid tenancy configuration.
    pub async fn open(
        dir: impl AsRef<Path>,
        services: &mut Services,
        configure: impl FnOnce(SqliteTenancyBuilder) -> SqliteTenancyBuilder,
    ) -> Result<Self, StackError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let catalog_pool = open_file(&dir, "catalog.sqlite").await?;
        let billing_pool = open_file(&dir, "billing.sqlite").await?;
        // The shared file only has to exist (the shared migrations, if
        // any, create its tables).
        open_file(&dir, "shared.sqlite").await?.close().await;
        let (catalog_closing, billing_closing) = (catalog_pool.clone(), billing_pool.clone());
        services.on_stop("catalog and billing files", move || async move {
            billing_closing.close().await;
            catalog_closing.close().await;
        });
        let catalog = SqliteCatalog::new(catalog_pool);
        catalog.migrate().await?;
        let catalog: DynCatalog = Arc::new(catalog);
        let billing = SqliteBillingStores::new(billing_pool);
        billing.migrate().await?;
        let cluster = ClusterName::new("local")?;
        let config = SqliteClusterConfig::new(cluster.clone(), dir.join("shared.sqlite"), &dir);
        let tenancy =
            configure(SqliteTenancy::builder(Arc::clone(&catalog)).cluster(config)).build()?;
        tenancy.migrate_shared().await?;
        Ok(Stack {
            home: dir,
            catalog,
            tenancy: Arc::new(tenancy),
            billing: billing.billing_stores(),
            cluster,
            outbox: SqliteOutbox::new(),
        })
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        &self.home
    }
}

#[async_trait]
impl StackBackend for SqliteTenancy {
    type Home = PathBuf;
    type Outbox = SqliteOutbox;
    type RelayConfig = RelayConfig;

    async fn publish(
        outbox: &SqliteOutbox,
        conn: &mut SqliteConnection,
        topic: &str,
        event: Event,
    ) -> Result<(), EventError> {
        outbox.publish(conn, topic, event).await
    }

    /// Nothing to do: a transaction begun with `begin_for_write` is
    /// `BEGIN IMMEDIATE`, which holds the file's write lock until it ends.
    async fn serialize_writes(
        _conn: &mut SqliteConnection,
        _tenant: TenantId,
    ) -> Result<(), TenancyError> {
        Ok(())
    }

    /// Also registers closing the shared files the relay reads.
    fn start_relay(
        stack: &Stack<Self>,
        sink: Arc<dyn Publisher>,
        config: RelayConfig,
        services: &mut Services,
    ) {
        let outboxes = Arc::new(SqliteTenantOutboxes::new(&stack.tenancy));
        let closing = Arc::clone(&outboxes);
        services.on_stop("outbox files", move || async move { closing.close().await });
        services.start(
            "outbox relay",
            OutboxRelay::new(outboxes, sink, config).spawn(),
        );
    }

    fn describe(home: &PathBuf) -> String {
        format!("SQLite files in {}", home.display())
    }
}

/// A pool on `dir/name`, creating the file (WAL, a five-second busy wait).
async fn open_file(dir: &Path, name: &str) -> Result<SqlitePool, sqlx::Error> {
    SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::new()
                .filename(dir.join(name))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5)),
        )
        .await
}
