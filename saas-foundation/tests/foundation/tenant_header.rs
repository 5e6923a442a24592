//! What the layer tests share: tenants subscribed to the test's plans, a
//! stand-in for `TenantLayer` (the `x-tenant` header names one of them by
//! slug), and a route that counts the requests it handled.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::routing::get;
use saas_billing::{
    BillingEngine, BillingStores, Catalog, Currency, NewSubscription, PlanId, PlanRef, Subscription,
};
use saas_core::{SystemClock, TenantContext, TenantId, TenantSlug};

/// An in-memory engine over `catalog`, and a tenant per `(slug, plan)`,
/// subscribed to version 1 of `plan` (none for `None`); each tenant's
/// subscription is passed to `adjust` (to pause it, say).
pub(crate) async fn subscribed(
    catalog: Catalog,
    tenants: &[(&str, Option<&str>)],
    adjust: impl AsyncFn(&BillingEngine, &str, Subscription),
) -> (BillingEngine, Vec<TenantContext>) {
    let engine = BillingEngine::new(
        Arc::new(catalog),
        BillingStores::in_memory(),
        Arc::new(SystemClock),
    );
    let mut contexts = Vec::new();
    for (slug, plan) in tenants {
        let ctx = TenantContext::new(TenantId::new(), TenantSlug::parse(slug).unwrap());
        if let Some(plan) = plan {
            let plan = PlanRef::new(PlanId::new(*plan).unwrap(), 1);
            let new = NewSubscription::new(ctx.tenant_id(), plan, Currency::USD);
            let subscription = engine.create_subscription(new).await.unwrap();
            adjust(&engine, slug, subscription).await;
        }
        contexts.push(ctx);
    }
    (engine, contexts)
}

/// `GET /work` (200) and `GET /fail` (400), each counted in `handled`,
/// behind `layer`, behind the header stand-in resolving `tenants`.
pub(crate) fn counted_route<L>(
    layer: L,
    tenants: Vec<TenantContext>,
    handled: &Arc<AtomicUsize>,
) -> Router
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<
            Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as tower::Service<Request>>::Future: Send + 'static,
{
    let (counter, failures) = (Arc::clone(handled), Arc::clone(handled));
    Router::new()
        .route(
            "/work",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { "done" }
            }),
        )
        .route(
            "/fail",
            get(move || {
                failures.fetch_add(1, Ordering::SeqCst);
                async { (http::StatusCode::BAD_REQUEST, "no") }
            }),
        )
        .layer(layer)
        .layer(axum::middleware::from_fn(move |request, next| {
            resolve(tenants.clone(), request, next)
        }))
}

async fn resolve(
    tenants: Vec<TenantContext>,
    mut request: Request,
    next: Next,
) -> axum::response::Response {
    let tenant = request
        .headers()
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .and_then(|slug| tenants.iter().find(|t| t.slug().as_str() == slug).cloned());
    if let Some(ctx) = tenant {
        request.extensions_mut().insert(ctx);
    }
    next.run(request).await
}
