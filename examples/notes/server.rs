//! Configuration, wiring, serving, and a clean shutdown on Ctrl-C.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use saas_billing::BillingEngine;
use saas_billing::store::postgres::PostgresBillingStores;
use saas_core::{
    Algorithm, HeaderResolver, HostResolver, JwtVerifier, KeySet, RequestResolver, SharedClock,
    SigningKey, SystemClock, TokenClaimResolver, TokenIssuer, VerificationKey,
};
use saas_events::InMemoryBus;
use saas_events::postgres::{OutboxRelay, PgOutbox, RelayConfig};
use saas_tenancy::postgres::{PgClusterConfig, PgTenancy, SqlIdent};
use saas_tenancy::{CatalogLookup, ClusterName, DynCatalog, PostgresCatalog, Strategy};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor};

use super::api::{AppState, router};
use super::audit::{CatalogOutboxes, start_audit_writer};
use super::billing::{Billing, price_list};
use super::schema;

/// Where new tenants are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Rows in shared tables, isolated by PostgreSQL row-level security.
    Row,
    /// A PostgreSQL schema (and role) per tenant.
    Schema,
    /// A PostgreSQL database per tenant.
    Database,
}

impl Mode {
    fn strategy(self) -> Strategy {
        match self {
            Mode::Row => Strategy::Shared,
            Mode::Schema => Strategy::Schema,
            Mode::Database => Strategy::Database,
        }
    }

    fn binary(self) -> &'static str {
        match self {
            Mode::Row => "notes-row",
            Mode::Schema => "notes-schema",
            Mode::Database => "notes-database",
        }
    }
}

/// The server's settings.
#[derive(Debug, Clone)]
pub struct NotesConfig {
    /// Where new tenants are placed.
    pub mode: Mode,
    /// The PostgreSQL database holding the catalog, the billing tables and
    /// the shared tenant tables; connected to as an administrator.
    pub database_url: String,
    /// The login-less role scoped queries run as (created if missing).
    pub runtime_role: String,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The HS256 secret tokens are signed with (at least 32 bytes).
    pub jwt_secret: Vec<u8>,
}

