//! A stand-in for `TenantLayer` in layer tests: the `x-tenant` header
//! names one of the test's tenants by slug, and the route under test
//! counts the requests it handled.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::routing::get;
use saas_core::TenantContext;

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
