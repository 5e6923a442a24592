//! Wiring: storage, identity, billing and events for the quickstart.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use saas_billing::{
    Aggregation, BillingEngine, BillingStores, Catalog, Charge, Currency, Meter, MeterKey, Money,
    NewSubscription, PlanId, PlanRef, PlanVersion, Product, ProductId, SubscriptionId, TierTable,
    dec,
};
use saas_core::{
    Algorithm, HostResolver, JwtVerifier, KeySet, ManualClock, RequestResolver, SigningKey,
    TenantContext, TenantSlug, TokenClaimResolver, TokenIssuer, VerificationKey,
};
use saas_events::InMemoryBus;
use saas_events::sqlite::{OutboxLocation, SqliteOutbox, StaticLocations};
use saas_tenancy::sqlite::{SqliteClusterConfig, SqliteTenancy};
use saas_tenancy::{
    CatalogLookup, ClusterName, DynCatalog, NewTenant, SqliteCatalog, Strategy, TenantTable,
};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Executor, SqlSafeStr, SqlitePool};

const SECRET: &[u8] = b"quickstart-secret-of-at-least-32-bytes";
const PROJECTS: &str = "CREATE TABLE projects (tenant_id BLOB NOT NULL, id INTEGER NOT NULL, \
                        name TEXT NOT NULL, PRIMARY KEY (tenant_id, id))";
/// Where the shared file keeps every row tenant's outbox rows.
const OUTBOX_ROWS: &str = "saas_events_outbox_rows";
const PROJECTS_SHARED: &str = "CREATE TABLE projects_rows (tenant_id BLOB NOT NULL, \
                               id INTEGER NOT NULL, name TEXT NOT NULL, PRIMARY KEY (tenant_id, id))";

/// One demo tenant.
pub(crate) struct DemoTenant {
    pub(crate) slug: String,
    pub(crate) ctx: TenantContext,
    pub(crate) placement: &'static str,
    pub(crate) plan: &'static str,
    pub(crate) subscription: SubscriptionId,
    pub(crate) api_calls: u32,
}

/// Everything the quickstart composes.
pub(crate) struct App {
    pub(crate) dir: PathBuf,
    pub(crate) tenancy: SqliteTenancy,
    pub(crate) issuer: TokenIssuer,
    resolver: RequestResolver,
    pub(crate) billing: BillingEngine,
    pub(crate) clock: ManualClock,
    pub(crate) bus: InMemoryBus,
    pub(crate) outbox: SqliteOutbox,
    /// An unscoped pool on the shared file, for the relay.
    shared: SqlitePool,
    pub(crate) tenants: Vec<DemoTenant>,
}

