//! Sign-up as one operation (provision + subscribe, compensated, retried
//! by tenant id), the current-subscription lookup, and the services
//! handle's stopping order.

use std::sync::{Arc, Mutex};

use saas_billing::testing::fixtures;
use saas_billing::{
    BillingEngine, BillingStores, CancelMode, Currency, NewSubscription, PlanId, PlanRef,
};
use saas_core::{ErrorKind, SystemClock, TenantId, TenantSlug, TenantStatus};
use saas_foundation::services::{Background, Services};
use saas_foundation::signup::{SignUpError, SignUps};
use saas_foundation::subscriptions::CurrentSubscriptions;
use saas_tenancy::sqlite::SqliteTenancy;
use saas_tenancy::testing::sqlite::SqliteSandbox;
use saas_tenancy::{NewTenant, Strategy};

fn engine() -> BillingEngine {
    BillingEngine::new(
        Arc::new(fixtures::catalog()),
        BillingStores::in_memory(),
        Arc::new(SystemClock),
    )
}

fn basic() -> PlanRef {
    PlanRef::new(PlanId::new("basic").unwrap(), 1)
}

fn new_tenant(sandbox: &SqliteSandbox, slug: &str, id: TenantId) -> NewTenant {
    NewTenant::new(
        TenantSlug::parse(slug).unwrap(),
        slug,
        Strategy::Database,
        sandbox.cluster.clone(),
    )
    .unwrap()
    .with_id(id)
}

fn subscribe(id: TenantId, plan: PlanRef) -> NewSubscription {
    NewSubscription::new(id, plan, Currency::USD)
}

async fn status(tenancy: &SqliteTenancy, id: TenantId) -> Option<TenantStatus> {
    tenancy.catalog().get(id).await.unwrap().map(|r| r.status)
}

#[tokio::test]
async fn a_sign_up_provisions_and_subscribes_and_a_retry_finds_it_done() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let engine = engine();
    let sign_ups = SignUps::new(Arc::new(sandbox.tenancy.clone()), engine.clone());
    let id = TenantId::new();
    let first = sign_ups
        .sign_up(new_tenant(&sandbox, "acme", id), subscribe(id, basic()))
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.tenant.id, id, "the id asked for");
    assert_eq!(first.tenant.status, TenantStatus::Active);
    assert_eq!(first.subscription.tenant_id(), id);

    let again = sign_ups
        .sign_up(new_tenant(&sandbox, "acme", id), subscribe(id, basic()))
        .await
        .unwrap();
    assert!(!again.created, "a retry does no work twice");
    assert_eq!(again.subscription.id(), first.subscription.id());
    let all = engine.stores().subscriptions.list(id).await.unwrap();
    assert_eq!(all.len(), 1, "one subscription, however many retries");
    sandbox.cleanup().await;
}

#[tokio::test]
async fn a_failed_subscription_deletes_the_tenant_it_provisioned() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let sign_ups = SignUps::new(Arc::new(sandbox.tenancy.clone()), engine());
    let id = TenantId::new();
    let unknown = PlanRef::new(PlanId::new("gold").unwrap(), 1);
    let error = sign_ups
        .sign_up(new_tenant(&sandbox, "acme", id), subscribe(id, unknown))
        .await
        .unwrap_err();
    assert!(matches!(error, SignUpError::Billing(_)), "{error}");
    assert_eq!(
        status(&sandbox.tenancy, id).await,
        Some(TenantStatus::Deleted)
    );
    sandbox.cleanup().await;
}

#[tokio::test]
async fn an_interrupted_sign_up_is_finished_by_its_retry() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let sign_ups = SignUps::new(Arc::new(sandbox.tenancy.clone()), engine());
    let id = TenantId::new();
    // A crash right after the catalog took the tenant: still provisioning.
    sandbox
        .tenancy
        .catalog()
        .create(new_tenant(&sandbox, "acme", id))
        .await
        .unwrap();
    assert_eq!(
        status(&sandbox.tenancy, id).await,
        Some(TenantStatus::Provisioning)
    );
    let done = sign_ups
        .sign_up(new_tenant(&sandbox, "acme", id), subscribe(id, basic()))
        .await
        .unwrap();
    assert_eq!(done.tenant.status, TenantStatus::Active);
    // Its storage exists: a scoped transaction opens.
    let ctx = saas_core::TenantContext::new(id, done.tenant.slug.clone());
    sandbox.tenancy.begin(&ctx).await.unwrap();
    sandbox.cleanup().await;
}

