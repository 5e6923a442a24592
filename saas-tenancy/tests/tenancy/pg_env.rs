//! A disposable multi-tenant PostgreSQL setup per test: its own shared
//! schema, runtime role, catalog, and every tenant schema, role and
//! database it provisions — all dropped afterwards.

use std::str::FromStr;
use std::sync::Arc;

use saas_core::{TenantContext, TenantSlug};
use saas_tenancy::postgres::{
    PgClusterConfig, PgTenancy, PoolLimits, ScopeMode, SqlIdent, TenantTable,
};
use saas_tenancy::{ClusterName, DynCatalog, NewTenant, PostgresCatalog, Strategy, TenantRecord};
use saas_test_support::{Service, service_url, unique_name};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool, SqlSafeStr};

pub(crate) struct PgEnv {
    pub(crate) tenancy: PgTenancy,
    pub(crate) admin: PgPool,
    pub(crate) shared_schema: String,
    pub(crate) runtime_role: String,
    pub(crate) cluster: ClusterName,
    tenants: Vec<TenantRecord>,
}

const NOTES_SHARED: &str = "CREATE TABLE notes (\
    tenant_id uuid NOT NULL, id bigserial, body text NOT NULL, \
    PRIMARY KEY (tenant_id, id))";
const NOTES_TENANT: &str = "CREATE TABLE notes (\
    tenant_id uuid NOT NULL, id bigserial, body text NOT NULL, \
    PRIMARY KEY (tenant_id, id))";

fn tenant_migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        "notes".into(),
        MigrationType::Simple,
        NOTES_TENANT.into_sql_str(),
        false,
    )])
}

impl PgEnv {
    pub(crate) async fn new(test: &str, mode: ScopeMode) -> Option<Self> {
        Self::with_limits(test, mode, PoolLimits::default()).await
    }

    pub(crate) async fn with_limits(
        test: &str,
        mode: ScopeMode,
        limits: PoolLimits,
    ) -> Option<Self> {
        let url = service_url(Service::Postgres, test)?;
        let shared_schema = unique_name("saas_shared");
        let runtime_role = unique_name("saas_rt");
        let base = PgConnectOptions::from_str(&url).unwrap();
        let admin_options = base
            .clone()
            .options([("search_path", shared_schema.as_str())]);

        let bootstrap = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(base.clone())
            .await
            .unwrap();
        bootstrap
            .execute(AssertSqlSafe(format!("CREATE SCHEMA \"{shared_schema}\"")))
            .await
            .unwrap();
        bootstrap.close().await;

        let admin = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(admin_options.clone())
            .await
            .unwrap();
        admin.execute(NOTES_SHARED).await.unwrap();
        let catalog = PostgresCatalog::new(admin.clone());
        catalog.migrate().await.unwrap();
        let catalog: DynCatalog = Arc::new(catalog);

        let cluster = ClusterName::new("main").unwrap();
        let mut config = PgClusterConfig::new(
            cluster.clone(),
            admin_options,
            SqlIdent::new(runtime_role.clone()).unwrap(),
        );
        // A small pool, so connections are reused between tenants.
        config.max_connections = 2;
        let tenancy = PgTenancy::builder(catalog)
            .cluster(config)
            .tenant_table(TenantTable::new("notes").unwrap())
            .tenant_migrations(tenant_migrator())
            .pool_limits(limits)
            .scope_mode(mode)
            .build()
            .unwrap();
        tenancy.setup().await.unwrap();
        Some(Self {
            tenancy,
            admin,
            shared_schema,
            runtime_role,
            cluster,
            tenants: Vec::new(),
        })
    }

    pub(crate) async fn tenant(&mut self, slug: &str, strategy: Strategy) -> TenantContext {
        let new = NewTenant::new(
            TenantSlug::parse(slug).unwrap(),
            slug.to_uppercase(),
            strategy,
            self.cluster.clone(),
        )
        .unwrap();
        let record = self.tenancy.provision(new).await.unwrap();
        self.tenants.push(record.clone());
        TenantContext::new(record.id, record.slug)
    }

    /// Drops everything the test created.
    pub(crate) async fn cleanup(self) {
        let Self {
            tenancy,
            admin,
            shared_schema,
            runtime_role,
            tenants,
            cluster,
        } = self;
        if let Ok(pool) = tenancy.runtime_pool(&cluster) {
            pool.close().await;
        }
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
