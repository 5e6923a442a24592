//! The foundation on one PostgreSQL server.

use std::sync::Arc;

use async_trait::async_trait;
use saas_billing::store::postgres::PgBillingStores;
use saas_core::TenantId;
use saas_events::postgres::{OutboxRelay, PgOutbox, RelayConfig};
use saas_events::{Event, EventError, Publisher};
use saas_tenancy::postgres::{PgClusterConfig, PgTenancy, PgTenancyBuilder, SqlIdent};
use saas_tenancy::{ClusterName, DynCatalog, PgCatalog, TenancyError};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

use super::{Stack, StackBackend, StackError};
use crate::outboxes::PgTenantOutboxes;
use crate::services::Services;

/// Catalog, billing tables, shared tenant tables and tenants on one
/// PostgreSQL server (cluster `main`), opened as its administrator; scoped
/// queries run as `runtime_role` (a login-less role the tenancy creates).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use saas_events::InMemoryBus;
/// use saas_foundation::services::Services;
/// use saas_foundation::stack::PgStack;
/// use saas_tenancy::TenantTable;
///
/// let mut services = Services::new();
/// let stack = PgStack::open(
///     "postgres://postgres@127.0.0.1:5432/app".parse()?,
///     "app_runtime",
///     &mut services,
///     |tenancy| tenancy.tenant_table(TenantTable::new("notes").unwrap()),
/// )
/// .await?;
/// let bus = InMemoryBus::new();
/// // … subscribe the app's consumers to `bus` first, then:
/// stack.start_relay(Arc::new(bus.clone()), Default::default(), &mut services);
/// // … serve with stack.tenancy() …
/// services.shutdown().await;
/// # Ok(()) }
/// ```
pub type PgStack = Stack<PgTenancy>;

impl Stack<PgTenancy> {
    /// Connects (a pool of four administrator connections, closed by
    /// `services` on shutdown, after everything registered later), creates
    /// or updates the catalog and billing tables, builds the tenancy —
    /// `configure` adds the app's tenant tables, migrations, limits, clock
    /// — and runs its shared migrations and setup (the runtime role,
    /// row-level security and grants on the tenant tables).
    ///
    /// # Errors
    /// [`StackError`]: the server unreachable, a migration failing, an
    /// invalid role name or tenancy configuration.
    pub async fn open(
        admin: PgConnectOptions,
        runtime_role: &str,
        services: &mut Services,
        configure: impl FnOnce(PgTenancyBuilder) -> PgTenancyBuilder,
    ) -> Result<Self, StackError> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(admin.clone())
            .await?;
        let closing = pool.clone();
        services.on_stop("administrator pool", move || async move {
            closing.close().await;
        });
        let catalog = PgCatalog::new(pool.clone());
        catalog.migrate().await?;
        let catalog: DynCatalog = Arc::new(catalog);
        let billing = PgBillingStores::new(pool.clone());
        billing.migrate().await?;
        let cluster = ClusterName::new("main")?;
        let config = PgClusterConfig::new(cluster.clone(), admin, SqlIdent::new(runtime_role)?);
        let tenancy =
            configure(PgTenancy::builder(Arc::clone(&catalog)).cluster(config)).build()?;
        tenancy.migrate_shared().await?;
        Ok(Stack {
            home: pool,
            catalog,
            tenancy: Arc::new(tenancy),
            billing: billing.billing_stores(),
            cluster,
            outbox: PgOutbox::new(),
        })
    }

    /// The administrator pool (catalog and billing tables live here).
    pub fn admin(&self) -> &PgPool {
        &self.home
    }
}

#[async_trait]
impl StackBackend for PgTenancy {
    type Home = PgPool;
    type Outbox = PgOutbox;
    type RelayConfig = RelayConfig;

    async fn publish(
        outbox: &PgOutbox,
        conn: &mut PgConnection,
        topic: &str,
        event: Event,
    ) -> Result<(), EventError> {
        outbox.publish(conn, topic, event).await
    }

    /// A transaction-scoped advisory lock on a key of the tenant's (in the
    /// one-`bigint` key space, which the tenancy's own two-`int4` locks do
    /// not share), so a count by one transaction and an insert by another
    /// cannot interleave; rows lock only as they are written, and counting
    /// writes none.
    async fn serialize_writes(
        conn: &mut PgConnection,
        tenant: TenantId,
    ) -> Result<(), TenancyError> {
        sqlx::query(
            "SELECT pg_catalog.pg_advisory_xact_lock(\
             pg_catalog.hashtextextended('saas_foundation.writes:' || $1::text, 0))",
        )
        .bind(tenant)
        .execute(conn)
        .await?;
        Ok(())
    }

    fn start_relay(
        stack: &Stack<Self>,
        sink: Arc<dyn Publisher>,
        config: RelayConfig,
        services: &mut Services,
    ) {
        let outboxes = Arc::new(PgTenantOutboxes::new(&stack.tenancy));
        services.start(
            "outbox relay",
            OutboxRelay::new(outboxes, sink, config).spawn(),
        );
    }

    fn describe(home: &PgPool) -> String {
        let options = home.connect_options();
        format!(
            "PostgreSQL at {}:{}, database {}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("(the user's)")
        )
    }
}
