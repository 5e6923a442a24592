//! A disposable multi-tenant PostgreSQL setup (feature `testing` +
//! `postgres`): its own shared schema, runtime role, catalog and a `notes`
//! table for every placement, and every tenant schema, role and database it
//! provisions — all dropped by [`PgSandbox::cleanup`]. Used by this crate's
//! tests and benchmarks, and by hosts that want to try the strategies.

use std::str::FromStr;
use std::sync::Arc;

use crate::postgres::{
    PgClusterConfig, PgTenancy, PgTenancyBuilder, PoolLimits, ScopeMode, SqlIdent, TenantTable,
};
use crate::{ClusterName, DynCatalog, NewTenant, PgCatalog, Strategy, TenantRecord};
use saas_core::{TenantContext, TenantSlug};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool, SqlSafeStr};

/// A disposable tenancy setup on one PostgreSQL server.
#[derive(Debug)]
pub struct PgSandbox {
    /// The tenancy under test.
    pub tenancy: PgTenancy,
    /// An admin pool on the shared schema.
    pub admin: PgPool,
    /// The shared schema (row tenants' tables, the catalog).
    pub shared_schema: String,
    /// The runtime role.
    pub runtime_role: String,
    /// The cluster name (`main`).
    pub cluster: ClusterName,
    tenants: Vec<TenantRecord>,
    config: PgClusterConfig,
    catalog: DynCatalog,
    clock: saas_core::SharedClock,
    /// Row and schema tenants served through a transaction pooler.
    pooled: bool,
}

/// The `notes` table of row tenants.
pub const NOTES_SHARED: &str = "CREATE TABLE notes (\
    tenant_id uuid NOT NULL, id bigserial, body text NOT NULL, \
    PRIMARY KEY (tenant_id, id))";
/// The `notes` table of schema and database tenants.
pub const NOTES_TENANT: &str = "CREATE TABLE notes (\
    tenant_id uuid NOT NULL, id bigserial, body text NOT NULL, \
    PRIMARY KEY (tenant_id, id))";

/// The sandbox's tenant migrations: version 1 creates `notes`.
pub fn tenant_migrations() -> Vec<Migration> {
    vec![Migration::new(
        1,
        "notes".into(),
        MigrationType::Simple,
        NOTES_TENANT.into_sql_str(),
        false,
    )]
}

impl PgSandbox {
    /// A sandbox on the server at `url`.
    pub async fn new(url: &str, mode: ScopeMode) -> Result<Self, crate::TenancyError> {
        Self::with_limits(url, mode, PoolLimits::default()).await
    }

    /// A sandbox with explicit pool limits.
    pub async fn with_limits(
        url: &str,
        mode: ScopeMode,
        limits: PoolLimits,
    ) -> Result<Self, crate::TenancyError> {
        Self::with_clock(url, mode, limits, Arc::new(saas_core::SystemClock)).await
    }

    /// A sandbox whose tenancy reads `clock` (for its record cache).
    pub async fn with_clock(
        url: &str,
        mode: ScopeMode,
        limits: PoolLimits,
        clock: saas_core::SharedClock,
    ) -> Result<Self, crate::TenancyError> {
        Self::build(url, mode, limits, clock, 2).await
    }

    /// A sandbox whose shared runtime pool holds `runtime_connections`
    /// (two by default, so that connections are reused between tenants;
    /// concurrent load wants one per client).
    pub async fn with_runtime_pool(
        url: &str,
        mode: ScopeMode,
        limits: PoolLimits,
        runtime_connections: u32,
    ) -> Result<Self, crate::TenancyError> {
        let clock = Arc::new(saas_core::SystemClock);
        Self::build(url, mode, limits, clock, runtime_connections).await
    }

    /// A sandbox whose row and schema tenants are served through the
    /// transaction pooler at `pooler_url` (PgBouncer in `pool_mode =
    /// transaction` in front of the server at `url`), in
    /// transaction-pooling mode (see
    /// [`PgTenancyBuilder::transaction_pooling`]); the sandbox's runtime
    /// role and database replace the URL's user and database.
    pub async fn behind_transaction_pooler(
        url: &str,
        pooler_url: &str,
        runtime_connections: u32,
    ) -> Result<Self, crate::TenancyError> {
        let clock = Arc::new(saas_core::SystemClock);
        let limits = PoolLimits::default();
        let pooler = Some(pooler_url);
        Self::build_with(
            url,
            ScopeMode::Shared,
            limits,
            clock,
            runtime_connections,
            pooler,
        )
        .await
    }

    async fn build(
        url: &str,
        mode: ScopeMode,
        limits: PoolLimits,
        clock: saas_core::SharedClock,
        runtime_connections: u32,
    ) -> Result<Self, crate::TenancyError> {
        Self::build_with(url, mode, limits, clock, runtime_connections, None).await
    }

