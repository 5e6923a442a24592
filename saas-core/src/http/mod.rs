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

use axum::Json;
use axum::response::{IntoResponse, Response};

use crate::RequestRejection;

impl IntoResponse for RequestRejection {
    /// The rejection's status with a body
    /// `{"error": {"code": "...", "message": "..."}}`.
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string() }
        });
        let mut response = (self.status(), Json(body)).into_response();
        if self.status() == http::StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
