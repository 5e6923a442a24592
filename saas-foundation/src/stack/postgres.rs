//! The foundation on one PostgreSQL server.

use std::sync::Arc;

use saas_billing::BillingStores;
use saas_billing::store::postgres::PgBillingStores;
use saas_events::Publisher;
use saas_events::postgres::{OutboxRelay, RelayConfig};
use saas_tenancy::postgres::{PgClusterConfig, PgTenancy, PgTenancyBuilder, SqlIdent};
use saas_tenancy::{ClusterName, DynCatalog, PgCatalog};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::StackError;
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
#[derive(Debug, Clone)]
pub struct PgStack {
    admin: PgPool,
    catalog: DynCatalog,
    tenancy: Arc<PgTenancy>,
    billing: BillingStores,
    cluster: ClusterName,
}

impl PgStack {
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
        Ok(Self {
            admin: pool,
            catalog,
            tenancy: Arc::new(tenancy),
            billing: billing.billing_stores(),
            cluster,
        })
    }

    /// Starts the outbox relay over every tenant's outbox
    /// ([`PgTenantOutboxes`]) into `sink`, registered with `services`:
    /// start the sink's consumers before, so it stops before them.
    pub fn start_relay(
        &self,
        sink: Arc<dyn Publisher>,
        config: RelayConfig,
        services: &mut Services,
    ) {
        let outboxes = Arc::new(PgTenantOutboxes::new(&self.tenancy));
        services.start(
            "outbox relay",
            OutboxRelay::new(outboxes, sink, config).spawn(),
        );
    }

    /// The administrator pool (catalog and billing tables live here).
    pub fn admin(&self) -> &PgPool {
        &self.admin
    }

    /// The tenant catalog.
    pub fn catalog(&self) -> &DynCatalog {
        &self.catalog
    }

    /// The tenancy.
    pub fn tenancy(&self) -> &Arc<PgTenancy> {
        &self.tenancy
    }

    /// The billing stores, for the app's `BillingEngine`.
    pub fn billing(&self) -> BillingStores {
        self.billing.clone()
    }

    /// The cluster new tenants are placed on (`main`).
    pub fn cluster(&self) -> &ClusterName {
        &self.cluster
    }
}
