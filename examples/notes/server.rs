//! Settings and wiring; saas-foundation's `Host` does the rest (the
//! stack, serving, a clean stop on Ctrl-C or SIGTERM).

use std::error::Error;
use std::sync::Arc;

use async_trait::async_trait;
use saas_billing::MeterKey;
use saas_foundation::prelude::*;

use super::api::{self, AppState};
use super::store::{Store, StoreBackend, TOPIC};
use super::{billing, schema};

/// What each `notes-*` binary runs, new tenants placed by `strategy`:
/// settings from `NOTES_*` variables (without `NOTES_DATABASE_URL`, row
/// and schema tenants use the local PostgreSQL, database tenants SQLite
/// files in `notes-data`), logs to stderr (`RUST_LOG`, default `warn`),
/// metrics at `/metrics` (Prometheus), traces to stdout (or to
/// `NOTES_OTLP_ENDPOINT`), served until Ctrl-C or SIGTERM.
///
/// # Errors
/// An invalid setting, anything that fails during setup, or the listener.
pub async fn serve(binary: &str, strategy: Strategy) -> Result<(), Box<dyn Error>> {
    let mut settings = Settings::from_prefix("NOTES");
    if strategy != Strategy::Database {
        let local = "postgres://postgres@127.0.0.1:5432/postgres";
        settings = settings.default_database_url(local.parse()?);
    }
    let settings = settings.from_env()?;
    let secret = settings.jwt_secret.clone();
    Ok(Host::new(settings)
        .named(binary)
        .log_to_stderr("warn")
        .metrics_at("/metrics")
        .export_traces(binary)
        .postgres(schema::postgres)
        .sqlite(schema::sqlite)
        .serve(Notes { strategy, secret })
        .await?)
}

/// The notes app, started by the host on either database.
struct Notes {
    strategy: Strategy,
    secret: Secret,
}

#[async_trait]
impl<T: StoreBackend> App<T> for Notes {
    async fn start(
        &self,
        stack: Stack<T>,
        services: &mut Services,
    ) -> Result<axum::Router, BoxError> {
        let clock: SharedClock = Arc::new(SystemClock);
        let engine = (stack.billing_engine(billing::price_list()?, Arc::clone(&clock))).await?;
        let store = Arc::new(Store::new(stack.clone(), engine));
        // Events: outbox → relay → in-process bus → audit writer.
        let audit = Arc::clone(&store);
        let writer = tenant_handler(Arc::clone(stack.tenancy()), move |ctx, received| {
            let store = Arc::clone(&audit);
            async move { store.record_audit(&ctx, received.event()).await }
        });
        let consumers = stack.in_process().handler(TOPIC, "audit-log", writer);
        consumers.start(services).await?;
        // The tenant from `X-Tenant`, the subdomain of `localhost` or the token.
        let identity = Identity::hs256(&self.secret, "notes-api")?;
        let resolver = (identity.resolver(Arc::clone(stack.catalog())))
            .resolver(HeaderResolver::new("x-tenant")?)
            .resolver(HostResolver::new("localhost")?)
            .resolver(TokenClaimResolver)
            .build()?;
        // Tenant routes: resolved, then counted against (and refused over)
        // the plan's `api_calls` quota.
        let api_calls = MeterKey::new(billing::API_CALLS)?;
        let meter = MeterLayer::new(Arc::clone(&store.current), api_calls, clock).enforcing();
        let tenant_routes = api::tenant_routes().route_layer(meter);
        let tenant_routes = tenant_routes.layer(TenantLayer::new(resolver));
        let state = AppState {
            store,
            identity,
            strategy: self.strategy,
        };
        Ok(api::public_routes()
            .merge(tenant_routes)
            .with_state(Arc::new(state)))
    }
}
