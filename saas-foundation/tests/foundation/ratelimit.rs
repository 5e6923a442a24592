//! `RateLimitLayer` through a real router: each tenant limited to its
//! plan's requests per second, apart from every other tenant, with a
//! `Retry-After` on the 429 — on an injected clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use governor::clock::FakeRelativeClock;
use http::StatusCode;
use saas_billing::{
    Catalog, Charge, Currency, Money, PlanId, PlanVersion, Product, ProductId, dec,
};
use saas_foundation::ratelimit::RateLimitLayer;
use saas_foundation::subscriptions::CurrentSubscriptions;
use tower::ServiceExt;

use crate::tenant_header::{counted_route, subscribed};

/// `small`: 5 requests a second; `blocked`: none; `open`: no limit listed.
fn catalog() -> Catalog {
    let app = ProductId::new("app").unwrap();
    let plan = |name: &str, rate: Option<u32>| {
        let builder = PlanVersion::builder(PlanId::new(name).unwrap(), 1, app.clone()).recurring(
            "base",
            name,
            [Charge::flat(Money::new(dec!(0), Currency::USD)).unwrap()],
        );
        match rate {
            Some(rate) => builder.limit("api_rate", rate.into()),
            None => builder,
        }
        .build()
        .unwrap()
    };
    Catalog::builder()
        .product(Product::new(app.clone(), "App"))
        .plan(plan("small", Some(5)))
        .plan(plan("blocked", Some(0)))
        .plan(plan("open", None))
        .build()
        .unwrap()
}

struct Limited {
    router: Router,
    clock: FakeRelativeClock,
    handled: Arc<AtomicUsize>,
}

/// Tenants named by the `x-tenant` header (standing in for the
/// TenantLayer): `noisy` and `quiet` on plan small, `stuck` on blocked,
/// `free` on open, `nobody` without a subscription; default rate 2.
async fn limited() -> Limited {
    let tenants = [
        ("noisy", Some("small")),
        ("quiet", Some("small")),
        ("stuck", Some("blocked")),
        ("free", Some("open")),
        ("nobody", None),
    ];
    let (engine, tenants) = subscribed(catalog(), &tenants, async |_, _, _| {}).await;
    let current = Arc::new(CurrentSubscriptions::new(engine));
    let clock = FakeRelativeClock::default();
    let layer = RateLimitLayer::with_clock(current, "api_rate", clock.clone()).default_rate(2);
    let handled = Arc::new(AtomicUsize::new(0));
    let router = counted_route(layer, tenants, &handled);
    Limited {
        router,
        clock,
        handled,
    }
}

/// The status of one request, and its `Retry-After`.
async fn call(router: &Router, tenant: &str) -> (StatusCode, Option<String>) {
    let request = Request::get("/work")
        .header("x-tenant", tenant)
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status(), retry)
}

async fn served(router: &Router, tenant: &str, requests: usize) -> usize {
    let mut ok = 0;
    for _ in 0..requests {
        if call(router, tenant).await.0 == StatusCode::OK {
            ok += 1;
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_gets_429s_while_another_is_served_in_full() {
    let l = limited().await;
    // The noisy tenant floods from 8 tasks at once.
    let mut floods = Vec::new();
    for _ in 0..8 {
        let router = l.router.clone();
        floods.push(tokio::spawn(
            async move { served(&router, "noisy", 25).await },
        ));
    }
    let mut noisy_served = 0;
    for flood in floods {
        noisy_served += flood.await.unwrap();
    }
    assert_eq!(noisy_served, 5, "the plan allows 5 a second");
    // The quiet tenant, within its own 5, is served every time.
    assert_eq!(served(&l.router, "quiet", 5).await, 5);
    let (status, retry) = call(&l.router, "noisy").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(
        l.handled.load(Ordering::SeqCst),
        10,
        "a refused request ran"
    );
    // A second later the noisy tenant has its next 5.
    l.clock.advance(Duration::from_secs(1));
    assert_eq!(served(&l.router, "noisy", 8).await, 5);
}

#[tokio::test]
async fn plans_without_a_limit_take_the_default_and_a_zero_limit_refuses_all() {
    let l = limited().await;
    assert_eq!(served(&l.router, "free", 4).await, 2, "the default rate");
    assert_eq!(served(&l.router, "nobody", 4).await, 2, "the default rate");
    let (status, _) = call(&l.router, "stuck").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    l.clock.advance(Duration::from_secs(60));
    assert_eq!(served(&l.router, "stuck", 3).await, 0);
}

#[tokio::test]
async fn a_request_without_a_tenant_is_refused() {
    let l = limited().await;
    assert_eq!(
        call(&l.router, "unknown").await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(l.handled.load(Ordering::SeqCst), 0);
}
