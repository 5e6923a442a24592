//! The audit log: events leave through the transactional outbox (written
//! in the same tenant transaction as the change), a relay forwards them to
//! an in-process bus, and a subscriber records each in its tenant's
//! `audit_log` — through that tenant's scoped transaction.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use saas_core::TenantContext;
use saas_events::postgres::{OutboxLocation, OutboxLocations};
use saas_events::router::{ReceivedEvent, Router, RunningRouter, handler_fn};
use saas_events::{EventError, InMemoryBus, SubscribeOptions, Subscriber};
use saas_tenancy::postgres::PgTenancy;
use saas_tenancy::{DynCatalog, ListOptions, Placement};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::Mutex;

/// The topic every change is published to.
pub(crate) const TOPIC: &str = "notes.changes";

/// Where the outbox tables are, read from the tenant catalog on every
/// relay pass so tenants signed up later are found: the shared schema
/// once (all row tenants), each schema tenant's schema, each database
/// tenant's database (through a small pool kept per database).
pub(crate) struct CatalogOutboxes {
    catalog: DynCatalog,
    admin: PgPool,
    admin_options: PgConnectOptions,
    databases: Mutex<HashMap<String, PgPool>>,
}

impl std::fmt::Debug for CatalogOutboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogOutboxes").finish_non_exhaustive()
    }
}

impl CatalogOutboxes {
    pub(crate) fn new(catalog: DynCatalog, admin: PgPool, admin_options: PgConnectOptions) -> Self {
        Self {
            catalog,
            admin,
            admin_options,
            databases: Mutex::default(),
        }
    }

    async fn database_pool(&self, database: &str) -> PgPool {
        let mut pools = self.databases.lock().await;
        pools
            .entry(database.to_owned())
            .or_insert_with(|| {
                PgPoolOptions::new()
                    .max_connections(1)
                    .connect_lazy_with(self.admin_options.clone().database(database))
            })
            .clone()
    }

    /// Closes the per-database pools.
    pub(crate) async fn close(&self) {
        for pool in self.databases.lock().await.values() {
            pool.close().await;
        }
    }
}

#[async_trait]
impl OutboxLocations for CatalogOutboxes {
    async fn locations(&self) -> Result<Vec<OutboxLocation>, EventError> {
        let backend = |e: saas_tenancy::TenancyError| EventError::handler(e);
        let mut found = vec![OutboxLocation::new(
            "shared",
            self.admin.clone(),
            Some("public".to_owned()),
        )?];
        let mut options = ListOptions::default();
        loop {
            let page = self.catalog.list(&options).await.map_err(backend)?;
            for tenant in &page.tenants {
                if !tenant.status.is_servable() {
                    continue;
                }
                match &tenant.placement {
                    Placement::Shared { .. } => {}
                    Placement::Schema { schema, .. } => found.push(OutboxLocation::new(
                        tenant.slug.as_str(),
                        self.admin.clone(),
                        Some(schema.as_str().to_owned()),
                    )?),
                    Placement::Database { database, .. } => found.push(OutboxLocation::new(
                        tenant.slug.as_str(),
                        self.database_pool(database.as_str()).await,
                        None,
                    )?),
                }
            }
            match page.next {
                Some(next) => options.after = Some(next),
                None => break,
            }
        }
        Ok(found)
    }
}

/// Subscribes the audit-log writer to the bus.
pub(crate) async fn start_audit_writer(
    bus: &InMemoryBus,
    tenancy: Arc<PgTenancy>,
    catalog: DynCatalog,
) -> Result<RunningRouter, EventError> {
    let subscription = bus
        .subscribe(TOPIC, SubscribeOptions::new().with_group("audit-log"))
        .await?;
    let writer = handler_fn(move |event: ReceivedEvent| {
        let tenancy = Arc::clone(&tenancy);
        let catalog = Arc::clone(&catalog);
        async move { record(&tenancy, &catalog, event).await }
    });
    Ok(Router::new()
        .fallback(writer)
        .run_subscription(subscription))
}

async fn record(
    tenancy: &PgTenancy,
    catalog: &DynCatalog,
    received: ReceivedEvent,
) -> Result<(), EventError> {
    let event = received.event();
    // Events without a tenant are not ours to log; the outbox's RLS would
    // not have let a tenant transaction write one anyway.
    let Some(tenant) = event.tenant_id() else {
        return Ok(());
    };
    let Some(record) = catalog.get(tenant).await.map_err(EventError::handler)? else {
        return Ok(()); // deleted since: nothing to log into
    };
    let ctx = TenantContext::new(record.id, record.slug);
    let mut tx = tenancy.begin(&ctx).await.map_err(EventError::handler)?;
    // At-least-once delivery: the key makes a redelivery a no-op.
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, event_id, event_type, subject, occurred_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(event.id())
    .bind(event.event_type())
    .bind(event.subject())
    .bind(event.time())
    .execute(&mut *tx)
    .await
    .map_err(EventError::handler)?;
    tx.commit().await.map_err(EventError::handler)
}
