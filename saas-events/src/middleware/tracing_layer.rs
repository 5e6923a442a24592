//! Tracing spans that continue the producer's trace.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument as _;
use tracing::field::{Empty, display};

use super::{RandomSource, SeededRandom};
use crate::error::{BoxError, EventError};
use crate::router::{EventFuture, ReceivedEvent, call_mapped, poll_ready_mapped};
use crate::trace::TraceContext;

/// A tower layer that runs each handler call in an `INFO` span named `event.handle`, with
/// `otel.name = "<type> process"` (the span's display name for
/// OpenTelemetry exporters), `otel.kind = "consumer"`,
/// `cloudevents.event_type`, `cloudevents.event_id`, `tenant.id`,
/// `messaging.destination.name`, `messaging.attempt`, and the W3C ids
/// `trace_id`, `span_id` and `parent_id`.
///
/// The trace continues the event's `traceparent`: same trace id, the
/// producer's span as parent, a new span id. Handlers read the new context
/// from [`ReceivedEvent::trace_context`] and put it on events they publish.
/// Events without a trace start a new one. (Exporting these spans to
/// OpenTelemetry with the same ids needs a `tracing-opentelemetry` bridge,
/// which this crate does not ship yet.)
#[derive(Debug, Clone)]
pub struct TracingLayer {
    random: Arc<dyn RandomSource>,
}

impl Default for TracingLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl TracingLayer {
    /// Span ids from the operating system's random source.
    pub fn new() -> Self {
        Self::with_random(Arc::new(SeededRandom::from_entropy()))
    }

    /// Span ids from `random` (seed it in tests).
    pub fn with_random(random: Arc<dyn RandomSource>) -> Self {
        Self { random }
    }
}

impl<S> Layer<S> for TracingLayer {
    type Service = TracingService<S>;

    fn layer(&self, inner: S) -> TracingService<S> {
        TracingService {
            inner,
            random: Arc::clone(&self.random),
        }
    }
}

/// The service of a [`TracingLayer`].
#[derive(Debug, Clone)]
pub struct TracingService<S> {
    inner: S,
    random: Arc<dyn RandomSource>,
}

impl<S> TracingService<S> {
    fn span_context(&self, parent: Option<TraceContext>) -> Option<TraceContext> {
        let span_id = self.random.next_u64().max(1);
        match parent {
            Some(parent) => Some(parent.child(span_id)),
            None => {
                let high = u128::from(self.random.next_u64()) << 64;
                TraceContext::new(high | u128::from(self.random.next_u64()) | 1, span_id, true)
            }
        }
    }
}

impl<S> Service<ReceivedEvent> for TracingService<S>
where
    S: Service<ReceivedEvent, Response = ()> + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = EventError;
    type Future = EventFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), EventError>> {
        poll_ready_mapped(&mut self.inner, cx)
    }

    fn call(&mut self, event: ReceivedEvent) -> EventFuture {
        let parent = event.event().trace_context();
        let context = self.span_context(parent);
        let ev = event.event();
        let span = tracing::info_span!(
            "event.handle",
            otel.name = %format_args!("{} process", ev.event_type()),
            otel.kind = "consumer",
            otel.status_code = Empty,
            cloudevents.event_type = %ev.event_type(),
            cloudevents.event_id = %ev.id(),
            tenant.id = ev.tenant_id().map(display),
            messaging.destination.name = %event.topic(),
            messaging.attempt = event.attempt(),
            trace_id = context.map(|c| display(c.trace_id())),
            span_id = context.map(|c| display(c.parent_id())),
            parent_id = parent.map(|p| display(p.parent_id())),
            error = Empty,
        );
        // The inner call starts inside the span too: a layer or handler
        // may do work before its future is first polled.
        let call =
            span.in_scope(|| call_mapped(&mut self.inner, event.with_trace_context(context)));
        Box::pin(async move {
            let result = call.instrument(span.clone()).await;
            if let Err(error) = &result {
                span.record("otel.status_code", "ERROR");
                span.record("error", display(error));
            }
            result
        })
    }
}
