use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};

use crate::TenantContext;

/// Extracts the [`TenantContext`] that [`TenantLayer`](super::TenantLayer)
/// resolved for this request.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantContext);

/// The route is not behind a [`TenantLayer`](super::TenantLayer): a wiring
/// bug, answered with 500 so it is never mistaken for "no tenant".
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("this route is not behind a TenantLayer; add the layer to the router")]
pub struct MissingTenantLayer;

impl IntoResponse for MissingTenantLayer {
    fn into_response(self) -> Response {
        super::problem_response(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "missing_tenant_layer",
            &self.to_string(),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = MissingTenantLayer;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<TenantContext>()
            .cloned()
            .map(Tenant)
            .ok_or(MissingTenantLayer)
    }
}
