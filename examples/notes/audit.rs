//! The audit log: events leave through the transactional outbox (written
//! in the same tenant transaction as the change), a relay forwards them to
//! an in-process bus, and a subscriber records each in its tenant's
//! `audit_log` — through that tenant's scoped transaction.

use std::sync::Arc;

use saas_events::router::{Router, RunningRouter};
use saas_events::{EventError, InMemoryBus, SubscribeOptions, Subscriber};
use saas_foundation::consumers::tenant_handler;

use super::store::{NotesStore, Store, StoreBackend};

/// The topic every change is published to.
pub(crate) const TOPIC: &str = "notes.changes";

/// Subscribes the audit-log writer to the bus.
pub(crate) async fn start_audit_writer<T: StoreBackend>(
    bus: &InMemoryBus,
    store: Arc<Store<T>>,
) -> Result<RunningRouter, EventError> {
    let options = SubscribeOptions::new().with_group("audit-log");
    let subscription = bus.subscribe(TOPIC, options).await?;
    let tenancy = Arc::clone(store.tenancy());
    let writer = tenant_handler(tenancy, move |ctx, received| {
        let store = Arc::clone(&store);
        async move { store.record_audit(&ctx, received.event()).await }
    });
    Ok(Router::new()
        .fallback(writer)
        .run_subscription(subscription))
}