    async fn build_with(
        url: &str,
        mode: ScopeMode,
        limits: PoolLimits,
        clock: saas_core::SharedClock,
        runtime_connections: u32,
        pooler: Option<&str>,
    ) -> Result<Self, crate::TenancyError> {
        let shared_schema = super::unique_name("saas_shared");
        let runtime_role = super::unique_name("saas_rt");
        let base = PgConnectOptions::from_str(url)?;
        let admin_options = base
            .clone()
            .options([("search_path", shared_schema.as_str())]);

        let bootstrap = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(base.clone())
            .await?;
        bootstrap
            .execute(AssertSqlSafe(format!("CREATE SCHEMA \"{shared_schema}\"")))
            .await?;
        bootstrap.close().await;

        let admin = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(admin_options.clone())
            .await?;
        admin.execute(NOTES_SHARED).await?;
        let catalog = PgCatalog::new(admin.clone());
        catalog.migrate().await?;
        let catalog: DynCatalog = Arc::new(catalog);

        let cluster = ClusterName::new("main")?;
        let mut config = PgClusterConfig::new(
            cluster.clone(),
            admin_options,
            SqlIdent::new(runtime_role.clone())?,
        );
        config.max_connections = runtime_connections;
        if let Some(pooler) = pooler {
            let database = base.get_database().unwrap_or("postgres");
            let options = PgConnectOptions::from_str(pooler)?
                .username(&runtime_role)
                .database(database);
            config = config.with_transaction_pooler(options);
        }
        let tenancy = PgTenancy::builder(Arc::clone(&catalog))
            .cluster(config.clone())
            .transaction_pooling(pooler.is_some())
            .tenant_table(TenantTable::new("notes")?)
            .tenant_migrations(Migrator::with_migrations(tenant_migrations()))
            .pool_limits(limits)
            .scope_mode(mode)
            .clock(Arc::clone(&clock))
            .build()?;
        tenancy.setup().await?;
        Ok(Self {
            tenancy,
            admin,
            shared_schema,
            runtime_role,
            cluster,
            tenants: Vec::new(),
            config,
            catalog,
            clock,
            pooled: pooler.is_some(),
        })
    }

    /// Another tenancy over the same catalog and cluster, with other tenant
    /// migrations (to test migrating the fleet to a new version).
    pub fn tenancy_with_migrations(
        &self,
        migrations: Vec<Migration>,
    ) -> Result<PgTenancy, crate::TenancyError> {
        self.tenancy_with(|b| b.tenant_migrations(Migrator::with_migrations(migrations)))
    }

    /// Another tenancy over the same catalog, cluster, table, tenant
    /// migrations and clock, adjusted by `configure` (hooks, policies…).
    pub fn tenancy_with(
        &self,
        configure: impl FnOnce(PgTenancyBuilder) -> PgTenancyBuilder,
    ) -> Result<PgTenancy, crate::TenancyError> {
        self.tenancy_over(Arc::clone(&self.catalog), configure)
    }

    /// Like [`PgSandbox::tenancy_with`], over `catalog` instead of the
    /// sandbox's own (e.g. a wrapper of it that delays reads, to make a
    /// race deterministic).
    pub fn tenancy_over(
        &self,
        catalog: DynCatalog,
        configure: impl FnOnce(PgTenancyBuilder) -> PgTenancyBuilder,
    ) -> Result<PgTenancy, crate::TenancyError> {
        let builder = PgTenancy::builder(catalog)
            .cluster(self.config.clone())
            .tenant_table(TenantTable::new("notes")?)
            .tenant_migrations(Migrator::with_migrations(tenant_migrations()))
            .transaction_pooling(self.pooled)
            .clock(Arc::clone(&self.clock));
        configure(builder).build()
    }

    /// Provisions a tenant and returns its context.
    pub async fn tenant(
        &mut self,
        slug: &str,
        strategy: Strategy,
    ) -> Result<TenantContext, crate::TenancyError> {
        let new = NewTenant::new(
            TenantSlug::parse(slug)
                .map_err(|e| crate::TenancyError::InvalidInput(e.to_string()))?,
            slug.to_uppercase(),
            strategy,
            self.cluster.clone(),
        )?;
        let record = self.tenancy.provision(new).await?;
        self.tenants.push(record.clone());
        Ok(TenantContext::new(record.id, record.slug))
    }

    /// Has [`cleanup`](Self::cleanup) drop the storage of a tenant the
    /// test provisioned some other way (through another tenancy over the
    /// sandbox, or concurrently).
    pub fn track(&mut self, record: TenantRecord) {
        self.tenants.push(record);
    }

    /// Drops everything the test created.
    pub async fn cleanup(self) {
        let Self {
            tenancy,
            admin,
            shared_schema,
            runtime_role,
            tenants,
            cluster,
            ..
        } = self;
        tenancy.release_kept_connections();
        if let Ok(pool) = tenancy.runtime_pool(&cluster) {
            pool.close().await;
        }
        let _ = tenancy.drop_spare_schemas(&cluster).await;
        for t in &tenants {
            if let Some(name) = t.placement.object_name() {
                let q = name.quoted();
                match t.placement.strategy() {
                    Strategy::Schema => {
                        let _ = admin
                            .execute(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {q} CASCADE")))
                            .await;
                        let _ = admin
                            .execute(AssertSqlSafe(format!("DROP ROLE IF EXISTS {q}")))
                            .await;
                    }
                    Strategy::Database => {
                        let _ = admin
                            .execute(AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {q} WITH (FORCE)"
                            )))
                            .await;
                    }
                    Strategy::Shared => {}
                }
            }
        }
        drop(tenancy);
        let _ = admin
            .execute(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{shared_schema}\" CASCADE"
            )))
            .await;
        let _ = admin
            .execute(AssertSqlSafe(format!("DROP OWNED BY \"{runtime_role}\"")))
            .await;
        let _ = admin
            .execute(AssertSqlSafe(format!(
                "DROP ROLE IF EXISTS \"{runtime_role}\""
            )))
            .await;
        admin.close().await;
    }
}