impl NotesConfig {
    /// Reads `NOTES_DATABASE_URL` (default
    /// `postgres://postgres@127.0.0.1:5432/postgres`), `NOTES_LISTEN`
    /// (default `127.0.0.1:3000`), `NOTES_RUNTIME_ROLE` (default
    /// `notes_runtime`) and `NOTES_JWT_SECRET` (default: a random secret,
    /// so tokens do not outlive the process).
    ///
    /// # Errors
    /// A listen address that does not parse, or a secret under 32 bytes.
    pub fn from_env(mode: Mode) -> Result<Self, Box<dyn Error>> {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        let jwt_secret = match std::env::var("NOTES_JWT_SECRET") {
            Ok(secret) if secret.len() >= 32 => secret.into_bytes(),
            Ok(_) => return Err("NOTES_JWT_SECRET must be at least 32 bytes".into()),
            Err(_) => format!("{}{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4()).into_bytes(),
        };
        Ok(Self {
            mode,
            database_url: var(
                "NOTES_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
            runtime_role: var("NOTES_RUNTIME_ROLE", "notes_runtime"),
            listen: var("NOTES_LISTEN", "127.0.0.1:3000")
                .parse()
                .map_err(|e| format!("NOTES_LISTEN: {e}"))?,
            jwt_secret,
        })
    }
}

/// Sets everything up, serves until Ctrl-C (or SIGTERM), then stops the
/// relay and the audit writer after the requests in flight.
///
/// # Errors
/// Anything that fails during setup, or the listener failing.
pub async fn run(config: NotesConfig) -> Result<(), Box<dyn Error>> {
    let clock: SharedClock = Arc::new(SystemClock);
    let admin_options: PgConnectOptions = config.database_url.parse()?;
    let admin = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(admin_options.clone())
        .await?;

    // Catalog, billing tables and the shared tenant tables.
    let catalog = PostgresCatalog::new(admin.clone());
    catalog.migrate().await?;
    let catalog: DynCatalog = Arc::new(catalog);
    let billing_stores = PostgresBillingStores::new(admin.clone());
    billing_stores.migrate().await?;
    schema::create_shared_tables(&admin).await?;

    // Tenancy: the same tables for every placement.
    let cluster = ClusterName::new("main")?;
    let runtime = SqlIdent::new(config.runtime_role.clone())?;
    let mut builder = PgTenancy::builder(Arc::clone(&catalog))
        .cluster(PgClusterConfig::new(
            cluster.clone(),
            admin_options.clone(),
            runtime.clone(),
        ))
        .tenant_migrations(schema::tenant_migrations())
        .clock(Arc::clone(&clock));
    for table in schema::tenant_tables()? {
        builder = builder.tenant_table(table);
    }
    let tenancy = Arc::new(builder.build()?);
    tenancy.setup().await?;
    admin
        .execute(AssertSqlSafe(format!(
            "GRANT USAGE, SELECT ON SEQUENCE saas_events_outbox_seq_seq TO {}",
            runtime.quoted()
        )))
        .await?;

    let engine = BillingEngine::new(
        Arc::new(price_list()?),
        billing_stores.billing_stores(),
        Arc::clone(&clock),
    );

    // Events: outbox → relay → bus → audit writer.
    let bus = InMemoryBus::new();
    let audit_writer = start_audit_writer(&bus, Arc::clone(&tenancy), Arc::clone(&catalog)).await?;
    let outboxes = Arc::new(CatalogOutboxes::new(
        Arc::clone(&catalog),
        admin.clone(),
        admin_options,
    ));
    let relay = OutboxRelay::new(
        Arc::clone(&outboxes) as _,
        Arc::new(bus.clone()),
        RelayConfig::default().with_poll_interval(Duration::from_millis(100)),
    )
    .spawn();

    // Identity: HS256 tokens; the tenant from `X-Tenant`, the subdomain of
    // `localhost`, or the token itself.
    let issuer = TokenIssuer::builder(SigningKey::hmac(
        Some("k1"),
        Algorithm::HS256,
        &config.jwt_secret,
    )?)
    .audience("notes-api")
    .build()?;
    let verifier = JwtVerifier::builder(KeySet::new().with(VerificationKey::hmac(
        Some("k1"),
        Algorithm::HS256,
        &config.jwt_secret,
    )?)?)
    .audience("notes-api")
    .build()?;
    let resolver = RequestResolver::builder(Arc::new(CatalogLookup::new(Arc::clone(&catalog))))
        .verifier(verifier)
        .resolver(HeaderResolver::new("x-tenant")?)
        .resolver(HostResolver::new("localhost")?)
        .resolver(TokenClaimResolver)
        .build()?;

    let state = AppState {
        tenancy: Arc::clone(&tenancy),
        billing: Billing::new(engine, clock),
        issuer: Arc::new(issuer),
        outbox: PgOutbox::new(),
        strategy: config.mode.strategy(),
        cluster,
    };
    let app = router(state, resolver);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    print_usage(config.mode, addr);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;

    tracing::info!("shutting down");
    relay.shutdown().await;
    audit_writer.shutdown().await;
    outboxes.close().await;
    admin.close().await;
    println!("{}: stopped", config.mode.binary());
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn print_usage(mode: Mode, addr: SocketAddr) {
    let base = format!("http://{addr}");
    println!("{} listening on {base} (Ctrl-C stops it)", mode.binary());
    println!(
        "\nTry it:\n\
         curl -s -X POST {base}/signup -H 'content-type: application/json' \\\n  \
           -d '{{\"slug\":\"acme\",\"name\":\"Acme\",\"plan\":\"free\"}}'\n\
         TOKEN=...   # the \"token\" of the answer\n\
         curl -s -X POST {base}/projects -H \"authorization: Bearer $TOKEN\" \\\n  \
           -H 'x-tenant: acme' -H 'content-type: application/json' -d '{{\"name\":\"website\"}}'\n\
         curl -s {base}/projects -H \"authorization: Bearer $TOKEN\" -H 'x-tenant: acme'\n\
         curl -s {base}/invoice -H \"authorization: Bearer $TOKEN\" -H 'x-tenant: acme'\n\
         curl -s {base}/audit -H \"authorization: Bearer $TOKEN\" -H 'x-tenant: acme'\n"
    );
}
