//! HTTP integration (feature `axum`): a tower [`Layer`](tower_layer::Layer)
//! that authenticates the request and resolves its tenant, and an axum
//! extractor for the resulting [`TenantContext`](crate::TenantContext).
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use saas_core::http::{Tenant, TenantLayer};
//! use saas_core::{AuthMode, HeaderResolver, InMemoryTenantLookup, RequestResolver};
//!
//! async fn whoami(Tenant(ctx): Tenant) -> String {
//!     ctx.slug().to_string()
//! }
//!
//! let resolver = RequestResolver::builder(Arc::new(InMemoryTenantLookup::new()))
//!     .auth(AuthMode::Optional)
//!     .resolver(HeaderResolver::new("x-tenant")?)
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/whoami", get(whoami))
//!     .layer(TenantLayer::new(resolver));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod extract;
mod layer;

pub use extract::{MissingTenantLayer, Tenant};
pub use layer::{TenantLayer, TenantService};

use axum::response::{IntoResponse, Response};

use crate::RequestRejection;

/// The media type of an error response (RFC 9457 problem details).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem-details response: `type` (`about:blank`), `title`
/// (the status's reason), `status`, `detail` and `code` — the one error
/// format of the workspace (saas-foundation's `Problem` answers with it
/// too), so a client meets one shape whoever refused the request.
///
/// ```
/// use http::StatusCode;
///
/// let response = saas_core::http::problem_response(StatusCode::FORBIDDEN, "plan_limit", "upgrade");
/// assert_eq!(response.status(), StatusCode::FORBIDDEN);
/// assert_eq!(response.headers()["content-type"], saas_core::http::PROBLEM_JSON);
/// ```
pub fn problem_response(status: http::StatusCode, code: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(PROBLEM_JSON),
    );
    response
}

impl IntoResponse for RequestRejection {
    /// The rejection's status with an RFC 9457 problem-details body
    /// (`application/problem+json`) whose `code` says which rejection
    /// (`no_tenant`, `unknown_tenant`, …) and `detail` what to do.
    fn into_response(self) -> Response {
        let mut response = problem_response(self.status(), self.code(), &self.to_string());
        if self.status() == http::StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
