//! The `WebhookStore` contract, as plain functions over `&dyn
//! WebhookStore` so a SQL store can run the same checks.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use saas_core::TenantId;
use saas_events::Event;
use saas_events::webhooks::{
    DeadDelivery, DeliveryAttempt, DisableReason, EndpointStatus, FailureState,
    InMemoryWebhookStore, WebhookEndpoint, WebhookError, WebhookSecret, WebhookStore,
};

fn endpoint(tenant: TenantId) -> WebhookEndpoint {
    WebhookEndpoint::new(
        tenant,
        "https://hooks.example.com/in",
        WebhookSecret::generate().unwrap(),
    )
    .unwrap()
}

fn at(minute: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 9, minute, 0).unwrap()
}

fn entry(endpoint: &WebhookEndpoint, delivered: bool, minute: u32) -> DeliveryAttempt {
    DeliveryAttempt {
        endpoint: endpoint.id(),
        event_id: format!("event-{minute}"),
        event_type: "order.placed".to_owned(),
        webhook_id: format!("msg_{minute}"),
        attempt: 1,
        status: Some(if delivered { 200 } else { 500 }),
        error: None,
        delivered,
        duration: Duration::from_millis(3),
        at: at(minute),
        next_attempt_in: None,
    }
}

async fn attempt(
    store: &dyn WebhookStore,
    tenant: TenantId,
    endpoint: &WebhookEndpoint,
    delivered: bool,
    minute: u32,
) -> FailureState {
    store
        .record_attempt(tenant, entry(endpoint, delivered, minute))
        .await
        .unwrap()
}

pub(crate) async fn endpoints_are_kept_per_tenant(store: &dyn WebhookStore) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let (first, second, theirs) = (endpoint(a), endpoint(a), endpoint(b));
    for e in [&first, &second] {
        store.register(a, e.clone()).await.unwrap();
    }
    store.register(b, theirs.clone()).await.unwrap();
    let listed: Vec<_> = store
        .endpoints(a)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id())
        .collect();
    assert_eq!(listed, [first.id(), second.id()], "oldest first, own only");
    assert!(matches!(
        store.register(a, first.clone()).await,
        Err(WebhookError::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.register(a, theirs.clone()).await,
        Err(WebhookError::TenantMismatch)
    ));
    assert!(store.endpoint(a, theirs.id()).await.unwrap().is_none());
    assert!(matches!(
        store.remove(a, theirs.id()).await,
        Err(WebhookError::NotFound { .. })
    ));
    assert!(matches!(
        store.enable(a, theirs.id()).await,
        Err(WebhookError::NotFound { .. })
    ));
    store.remove(a, first.id()).await.unwrap();
    assert_eq!(store.endpoints(a).await.unwrap().len(), 1);
    assert_eq!(store.endpoints(b).await.unwrap().len(), 1);
}

pub(crate) async fn update_keeps_status_and_disable_keeps_the_first_reason(
    store: &dyn WebhookStore,
) {
    let tenant = TenantId::new();
    let mut e = endpoint(tenant);
    store.register(tenant, e.clone()).await.unwrap();
    store
        .disable(tenant, e.id(), DisableReason::Gone, at(1))
        .await
        .unwrap();
    store
        .disable(tenant, e.id(), DisableReason::Manual, at(2))
        .await
        .unwrap();
    e.rotate_secret(WebhookSecret::generate().unwrap());
    let e = e.with_filters(["order.*"]).unwrap();
    store.update(tenant, e.clone()).await.unwrap();
    let stored = store.endpoint(tenant, e.id()).await.unwrap().unwrap();
    assert_eq!(stored.secrets().count(), 2);
    assert!(stored.wants("order.placed") && !stored.wants("user.created"));
    assert_eq!(
        *stored.status(),
        EndpointStatus::Disabled {
            reason: DisableReason::Gone,
            at: at(1)
        }
    );
    store.enable(tenant, e.id()).await.unwrap();
    assert!(
        store
            .endpoint(tenant, e.id())
            .await
            .unwrap()
            .unwrap()
            .is_enabled()
    );
}

