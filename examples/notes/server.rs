//! Settings, wiring, serving, and a clean shutdown on Ctrl-C.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use saas_core::{HeaderResolver, HostResolver, SharedClock, SystemClock, TokenClaimResolver};
use saas_events::InMemoryBus;
use saas_foundation::config::{Secret, Settings};
use saas_foundation::host::{App, BoxError, Host};
use saas_foundation::identity::Identity;
use saas_foundation::services::Services;
use saas_foundation::stack::Stack;
use saas_foundation::subscriptions::CurrentSubscriptions;
use saas_tenancy::Strategy;

use super::api::{AppState, router};
use super::audit::start_audit_writer;
use super::billing::price_list;
use super::schema;
use super::store::{Store, StoreBackend};

/// Where new tenants are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Rows in shared tables, isolated by PostgreSQL row-level security.
    Row,
    /// A PostgreSQL schema (and role) per tenant.
    Schema,
    /// A PostgreSQL database per tenant (or a SQLite file per tenant).
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

/// What each `notes-*` binary runs: logs to stderr (`RUST_LOG`, default
/// `warn`), settings from `NOTES_*` variables (saas-foundation's
/// `config::Settings`; without `NOTES_DATABASE_URL`, row and schema modes
/// use the local PostgreSQL, database mode SQLite files in `notes-data`),
/// then serves until Ctrl-C (or SIGTERM) and stops the relay and the audit
/// writer after the requests in flight. On PostgreSQL the app's tables
/// are shared (row tenants) and in every schema or database tenant; on
/// SQLite in every tenant's file.
///
/// # Errors
/// An invalid setting, anything that fails during setup, or the listener.
pub async fn serve(mode: Mode) -> Result<(), Box<dyn Error>> {
    let logs = tracing_subscriber::EnvFilter::try_from_default_env();
    tracing_subscriber::fmt()
        .with_env_filter(logs.unwrap_or_else(|_| "warn".into()))
        .init();
    let mut settings = Settings::from_prefix("NOTES")
        .default_data_dir("notes-data")
        .default_runtime_role("notes_runtime");
    if mode != Mode::Database {
        settings = settings.default_database_url(DEFAULT_POSTGRES.parse()?);
    }
    let settings = settings.from_env()?;
    let secret = settings.jwt_secret.clone();
    let tables = schema::tenant_tables()?;
    Host::new(settings)
        .postgres(|tenancy| {
            let tenancy = tenancy.shared_migrations(schema::shared_migrations());
            let tenancy = tenancy.tenant_migrations(schema::tenant_migrations());
            tables
                .into_iter()
                .fold(tenancy, |b, table| b.tenant_table(table))
        })
        .sqlite(|tenancy| tenancy.tenant_migrations(schema::sqlite_tenant_migrations()))
        .on_listening(move |addr, storage| print_usage(mode, addr, storage))
        .serve(Notes { mode, secret })
        .await?;
    println!("{}: stopped", mode.binary());
    Ok(())
}

const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The notes app, started by the host on either database.
struct Notes {
    mode: Mode,
    secret: Secret,
}

#[async_trait]
impl<T: StoreBackend> App<T> for Notes {
    async fn start(&self, stack: Stack<T>, services: &mut Services) -> Result<Router, BoxError> {
        let clock: SharedClock = Arc::new(SystemClock);
        let engine = stack
            .billing_engine(price_list()?, Arc::clone(&clock))
            .await?;
        let store = Arc::new(Store::new(stack.clone(), engine.clone()));
        // Events: outbox → relay → bus → audit writer (started first).
        let bus = InMemoryBus::new();
        services.start(
            "audit writer",
            start_audit_writer(&bus, Arc::clone(&store)).await?,
        );
        stack.start_relay(Arc::new(bus.clone()), Default::default(), services);
        // The tenant from `X-Tenant`, the subdomain of `localhost` or the token.
        let identity = Identity::hs256(&self.secret, "notes-api")?;
        let resolver = (identity.resolver(Arc::clone(stack.catalog())))
            .resolver(HeaderResolver::new("x-tenant")?)
            .resolver(HostResolver::new("localhost")?)
            .resolver(TokenClaimResolver)
            .build()?;
        let state = AppState {
            store,
            current: Arc::new(CurrentSubscriptions::new(engine)),
            identity,
            strategy: self.mode.strategy(),
            cluster: stack.cluster().clone(),
        };
        Ok(router(state, resolver, clock)?)
    }
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
