//! What the crate's tower layers share: the boxed response future, the
//! ready-service swap tower asks for, and the request's tenant.

use axum::extract::Request;
use saas_core::{ErrorKind, TenantContext};

use crate::problem::Problem;

/// A layer's response future.
pub(crate) type BoxFuture<O> = std::pin::Pin<Box<dyn std::future::Future<Output = O> + Send>>;

/// The inner service that `poll_ready` made ready, a clone left in its
/// place: tower's rule is to call the service that was polled ready.
pub(crate) fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// The request's tenant, put there by `TenantLayer`; without one the
/// layer was placed outside it — refused with 500 rather than run for
/// nobody. `layer` names the layer, `doing` what it could not do.
pub(crate) fn request_tenant(
    request: &Request,
    layer: &str,
    doing: &str,
) -> Result<TenantContext, Problem> {
    request
        .extensions()
        .get::<TenantContext>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!("{layer} reached without a tenant: add TenantLayer after it");
            let detail = format!("the request's tenant was not resolved before {doing}");
            Problem::new(ErrorKind::Internal, detail)
        })
}