pub(crate) async fn attempts_count_failures_until_a_success_or_enable(store: &dyn WebhookStore) {
    let tenant = TenantId::new();
    let e = endpoint(tenant);
    store.register(tenant, e.clone()).await.unwrap();
    assert_eq!(
        attempt(store, tenant, &e, false, 1).await,
        FailureState {
            consecutive: 1,
            failing_since: Some(at(1))
        }
    );
    assert_eq!(
        attempt(store, tenant, &e, false, 5).await,
        FailureState {
            consecutive: 2,
            failing_since: Some(at(1))
        }
    );
    assert_eq!(
        attempt(store, tenant, &e, true, 6).await,
        FailureState::default()
    );
    attempt(store, tenant, &e, false, 7).await;
    store.enable(tenant, e.id()).await.unwrap();
    assert_eq!(attempt(store, tenant, &e, false, 8).await.consecutive, 1);
    let log = store.delivery_log(tenant, Some(e.id())).await.unwrap();
    assert_eq!(
        log.iter().map(|a| a.at).collect::<Vec<_>>(),
        [1, 5, 6, 7, 8].map(at)
    );
    assert!(
        store
            .delivery_log(TenantId::new(), None)
            .await
            .unwrap()
            .is_empty()
    );
}

pub(crate) async fn dead_letters_are_kept_per_tenant_and_taken_once(store: &dyn WebhookStore) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let e = endpoint(a);
    store.register(a, e.clone()).await.unwrap();
    let dead = DeadDelivery {
        webhook_id: "msg_dead".to_owned(),
        endpoint: e.id(),
        event: Arc::new(Event::new(a, "order.placed", "/shop", &1).unwrap()),
        attempts: 8,
        reason: "no success after 8 attempts".to_owned(),
        at: at(9),
    };
    store.park(a, dead.clone()).await.unwrap();
    // Parking the same delivery again replaces it.
    store.park(a, dead.clone()).await.unwrap();
    assert_eq!(
        store.dead_letters(a).await.unwrap(),
        std::slice::from_ref(&dead)
    );
    assert!(store.dead_letters(b).await.unwrap().is_empty());
    assert!(
        store
            .take_dead_letter(b, &dead.webhook_id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.take_dead_letter(a, &dead.webhook_id).await.unwrap(),
        Some(dead.clone())
    );
    assert!(
        store
            .take_dead_letter(a, &dead.webhook_id)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn in_memory_store_keeps_endpoints_per_tenant() {
    endpoints_are_kept_per_tenant(&InMemoryWebhookStore::new()).await;
}

#[tokio::test]
async fn in_memory_store_update_keeps_status_and_first_disable_reason() {
    update_keeps_status_and_disable_keeps_the_first_reason(&InMemoryWebhookStore::new()).await;
}

#[tokio::test]
async fn in_memory_store_counts_failures_until_success_or_enable() {
    attempts_count_failures_until_a_success_or_enable(&InMemoryWebhookStore::new()).await;
}

#[tokio::test]
async fn in_memory_store_keeps_dead_letters_per_tenant() {
    dead_letters_are_kept_per_tenant_and_taken_once(&InMemoryWebhookStore::new()).await;
}

#[tokio::test]
async fn in_memory_store_keeps_the_newest_log_entries() {
    let store = InMemoryWebhookStore::new().with_max_log_entries(2);
    let tenant = TenantId::new();
    let e = endpoint(tenant);
    store.register(tenant, e.clone()).await.unwrap();
    for minute in 1..=3 {
        attempt(&store, tenant, &e, true, minute).await;
    }
    let log = store.delivery_log(tenant, None).await.unwrap();
    assert_eq!(log.iter().map(|a| a.at).collect::<Vec<_>>(), [at(2), at(3)]);
}

/// The in-flight bound may come from a tenant's form: any value is brought
/// into 1..=MAX_IN_FLIGHT, so the dispatcher's semaphore cannot be asked
/// for more permits than it can hold.
#[test]
fn the_in_flight_bound_is_brought_into_range() {
    let tenant = TenantId::new();
    let bound = |max| endpoint(tenant).with_max_in_flight(max).max_in_flight();
    assert_eq!(bound(0), 1);
    assert_eq!(bound(8), 8);
    assert_eq!(bound(usize::MAX), saas_events::webhooks::MAX_IN_FLIGHT);
}
