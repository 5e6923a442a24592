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
/// Events without a trace start a new one.
///
/// With the `otel` feature the span *is* the OpenTelemetry span: its
/// parent is the producer's context, read from the event by the global
/// text-map propagator and set through `tracing-opentelemetry`, so an
/// exporter shows the handler as a child in the producer's trace; the ids
/// in the fields and in [`ReceivedEvent::trace_context`] are that span's
/// own, and events the handler creates inside it carry them by themselves
/// (see the crate's "Tracing across the bus"). The random source is then
/// unused. Where no `tracing-opentelemetry` layer records the span, the
/// handler is given the producer's context unchanged.
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
    #[cfg_attr(feature = "otel", allow(dead_code))]
    random: Arc<dyn RandomSource>,
}

impl<S> TracingService<S> {
    /// The handling span's context and the span: a new span id minted
    /// under the producer's context (without `otel`).
    #[cfg(not(feature = "otel"))]
    fn start(&self, event: &ReceivedEvent) -> (Option<TraceContext>, tracing::Span) {
        let parent = event.event().trace_context();
        let span_id = self.random.next_u64().max(1);
        let context = match parent {
            Some(parent) => Some(parent.child(span_id)),
            None => {
                let high = u128::from(self.random.next_u64()) << 64;
                TraceContext::new(high | u128::from(self.random.next_u64()) | 1, span_id, true)
            }
        };
        let span = handle_span(event);
        record_ids(&span, context, parent);
        (context, span)
    }

    /// The handling span's context and the span: the OpenTelemetry span
    /// under the producer's context (with `otel`). Its parent is set
    /// before anything enters it — `tracing-opentelemetry` refuses a new
    /// parent for a span already started.
    #[cfg(feature = "otel")]
    fn start(&self, event: &ReceivedEvent) -> (Option<TraceContext>, tracing::Span) {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;

        let parent = event.event().trace_context();
        let span = handle_span(event);
        let producer = crate::otel::producer_context(event.event());
        if producer.span().span_context().is_valid() {
            // Refused only for a span no OpenTelemetry layer records
            // (filtered out, or no layer): nothing is exported for it.
            let _ = span.set_parent(producer);
        }
        let context = crate::otel::span_trace_context(&span).or(parent);
        record_ids(&span, context, parent);
        (context, span)
    }
}

/// The `event.handle` span, its ids not recorded yet.
fn handle_span(event: &ReceivedEvent) -> tracing::Span {
    let ev = event.event();
    tracing::info_span!(
        "event.handle",
        otel.name = %format_args!("{} process", ev.event_type()),
        otel.kind = "consumer",
        otel.status_code = Empty,
        cloudevents.event_type = %ev.event_type(),
        cloudevents.event_id = %ev.id(),
        tenant.id = ev.tenant_id().map(display),
        messaging.destination.name = %event.topic(),
        messaging.attempt = event.attempt(),
        trace_id = Empty,
        span_id = Empty,
        parent_id = Empty,
        error = Empty,
    )
}

/// Records the W3C ids on the span (for logs that show no exporter).
fn record_ids(span: &tracing::Span, context: Option<TraceContext>, parent: Option<TraceContext>) {
    if let Some(context) = context {
        span.record("trace_id", display(context.trace_id()));
        // Under `otel` without a recording layer the context is the
        // producer's: its span id is the parent, not this span.
        if Some(context) != parent {
            span.record("span_id", display(context.parent_id()));
        }
    }
    if let Some(parent) = parent {
        span.record("parent_id", display(parent.parent_id()));
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
        let (context, span) = self.start(&event);
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
