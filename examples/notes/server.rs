//! Configuration, wiring, serving, and a clean shutdown on Ctrl-C.

use std::error::Error;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use saas_billing::{BillingEngine, BillingStores};
use saas_core::{
    Algorithm, HeaderResolver, HostResolver, JwtVerifier, KeySet, RequestResolver, SharedClock,
    SigningKey, SystemClock, TokenClaimResolver, TokenIssuer, VerificationKey,
};
use saas_events::InMemoryBus;
use saas_events::postgres as pg_events;
use saas_events::sqlite as lite_events;
use saas_foundation::services::{Services, shutdown_signal};
use saas_foundation::stack::{PgStack, SqliteStack};
use saas_tenancy::{CatalogLookup, ClusterName, DynCatalog, Strategy};

use super::api::{AppState, router};
use super::audit::start_audit_writer;
use super::billing::{Billing, price_list};
use super::schema;
use super::store::{NotesStore, PgStore, SqliteStore};

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

/// The server's settings. Its `Debug` output hides the database password
/// (and the URL's query, which may carry one) and the JWT secret.
#[derive(Clone)]
pub struct NotesConfig {
    /// Where new tenants are placed.
    pub mode: Mode,
    /// The PostgreSQL database holding the catalog, the billing tables and
    /// the shared tenant tables; connected to as an administrator. `None`
    /// (database mode only): SQLite files in `data_dir` instead.
    pub database_url: Option<String>,
    /// Where the SQLite files live when there is no server.
    pub data_dir: PathBuf,
    /// The login-less role scoped queries run as (created if missing).
    pub runtime_role: String,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The HS256 secret tokens are signed with (at least 32 bytes).
    pub jwt_secret: Vec<u8>,
}

impl NotesConfig {
    /// Reads `NOTES_DATABASE_URL` (default
    /// `postgres://postgres@127.0.0.1:5432/postgres`; in database mode,
    /// unset means SQLite files in `NOTES_DATA_DIR`, default
    /// `notes-data`), `NOTES_LISTEN`
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
            database_url: match (std::env::var("NOTES_DATABASE_URL"), mode) {
                (Ok(url), _) => Some(url),
                (Err(_), Mode::Database) => None,
                (Err(_), _) => Some(DEFAULT_POSTGRES.to_owned()),
            },
            data_dir: var("NOTES_DATA_DIR", "notes-data").into(),
            runtime_role: var("NOTES_RUNTIME_ROLE", "notes_runtime"),
            listen: var("NOTES_LISTEN", "127.0.0.1:3000")
                .parse()
                .map_err(|e| format!("NOTES_LISTEN: {e}"))?,
            jwt_secret,
        })
    }
}

impl fmt::Debug for NotesConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotesConfig")
            .field("mode", &self.mode)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("data_dir", &self.data_dir)
            .field("runtime_role", &self.runtime_role)
            .field("listen", &self.listen)
            .field("jwt_secret", &"<redacted>")
            .finish()
    }
}

/// `url` with the password of its user info and its whole query hidden.
/// The user info ends at the last `@`, so a password with an unescaped
/// `/`, `?` or `@` is hidden too (a path with an `@` is over-hidden).
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<redacted: not a URL>".to_owned();
    };
    let (user, location) = match rest.rsplit_once('@') {
        Some((userinfo, location)) => match userinfo.split_once(':') {
            Some((user, _password)) => (format!("{user}:<redacted>@"), location),
            None => (format!("{userinfo}@"), location),
        },
        None => (String::new(), rest),
    };
    let location = match location.split_once('?') {
        Some((path, _query)) => format!("{path}?<redacted>"),
        None => location.to_owned(),
    };
    format!("{scheme}://{user}{location}")
}

/// What each `notes-*` binary runs: logs to stderr (`RUST_LOG`, default
/// `warn`), settings from the environment ([`NotesConfig::from_env`]),
/// then [`run`].
///
/// # Errors
/// As [`NotesConfig::from_env`] and [`run`].
pub async fn serve(mode: Mode) -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    run(NotesConfig::from_env(mode)?).await
}

const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// What differs between the PostgreSQL and the SQLite wiring.
struct Backend {
    catalog: DynCatalog,
    store: Arc<dyn NotesStore>,
    engine: BillingEngine,
    cluster: ClusterName,
    description: String,
}

