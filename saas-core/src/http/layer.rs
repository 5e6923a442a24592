use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use crate::RequestResolver;

/// Resolves the tenant of every request before the inner service runs.
///
/// On success the [`TenantContext`](crate::TenantContext) is put into the
/// request extensions (read it with [`Tenant`](super::Tenant)) and the
/// inner service runs inside a `tenant_request` span carrying `tenant_id`
/// and `tenant_slug`. On failure the inner service is not called and the
/// rejection is answered as JSON with status 400/401/403/404/503.
#[derive(Debug, Clone)]
pub struct TenantLayer {
    resolver: RequestResolver,
}

impl TenantLayer {
    /// A layer that resolves with `resolver`.
    pub fn new(resolver: RequestResolver) -> Self {
        Self { resolver }
    }
}

impl<S> Layer<S> for TenantLayer {
    type Service = TenantService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantService {
            inner,
            resolver: self.resolver.clone(),
        }
    }
}

/// The service made by [`TenantLayer`].
#[derive(Debug, Clone)]
pub struct TenantService<S> {
    inner: S,
    resolver: RequestResolver,
}

impl<S, B> Service<http::Request<B>> for TenantService<S>
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready; keep the ready one for this call (the
        // usual tower pattern for services that await before delegating).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let resolver = self.resolver.clone();
        Box::pin(async move {
            let ctx = match resolver.resolve(request.uri(), request.headers()).await {
                Ok(ctx) => ctx,
                Err(rejection) => return Ok(rejection.into_response()),
            };
            let span = tracing::info_span!(
                "tenant_request",
                tenant_id = %ctx.tenant_id(),
                tenant_slug = %ctx.slug(),
            );
            request.extensions_mut().insert(ctx);
            inner
                .call(request)
                .instrument(span)
                .await
                .map(IntoResponse::into_response)
        })
    }
}