#[tokio::test]
async fn a_tenant_active_before_the_sign_up_is_never_deleted_by_it() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let sign_ups = SignUps::new(Arc::new(sandbox.tenancy.clone()), engine());
    let id = TenantId::new();
    sandbox
        .tenancy
        .provision(new_tenant(&sandbox, "acme", id))
        .await
        .unwrap();
    let unknown = PlanRef::new(PlanId::new("gold").unwrap(), 1);
    let error = sign_ups
        .sign_up(new_tenant(&sandbox, "acme", id), subscribe(id, unknown))
        .await
        .unwrap_err();
    assert!(matches!(error, SignUpError::Billing(_)), "{error}");
    assert_eq!(
        status(&sandbox.tenancy, id).await,
        Some(TenantStatus::Active)
    );
    sandbox.cleanup().await;
}

#[tokio::test]
async fn another_tenants_id_or_subscription_is_refused_before_anything_is_done() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let engine = engine();
    let sign_ups = SignUps::new(Arc::new(sandbox.tenancy.clone()), engine.clone());
    let acme = TenantId::new();
    sign_ups
        .sign_up(new_tenant(&sandbox, "acme", acme), subscribe(acme, basic()))
        .await
        .unwrap();
    // Acme's id under another slug: not a retry of acme's sign-up.
    let error = sign_ups
        .sign_up(
            new_tenant(&sandbox, "globex", acme),
            subscribe(acme, basic()),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, SignUpError::IdTaken { .. }), "{error}");
    assert_eq!(error.kind(), ErrorKind::Conflict);
    // A subscription for acme in globex's sign-up.
    let globex = TenantId::new();
    let error = sign_ups
        .sign_up(
            new_tenant(&sandbox, "globex", globex),
            subscribe(acme, basic()),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, SignUpError::Invalid(_)), "{error}");
    assert_eq!(
        status(&sandbox.tenancy, globex).await,
        None,
        "nothing provisioned"
    );
    assert_eq!(
        engine
            .stores()
            .subscriptions
            .list(acme)
            .await
            .unwrap()
            .len(),
        1
    );
    sandbox.cleanup().await;
}

#[tokio::test]
async fn the_current_subscription_follows_a_cancellation_and_a_new_one() {
    let engine = engine();
    let current = CurrentSubscriptions::new(engine.clone());
    let tenant = TenantId::new();
    let none = current.id(tenant).await.unwrap_err();
    assert_eq!(none.kind(), ErrorKind::NotFound);
    let first = engine
        .create_subscription(subscribe(tenant, basic()))
        .await
        .unwrap();
    assert_eq!(current.id(tenant).await.unwrap(), first.id());
    // Another tenant's subscription is not this one's.
    assert!(current.id(TenantId::new()).await.is_err());
    engine
        .cancel(
            tenant,
            first.id(),
            CancelMode::Immediately { prorate: false },
        )
        .await
        .unwrap();
    let second = engine
        .create_subscription(subscribe(tenant, basic()))
        .await
        .unwrap();
    // The remembered id is ended: `current` finds its successor at once.
    assert_eq!(current.current(tenant).await.unwrap().id(), second.id());
    assert_eq!(current.id(tenant).await.unwrap(), second.id());
}

/// Records when it is stopped.
struct Recorder(&'static str, Arc<Mutex<Vec<&'static str>>>);

#[async_trait::async_trait]
impl Background for Recorder {
    async fn stop(self: Box<Self>) {
        self.1.lock().unwrap().push(self.0);
    }
}

#[tokio::test]
async fn services_stop_last_started_first() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut services = Services::new();
    let closed = Arc::clone(&order);
    services.on_stop("pools", move || async move {
        closed.lock().unwrap().push("pools")
    });
    services.start("consumer", Recorder("consumer", Arc::clone(&order)));
    services.start("relay", Recorder("relay", Arc::clone(&order)));
    assert_eq!(services.len(), 3);
    services.shutdown().await;
    assert_eq!(*order.lock().unwrap(), ["relay", "consumer", "pools"]);
}
