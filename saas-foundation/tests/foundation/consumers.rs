//! `tenant_handler`: the handler gets the context of the event's own
//! tenant; events of no tenant or of a deleted one are acknowledged
//! without it.

use std::sync::{Arc, Mutex};

use saas_core::{TenantContext, TenantId};
use saas_events::Event;
use saas_events::router::{Handler, ReceivedEvent};
use saas_foundation::consumers::tenant_handler;
use saas_tenancy::Strategy;
use saas_tenancy::testing::sqlite::SqliteSandbox;

/// What the handler was called with: the context, and the event's tenant.
type Calls = Arc<Mutex<Vec<(TenantContext, Option<TenantId>)>>>;

fn received(tenant: Option<TenantId>) -> ReceivedEvent {
    let event = Event::new(tenant, "note.added", "/tests", &1u32).unwrap();
    ReceivedEvent::new(Arc::new(event), "notes", 1)
}

#[tokio::test]
async fn each_event_reaches_the_handler_with_its_own_tenants_context() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let acme = sandbox.tenant("acme", Strategy::Shared).await.unwrap();
    let globex = sandbox.tenant("globex", Strategy::Database).await.unwrap();
    let gone = sandbox.tenant("gone", Strategy::Database).await.unwrap();
    sandbox
        .tenancy
        .delete_tenant(gone.tenant_id())
        .await
        .unwrap();
    let tenancy = Arc::new(sandbox.tenancy.clone());
    let seen: Calls = Arc::default();
    let log = Arc::clone(&seen);
    let handler = tenant_handler(Arc::clone(&tenancy), move |ctx, event| {
        let log = Arc::clone(&log);
        async move {
            log.lock().unwrap().push((ctx, event.event().tenant_id()));
            Ok(())
        }
    });
    for tenant in [
        Some(acme.tenant_id()),
        Some(globex.tenant_id()),
        None,
        Some(gone.tenant_id()),
        Some(TenantId::new()), // never existed
    ] {
        handler.handle(received(tenant)).await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "only the live tenants' events: {seen:?}");
    for ((ctx, event_tenant), expected) in seen.iter().zip([&acme, &globex]) {
        assert_eq!(ctx.tenant_id(), expected.tenant_id(), "the event's tenant");
        assert_eq!(ctx.slug(), expected.slug());
        assert_eq!(*event_tenant, Some(expected.tenant_id()));
        // …and it opens that tenant's scope.
        tenancy.begin(ctx).await.unwrap();
    }
    sandbox.cleanup().await;
}

#[tokio::test]
async fn a_failing_handler_fails_the_delivery_for_a_retry() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let acme = sandbox.tenant("acme", Strategy::Shared).await.unwrap();
    let handler = tenant_handler(Arc::new(sandbox.tenancy.clone()), |_ctx, _event| async {
        Err(saas_events::EventError::handler(
            "the audit table is locked",
        ))
    });
    assert!(
        handler
            .handle(received(Some(acme.tenant_id())))
            .await
            .is_err()
    );
    sandbox.cleanup().await;
}
