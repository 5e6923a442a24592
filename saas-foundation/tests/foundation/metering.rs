//! `MeterLayer` through a real router: each request a unit of its own
//! tenant's meter, refused over the quota when enforcing, never counted
//! against nobody.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::Request;
use http::StatusCode;
use saas_billing::{
    Aggregation, BillingEngine, CancelMode, Catalog, Charge, Currency, Decimal, DenyReason, Meter,
    MeterKey, Money, NewSubscription, PlanId, PlanRef, PlanVersion, Product, ProductId, dec,
};
use saas_core::{SystemClock, TenantContext};
use saas_foundation::metering::MeterLayer;
use saas_foundation::subscriptions::CurrentSubscriptions;
use serde_json::Value;
use tower::ServiceExt;

use crate::tenant_header::{counted_route, subscribed};

/// Plan `free`: a quota of 3 calls a period; `pro`: calls billed, no quota.
fn catalog() -> Catalog {
    let app = ProductId::new("app").unwrap();
    let zero = Money::new(dec!(0), Currency::USD);
    Catalog::builder()
        .product(Product::new(app.clone(), "App"))
        .meter(Meter::new(
            MeterKey::new("calls").unwrap(),
            Aggregation::Count,
        ))
        .plan(
            PlanVersion::builder(PlanId::new("free").unwrap(), 1, app.clone())
                .recurring("base", "Free", [Charge::flat(zero).unwrap()])
                .metered("calls", "Calls", "calls", [Charge::per_unit(zero).unwrap()])
                .quota("calls", "calls", dec!(3))
                .build()
                .unwrap(),
        )
        .plan(
            PlanVersion::builder(PlanId::new("pro").unwrap(), 1, app)
                .recurring("base", "Pro", [Charge::flat(zero).unwrap()])
                .metered("calls", "Calls", "calls", [Charge::per_unit(zero).unwrap()])
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

struct Metered {
    engine: BillingEngine,
    router: Router,
    handled: Arc<AtomicUsize>,
    tenants: Vec<TenantContext>,
}

/// How the layer is set up.
#[derive(Clone, Copy)]
struct Mode {
    enforcing: bool,
    after_success: bool,
}

const COUNTING: Mode = Mode {
    enforcing: false,
    after_success: false,
};
const ENFORCING: Mode = Mode {
    enforcing: true,
    after_success: false,
};

/// Tenants `acme` and `globex` on plan free, `bigco` on pro, `paused`
/// on free but paused, `unsubscribed` without a subscription; the
/// `x-tenant` header names the request's tenant (standing in for the
/// TenantLayer). `GET /work` succeeds, `GET /fail` answers 400.
async fn metered(mode: Mode) -> Metered {
    let tenants = [
        ("acme", Some("free")),
        ("globex", Some("free")),
        ("bigco", Some("pro")),
        ("paused", Some("free")),
        ("unsubscribed", None),
    ];
    let (engine, tenants) = subscribed(catalog(), &tenants, async |engine, slug, sub| {
        if slug == "paused" {
            engine.pause(sub.tenant_id(), sub.id()).await.unwrap();
        }
    })
    .await;
    let current = Arc::new(CurrentSubscriptions::new(engine.clone()));
    let key = MeterKey::new("calls").unwrap();
    let mut layer = MeterLayer::new(current, key, Arc::new(SystemClock));
    if mode.enforcing {
        layer = layer.enforcing();
    }
    if mode.after_success {
        layer = layer.after_success();
    }
    let handled = Arc::new(AtomicUsize::new(0));
    let router = counted_route(layer, tenants.clone(), &handled);
    Metered {
        engine,
        router,
        handled,
        tenants,
    }
}

async fn call(router: &Router, tenant: Option<&str>) -> (StatusCode, Value) {
    call_path(router, "/work", tenant).await
}

async fn call_path(router: &Router, path: &str, tenant: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::get(path);
    if let Some(slug) = tenant {
        request = request.header("x-tenant", slug);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 16).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Whether `tenant` may still make `calls` more calls this period.
fn may_call(engine: &BillingEngine, tenant: &TenantContext, calls: u32) -> bool {
    engine
        .check(tenant.tenant_id(), "calls", Decimal::from(calls))
        .is_allowed()
}

#[tokio::test]
async fn each_request_counts_once_against_its_own_tenant() {
    let m = metered(COUNTING).await;
    let (acme, globex) = (&m.tenants[0], &m.tenants[1]);
    for _ in 0..2 {
        assert_eq!(call(&m.router, Some("acme")).await.0, StatusCode::OK);
    }
    assert!(may_call(&m.engine, acme, 1), "two of three used");
    assert!(!may_call(&m.engine, acme, 2), "two calls counted for acme");
    assert!(may_call(&m.engine, globex, 3), "globex's quota untouched");
    // Not enforcing: past the quota the calls are served and still counted.
    for _ in 0..3 {
        assert_eq!(call(&m.router, Some("acme")).await.0, StatusCode::OK);
    }
    assert_eq!(m.handled.load(Ordering::SeqCst), 5);
    let over = m.engine.check(acme.tenant_id(), "calls", Decimal::ONE);
    assert_eq!(over.reason(), Some(DenyReason::OverLimit));
}

#[tokio::test]
async fn enforcing_refuses_calls_over_the_quota_before_the_handler() {
    let m = metered(ENFORCING).await;
    for _ in 0..3 {
        assert_eq!(call(&m.router, Some("acme")).await.0, StatusCode::OK);
    }
    let (status, body) = call(&m.router, Some("acme")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["code"], "quota_exceeded");
    assert_eq!(m.handled.load(Ordering::SeqCst), 3, "the refused call ran");
    // The other tenant is served in full.
    for _ in 0..3 {
        assert_eq!(call(&m.router, Some("globex")).await.0, StatusCode::OK);
    }
    assert_eq!(m.handled.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn a_request_without_a_tenant_or_a_subscription_is_refused_uncounted() {
    let m = metered(ENFORCING).await;
    let (status, body) = call(&m.router, None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["code"], "internal");
    let (status, body) = call(&m.router, Some("unsubscribed")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(m.handled.load(Ordering::SeqCst), 0);
    assert!(may_call(&m.engine, &m.tenants[0], 3));
}

#[tokio::test]
async fn enforcing_refuses_a_paused_subscription_and_passes_a_plan_without_quota() {
    let m = metered(ENFORCING).await;
    let (status, body) = call(&m.router, Some("paused")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "subscription_not_served");
    assert_eq!(m.handled.load(Ordering::SeqCst), 0);
    // Pro bills calls without a quota: never refused.
    for _ in 0..5 {
        assert_eq!(call(&m.router, Some("bigco")).await.0, StatusCode::OK);
    }
    assert_eq!(m.handled.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn after_success_counts_only_requests_answered_with_success() {
    let m = metered(Mode {
        enforcing: true,
        after_success: true,
    })
    .await;
    let acme = &m.tenants[0];
    for _ in 0..3 {
        let (status, _) = call_path(&m.router, "/fail", Some("acme")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    assert!(may_call(&m.engine, acme, 3), "failed requests were counted");
    for _ in 0..3 {
        assert_eq!(call(&m.router, Some("acme")).await.0, StatusCode::OK);
    }
    // Recorded in a task of its own, after the answer.
    for _ in 0..200 {
        if !may_call(&m.engine, acme, 1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        !may_call(&m.engine, acme, 1),
        "served requests were not counted"
    );
    assert_eq!(
        call(&m.router, Some("acme")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(m.handled.load(Ordering::SeqCst), 6);
}

/// A subscription canceled and replaced while its id is remembered: the
/// request is counted on the new one, not refused.
#[tokio::test]
async fn a_replaced_subscription_is_looked_up_again() {
    let m = metered(COUNTING).await;
    let acme = &m.tenants[0];
    assert_eq!(call(&m.router, Some("acme")).await.0, StatusCode::OK);
    let billing = &m.engine;
    let old = billing
        .stores()
        .subscriptions
        .list(acme.tenant_id())
        .await
        .unwrap();
    let old = old.into_iter().next().unwrap();
    billing
        .cancel(
            acme.tenant_id(),
            old.id(),
            CancelMode::Immediately { prorate: false },
        )
        .await
        .unwrap();
    let plan = PlanRef::new(PlanId::new("free").unwrap(), 1);
    let new = NewSubscription::new(acme.tenant_id(), plan, Currency::USD);
    let new = billing.create_subscription(new).await.unwrap();
    let (status, body) = call(&m.router, Some("acme")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let usage = &billing.stores().usage;
    let on_new = usage
        .billed_in(acme.tenant_id(), new.id(), 0)
        .await
        .unwrap();
    assert_eq!(on_new.len(), 1, "counted on the new subscription");
    let on_old = usage
        .billed_in(acme.tenant_id(), old.id(), 0)
        .await
        .unwrap();
    assert_eq!(on_old.len(), 1, "the first call stays on the old one");
}
