//! An incoming request's W3C trace context continued by its span, so one
//! trace runs from the caller through the request, the events it
//! publishes (outbox included) and their handlers.
//!
//! [`TraceContextLayer`] runs each request in an `http.request` span whose
//! OpenTelemetry parent is the request's `traceparent` (and `tracestate`),
//! read by the global text-map propagator; [`continue_trace`] does the same
//! for a span the host makes itself (tower-http's `TraceLayer`, say).
//! Events created inside the span carry its context (`saas_events`'s
//! feature `otel`), and the router's `TracingLayer` continues it.
//!
//! This crate never installs a subscriber, a tracer provider or a
//! propagator: the host does, once at startup — here with no exporter; a
//! host exporting over OTLP adds `opentelemetry-otlp` and passes
//! `.with_batch_exporter(…)` to the builder:
//!
//! ```
//! use opentelemetry::trace::TracerProvider as _;
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use tracing_subscriber::util::SubscriberInitExt as _;
//!
//! // W3C `traceparent`/`tracestate`, in HTTP headers and in events.
//! opentelemetry::global::set_text_map_propagator(
//!     opentelemetry_sdk::propagation::TraceContextPropagator::new(),
//! );
//! let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
//! tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("my-app")))
//!     .init();
//! // … serve; on the way out:
//! provider.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_http::HeaderExtractor;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Makes `span`'s OpenTelemetry parent the trace context in `headers`
/// (W3C `traceparent`/`tracestate` with the usual propagator). Returns
/// whether it did: `false` when the headers carry no valid context, or the
/// span was already entered or is not recorded by a `tracing-opentelemetry`
/// layer — call it right after creating the span.
///
/// ```
/// use http::HeaderMap;
/// use saas_foundation::otel::continue_trace;
///
/// let mut headers = HeaderMap::new();
/// headers.insert(
///     "traceparent",
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
/// );
/// let span = tracing::info_span!("http.request");
/// // No tracing-opentelemetry layer is installed here, so nothing to continue.
/// assert!(!continue_trace(&span, &headers));
/// ```
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) -> bool {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    parent.span().span_context().is_valid() && span.set_parent(parent).is_ok()
}

/// A tower layer (for axum's `Router::layer`, outermost) that runs each
/// request in an `INFO` span named `http.request` — `otel.kind = "server"`,
/// `otel.name` the method, `http.request.method`, `url.path` and, once
/// answered, `http.response.status_code` (`otel.status_code = "ERROR"` for
/// a 5xx) — continuing the caller's trace when the request carries one
/// (see [`continue_trace`]), else starting one.
///
/// ```
/// use axum::Router;
/// use axum::routing::get;
/// use saas_foundation::otel::TraceContextLayer;
///
/// let app: Router = Router::new()
///     .route("/health", get(|| async { "ok" }))
///     .layer(TraceContextLayer::new());
/// # let _ = app;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextLayer {
    _private: (),
}

impl TraceContextLayer {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for TraceContextLayer {
    type Service = TraceContextService<S>;

    fn layer(&self, inner: S) -> TraceContextService<S> {
        TraceContextService { inner }
    }
}

/// The service of a [`TraceContextLayer`].
#[derive(Clone)]
pub struct TraceContextService<S> {
    inner: S,
}

impl<S> fmt::Debug for TraceContextService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContextService")
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TraceContextService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let method = request.method().as_str();
        let span = tracing::info_span!(
            "http.request",
            otel.name = method,
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = method,
            url.path = request.uri().path(),
            http.response.status_code = Empty,
        );
        continue_trace(&span, request.headers());
        // Called inside the span: the handler's work before its first
        // poll belongs to the request too.
        let call = span.in_scope(|| self.inner.call(request));
        Box::pin(async move {
            let result = call.instrument(span.clone()).await;
            if let Ok(response) = &result {
                let status = response.status();
                span.record("http.response.status_code", status.as_u16());
                if status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
            }
            result
        })
    }
}