/// Sets everything up, serves until Ctrl-C (or SIGTERM), then stops the
/// relay and the audit writer after the requests in flight.
///
/// # Errors
/// Anything that fails during setup, or the listener failing.
pub async fn run(config: NotesConfig) -> Result<(), Box<dyn Error>> {
    let clock: SharedClock = Arc::new(SystemClock);
    let bus = InMemoryBus::new();
    // Background work, stopped in reverse: relay, then audit writer, then pools.
    let mut services = Services::new();
    let backend = match &config.database_url {
        Some(url) => postgres_backend(&config, url, &clock, &bus, &mut services).await?,
        None => sqlite_backend(&config, &clock, &bus, &mut services).await?,
    };
    let engine = backend.engine;
    // The engine's entitlement checker is in memory: on a database that
    // already holds subscriptions (a restart), load them before serving.
    engine.restore_entitlements().await?;

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
    let resolver =
        RequestResolver::builder(Arc::new(CatalogLookup::new(Arc::clone(&backend.catalog))))
            .verifier(verifier)
            .resolver(HeaderResolver::new("x-tenant")?)
            .resolver(HostResolver::new("localhost")?)
            .resolver(TokenClaimResolver)
            .build()?;

    let state = AppState {
        store: backend.store,
        billing: Billing::new(engine, clock),
        issuer: Arc::new(issuer),
        strategy: config.mode.strategy(),
        cluster: backend.cluster,
    };
    let app = router(state, resolver);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    print_usage(config.mode, addr, &backend.description);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;

    tracing::info!("shutting down");
    services.shutdown().await;
    println!("{}: stopped", config.mode.binary());
    Ok(())
}

/// Catalog, billing, shared tables and tenants on one PostgreSQL server:
/// the same tables for every placement — the shared migration creates them
/// for row tenants, the tenant migration in every schema or database tenant.
async fn postgres_backend(
    config: &NotesConfig,
    url: &str,
    clock: &SharedClock,
    bus: &InMemoryBus,
    services: &mut Services,
) -> Result<Backend, Box<dyn Error>> {
    let tables = schema::tenant_tables()?;
    let stack = PgStack::open(url.parse()?, &config.runtime_role, services, |builder| {
        let builder = builder
            .shared_migrations(schema::shared_migrations())
            .tenant_migrations(schema::tenant_migrations())
            .clock(Arc::clone(clock));
        tables
            .into_iter()
            .fold(builder, |b, table| b.tenant_table(table))
    })
    .await?;
    let engine = engine(stack.billing(), clock)?;
    let store: Arc<dyn NotesStore> =
        Arc::new(PgStore::new(Arc::clone(stack.tenancy()), engine.clone()));
    // Events: outbox → relay → bus → audit writer (started first).
    let writer = start_audit_writer(bus, Arc::clone(&store), Arc::clone(stack.catalog())).await?;
    services.start("audit writer", writer);
    let relay = pg_events::RelayConfig::default().with_poll_interval(Duration::from_millis(100));
    stack.start_relay(Arc::new(bus.clone()), relay, services);
    Ok(Backend {
        catalog: Arc::clone(stack.catalog()),
        store,
        engine,
        cluster: stack.cluster().clone(),
        description: "PostgreSQL".to_owned(),
    })
}

/// No server: the catalog, billing and one file per tenant in a directory.
async fn sqlite_backend(
    config: &NotesConfig,
    clock: &SharedClock,
    bus: &InMemoryBus,
    services: &mut Services,
) -> Result<Backend, Box<dyn Error>> {
    let stack = SqliteStack::open(&config.data_dir, services, |builder| {
        builder
            .tenant_migrations(schema::sqlite_tenant_migrations())
            .clock(Arc::clone(clock))
    })
    .await?;
    let engine = engine(stack.billing(), clock)?;
    let store: Arc<dyn NotesStore> = Arc::new(SqliteStore::new(
        Arc::clone(stack.tenancy()),
        engine.clone(),
    ));
    // Events: each tenant file's outbox → relay → bus → audit writer.
    let writer = start_audit_writer(bus, Arc::clone(&store), Arc::clone(stack.catalog())).await?;
    services.start("audit writer", writer);
    let relay = lite_events::RelayConfig::default()
        .with_poll_interval(Duration::from_millis(100))
        .with_clock(Arc::clone(clock));
    stack.start_relay(Arc::new(bus.clone()), relay, services);
    Ok(Backend {
        catalog: Arc::clone(stack.catalog()),
        store,
        engine,
        cluster: stack.cluster().clone(),
        description: format!("SQLite files in {}", config.data_dir.display()),
    })
}

/// The billing engine over `stores`, with the app's price list.
fn engine(stores: BillingStores, clock: &SharedClock) -> Result<BillingEngine, Box<dyn Error>> {
    Ok(BillingEngine::new(
        Arc::new(price_list()?),
        stores,
        Arc::clone(clock),
    ))
}

fn print_usage(mode: Mode, addr: SocketAddr, storage: &str) {
    let base = format!("http://{addr}");
    println!("{} listening on {base} (Ctrl-C stops it)", mode.binary());
    println!("storage: {storage}");
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