impl App {
    pub(crate) async fn start() -> Result<Self, Box<dyn Error>> {
        let dir = std::env::temp_dir().join(format!("saas-quickstart-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = |name: &str| {
            SqliteConnectOptions::new()
                .filename(dir.join(name))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
        };

        // Storage: a catalog file, a shared file for row tenants, and one
        // file per database tenant.
        let shared = SqlitePoolOptions::new()
            .connect_with(file("shared.sqlite"))
            .await?;
        shared.execute(PROJECTS_SHARED).await?;
        // The outbox is a tenant table too: in the shared file each tenant
        // writes only its own events.
        let outbox = SqliteOutbox::new();
        shared
            .execute(AssertSqlSafe(outbox.create_table_sql_as(OUTBOX_ROWS)?))
            .await?;
        let catalog = SqliteCatalog::new(
            SqlitePoolOptions::new()
                .connect_with(file("catalog.sqlite"))
                .await?,
        );
        catalog.migrate().await?;
        let catalog: DynCatalog = Arc::new(catalog);
        let local = ClusterName::new("local")?;
        let tenancy = SqliteTenancy::builder(Arc::clone(&catalog))
            .cluster(SqliteClusterConfig::new(
                local.clone(),
                dir.join("shared.sqlite"),
                dir.clone(),
            ))
            .tenant_table(TenantTable::new("projects")?)
            .tenant_table(TenantTable::new(outbox.table())?)
            .tenant_migrations(Migrator::with_migrations(vec![
                Migration::new(
                    1,
                    "projects".into(),
                    MigrationType::Simple,
                    PROJECTS.into_sql_str(),
                    false,
                ),
                Migration::new(
                    2,
                    "outbox".into(),
                    MigrationType::Simple,
                    AssertSqlSafe(outbox.create_table_sql()).into_sql_str(),
                    false,
                ),
            ]))
            .build()?;
        tenancy.setup().await?;

        // Identity: HS256 here; RS256, ES256, EdDSA and JWKS work the same.
        let issuer = TokenIssuer::builder(SigningKey::hmac(Some("k1"), Algorithm::HS256, SECRET)?)
            .audience("quickstart")
            .build()?;
        let verifier = JwtVerifier::builder(KeySet::new().with(VerificationKey::hmac(
            Some("k1"),
            Algorithm::HS256,
            SECRET,
        )?)?)
        .audience("quickstart")
        .build()?;
        let resolver = RequestResolver::builder(Arc::new(CatalogLookup::new(Arc::clone(&catalog))))
            .verifier(verifier)
            .resolver(HostResolver::new("quickstart.test")?)
            .resolver(TokenClaimResolver)
            .build()?;

        // Billing: a free plan (3 projects, 1,000 API calls a month) and a
        // pro plan (49.00 a month, 10,000 calls included, then graduated).
        let clock = ManualClock::new(
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .ok_or("date")?,
        );
        let usd = |amount| Money::new(amount, Currency::USD);
        let app_product = ProductId::new("app")?;
        let calls = TierTable::builder()
            .up_to(dec!(10000), dec!(0))
            .unbounded(dec!(0.002))
            .build()?;
        let billing_catalog = Catalog::builder()
            .product(Product::new(app_product.clone(), "Quickstart app"))
            .meter(Meter::new(MeterKey::new("api_calls")?, Aggregation::Count))
            .plan(
                PlanVersion::builder(PlanId::new("free")?, 1, app_product.clone())
                    .recurring("base", "Free plan", [Charge::flat(usd(dec!(0)))?])
                    .limit("projects", dec!(3))
                    .quota("api_calls", "api_calls", dec!(1000))
                    .build()?,
            )
            .plan(
                PlanVersion::builder(PlanId::new("pro")?, 1, app_product)
                    .recurring("base", "Pro plan", [Charge::flat(usd(dec!(49)))?])
                    .metered(
                        "calls",
                        "API calls",
                        "api_calls",
                        [Charge::graduated(Currency::USD, calls)],
                    )
                    .limit("projects", dec!(100))
                    .build()?,
            )
            .build()?;
        let billing = BillingEngine::new(
            Arc::new(billing_catalog),
            BillingStores::in_memory(),
            Arc::new(clock.clone()),
        );

        let bus = InMemoryBus::new();

        let mut app = Self {
            dir,
            tenancy,
            issuer,
            resolver,
            billing,
            clock,
            bus,
            outbox,
            shared,
            tenants: Vec::new(),
        };
        for (slug, strategy, plan, api_calls) in [
            ("acme", Strategy::Shared, "pro", 12_500),
            ("globex", Strategy::Shared, "free", 400),
            ("initech", Strategy::Database, "free", 950),
        ] {
            app.add_tenant(slug, strategy, plan, api_calls, &local)
                .await?;
        }
        Ok(app)
    }

    async fn add_tenant(
        &mut self,
        slug: &str,
        strategy: Strategy,
        plan: &'static str,
        api_calls: u32,
        cluster: &ClusterName,
    ) -> Result<(), Box<dyn Error>> {
        let new = NewTenant::new(
            TenantSlug::parse(slug)?,
            slug.to_uppercase(),
            strategy,
            cluster.clone(),
        )?;
        let record = self.tenancy.provision(new).await?;
        let ctx = TenantContext::new(record.id, record.slug.clone());
        let sub = self
            .billing
            .create_subscription(NewSubscription::new(
                record.id,
                PlanRef::new(PlanId::new(plan)?, 1),
                Currency::USD,
            ))
            .await?;
        self.tenants.push(DemoTenant {
            slug: slug.to_owned(),
            ctx,
            placement: match strategy {
                Strategy::Shared => "shared tables",
                Strategy::Schema => "own schema",
                Strategy::Database => "own database file",
                _ => "another placement",
            },
            plan,
            subscription: sub.id(),
            api_calls,
        });
        Ok(())
    }

    /// Authenticates and resolves a request for `url` carrying `token`.
    pub(crate) async fn resolve(
        &self,
        url: &str,
        token: &str,
    ) -> Result<TenantContext, Box<dyn Error>> {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse()?,
        );
        Ok(self.resolver.resolve(&url.parse()?, &headers).await?)
    }

    /// Every outbox the relay drains: the shared file's (all row tenants)
    /// and each database tenant's own file.
    pub(crate) async fn outbox_locations(&self) -> Result<StaticLocations, Box<dyn Error>> {
        let mut locations =
            vec![OutboxLocation::new("shared", self.shared.clone()).with_table(OUTBOX_ROWS)?];
        for tenant in &self.tenants {
            let record = self
                .tenancy
                .catalog()
                .get(tenant.ctx.tenant_id())
                .await?
                .ok_or("tenant vanished")?;
            if let Some(database) = record.placement.object_name() {
                let file = self.dir.join(format!("{}.sqlite", database.as_str()));
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(SqliteConnectOptions::new().filename(file))
                    .await?;
                locations
                    .push(OutboxLocation::new(tenant.slug.clone(), pool).with_tenant(record.id));
            }
        }
        Ok(StaticLocations(locations))
    }

    pub(crate) async fn stop(self) {
        self.shared.close().await;
        drop(self.tenancy);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
