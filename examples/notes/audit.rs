//! The audit log: events leave through the transactional outbox (written
//! in the same tenant transaction as the change), a relay forwards them to
//! an in-process bus, and a subscriber records each in its tenant's
//! `audit_log` — through that tenant's scoped transaction.

use std::sync::Arc;

use saas_core::TenantContext;
use saas_events::router::{ReceivedEvent, Router, RunningRouter, handler_fn};
use saas_events::{EventError, InMemoryBus, SubscribeOptions, Subscriber};
use saas_tenancy::DynCatalog;

use super::store::NotesStore;

/// The topic every change is published to.
pub(crate) const TOPIC: &str = "notes.changes";

/// Subscribes the audit-log writer to the bus.
pub(crate) async fn start_audit_writer(
    bus: &InMemoryBus,
    store: Arc<dyn NotesStore>,
    catalog: DynCatalog,
) -> Result<RunningRouter, EventError> {
    let subscription = bus
        .subscribe(TOPIC, SubscribeOptions::new().with_group("audit-log"))
        .await?;
    let writer = handler_fn(move |event: ReceivedEvent| {
        let store = Arc::clone(&store);
        let catalog = Arc::clone(&catalog);
        async move { record(&*store, &catalog, event).await }
    });
    Ok(Router::new()
        .fallback(writer)
        .run_subscription(subscription))
}

async fn record(
    store: &dyn NotesStore,
    catalog: &DynCatalog,
    received: ReceivedEvent,
) -> Result<(), EventError> {
    let event = received.event();
    // Events without a tenant are not ours to log; the outbox would not
    // have let a tenant transaction write one anyway.
    let Some(tenant) = event.tenant_id() else {
        return Ok(());
    };
    let Some(record) = catalog.get(tenant).await.map_err(EventError::handler)? else {
        return Ok(()); // deleted since: nothing to log into
    };
    let ctx = TenantContext::new(record.id, record.slug);
    store.record_audit(&ctx, event).await
}
