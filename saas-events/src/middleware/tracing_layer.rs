//! Tracing spans that continue the producer's trace.

use std::sync::Arc;

use async_trait::async_trait;
use tracing::Instrument as _;
use tracing::field::{Empty, display};

use super::{RandomSource, SeededRandom};
use crate::error::EventError;
use crate::router::{Handler, Middleware, ReceivedEvent, SharedHandler};
use crate::trace::TraceContext;

/// Runs each handler call in an `INFO` span named `event.handle`, with
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

impl Middleware for TracingLayer {
    fn wrap(&self, inner: SharedHandler) -> SharedHandler {
        Arc::new(Traced {
            inner,
            random: Arc::clone(&self.random),
        })
    }
}

#[derive(Debug)]
struct Traced {
    inner: SharedHandler,
    random: Arc<dyn RandomSource>,
}

impl Traced {
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

#[async_trait]
impl Handler for Traced {
    async fn handle(&self, event: ReceivedEvent) -> Result<(), EventError> {
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
        let result = self
            .inner
            .handle(event.with_trace_context(context))
            .instrument(span.clone())
            .await;
        if let Err(error) = &result {
            span.record("otel.status_code", "ERROR");
            span.record("error", display(error));
        }
        result
    }
}
