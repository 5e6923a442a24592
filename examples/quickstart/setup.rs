//! Wiring: storage, identity, billing and events for the quickstart.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use saas_billing::{
    Aggregation, BillingEngine, Catalog, Charge, Currency, Meter, MeterKey, Money, NewSubscription,
    PlanId, PlanRef, PlanVersion, Product, ProductId, SubscriptionId, TierTable, dec,
};
use saas_core::{
    Algorithm, HostResolver, JwtVerifier, KeySet, ManualClock, RequestResolver, SigningKey,
    TenantContext, TenantId, TenantSlug, TokenClaimResolver, TokenIssuer, VerificationKey,
};
use saas_events::InMemoryBus;
use saas_events::sqlite::SqliteOutbox;
use saas_foundation::services::Services;
use saas_foundation::signup::SignUps;
use saas_foundation::stack::SqliteStack;
use saas_tenancy::sqlite::SqliteTenancy;
use saas_tenancy::{CatalogLookup, NewTenant, Strategy, TenantTable};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};

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
    pub(crate) stack: SqliteStack,
    /// The relay and the consumers, stopped together at the end.
    pub(crate) services: Services,
    pub(crate) issuer: TokenIssuer,
    resolver: RequestResolver,
    pub(crate) billing: BillingEngine,
    pub(crate) clock: ManualClock,
    pub(crate) bus: InMemoryBus,
    pub(crate) outbox: SqliteOutbox,
    pub(crate) tenants: Vec<DemoTenant>,
}

/// One migration of `sql`.
fn migration(version: i64, name: &'static str, sql: String) -> Migration {
    let sql = AssertSqlSafe(sql).into_sql_str();
    Migration::new(version, name.into(), MigrationType::Simple, sql, false)
}

impl App {
    pub(crate) async fn start() -> Result<Self, Box<dyn Error>> {
        let dir = std::env::temp_dir().join(format!("saas-quickstart-{}", std::process::id()));
        // Storage: a catalog file, a billing file, a shared file for row
        // tenants and one file per database tenant. The outbox is a tenant
        // table too: in the shared file each tenant writes only its own
        // events (the relay reads them all).
        let outbox = SqliteOutbox::new();
        let mut services = Services::new();
        let shared_tables = format!(
            "{PROJECTS_SHARED}; {};",
            outbox.create_table_sql_as(OUTBOX_ROWS)?
        );
        let tenant_tables = format!("{PROJECTS}; {};", outbox.create_table_sql());
        let (projects, events) = (
            TenantTable::new("projects")?,
            TenantTable::new(outbox.table())?,
        );
        let stack = SqliteStack::open(&dir, &mut services, |tenancy| {
            tenancy
                .tenant_table(projects)
                .tenant_table(events)
                .shared_migrations(Migrator::with_migrations(vec![migration(
                    1,
                    "app tables",
                    shared_tables,
                )]))
                .tenant_migrations(Migrator::with_migrations(vec![migration(
                    1,
                    "app tables",
                    tenant_tables,
                )]))
        })
        .await?;
        let catalog = stack.catalog();

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
        let resolver = RequestResolver::builder(Arc::new(CatalogLookup::new(Arc::clone(catalog))))
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
            stack.billing(),
            Arc::new(clock.clone()),
        );

        let bus = InMemoryBus::new();

        let mut app = Self {
            dir,
            stack,
            services,
            issuer,
            resolver,
            billing,
            clock,
            bus,
            outbox,
            tenants: Vec::new(),
        };
        for (slug, strategy, plan, api_calls) in [
            ("acme", Strategy::Shared, "pro", 12_500),
            ("globex", Strategy::Shared, "free", 400),
            ("initech", Strategy::Database, "free", 950),
        ] {
            app.add_tenant(slug, strategy, plan, api_calls).await?;
        }
        Ok(app)
    }

    /// Signs a tenant up: provisioned and subscribed, or neither.
    async fn add_tenant(
        &mut self,
        slug: &str,
        strategy: Strategy,
        plan: &'static str,
        api_calls: u32,
    ) -> Result<(), Box<dyn Error>> {
        let id = TenantId::new();
        let tenant = NewTenant::new(
            TenantSlug::parse(slug)?,
            slug.to_uppercase(),
            strategy,
            self.stack.cluster().clone(),
        )?
        .with_id(id);
        let plan_ref = PlanRef::new(PlanId::new(plan)?, 1);
        let subscription = NewSubscription::new(id, plan_ref, Currency::USD);
        let sign_ups = SignUps::new(Arc::clone(self.stack.tenancy()), self.billing.clone());
        let done = sign_ups.sign_up(tenant, subscription).await?;
        let ctx = TenantContext::new(id, done.tenant.slug.clone());
        let sub = done.subscription;
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

    /// The tenancy.
    pub(crate) fn tenancy(&self) -> &SqliteTenancy {
        self.stack.tenancy()
    }

    /// Stops the relay and consumers, closes the files and removes them.
    pub(crate) async fn stop(self) {
        self.services.shutdown().await;
        drop(self.stack);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
