//! Feature `otel`: events take the OpenTelemetry context of the current
//! span, and `TracingLayer` makes the handler's span its child — checked
//! on the spans a real SDK tracer provider exports.

use std::sync::{Arc, Mutex};

use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use saas_core::TenantId;
use saas_events::middleware::TracingLayer;
use saas_events::router::{HandlerService, ReceivedEvent, handler_fn};
use saas_events::{Event, TraceContext};
use tower::{Layer, ServiceExt};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// Every ended span, kept for the test to read.
#[derive(Debug, Clone, Default)]
struct Exported(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Exported {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

impl Exported {
    fn named(&self, name: &str) -> SpanData {
        let spans = self.0.lock().unwrap();
        let found = spans.iter().find(|s| s.name == name);
        found
            .cloned()
            .unwrap_or_else(|| panic!("no span named {name}"))
    }
}

/// A subscriber whose spans are OpenTelemetry spans, exported to the
/// returned collection when they end. Set for the calling thread only
/// (`set_default`): the tests run on a current-thread runtime, so
/// everything they spawn sees it and no other test does.
fn recording() -> (tracing::subscriber::DefaultGuard, Exported) {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exported = Exported::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exported.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("saas-events-tests"));
    let subscriber = tracing_subscriber::registry().with(layer);
    (tracing::subscriber::set_default(subscriber), exported)
}

fn ids(span: &tracing::Span) -> (TraceId, SpanId) {
    let cx = span.context();
    let ids = cx.span().span_context().clone();
    (ids.trace_id(), ids.span_id())
}

fn w3c(trace: TraceContext) -> (String, String) {
    (trace.trace_id(), trace.parent_id())
}

#[tokio::test]
async fn an_event_carries_the_current_spans_context() {
    let (_guard, _) = recording();
    let outside = Event::new(TenantId::new(), "t", "/s", &1).unwrap();
    assert_eq!(outside.traceparent(), None, "no span, no context");

    let span = tracing::info_span!("request");
    let (trace_id, span_id) = ids(&span);
    let event = span.in_scope(|| Event::without_data(None, "t", "/s").unwrap());
    let carried = event.trace_context().expect("a valid traceparent");
    assert_eq!(
        w3c(carried),
        (trace_id.to_string(), span_id.to_string()),
        "the span's own trace and span ids"
    );
    assert!(carried.sampled());

    // An explicit context wins, and a decoded (relayed) event keeps the
    // one it was sent with, whatever span decodes it.
    let explicit: TraceContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        .parse()
        .unwrap();
    let chosen = span.in_scope(|| {
        Event::new(None, "t", "/s", &1)
            .unwrap()
            .with_trace_context(explicit)
    });
    assert_eq!(chosen.trace_context(), Some(explicit));
    let json = chosen.to_json().unwrap();
    let relayed = span.in_scope(|| Event::from_json_slice(&json).unwrap());
    assert_eq!(relayed.trace_context(), Some(explicit));
    let untraced = outside.to_json().unwrap();
    let relayed = span.in_scope(|| Event::from_json_slice(&untraced).unwrap());
    assert_eq!(relayed.traceparent(), None);
}

#[tokio::test]
async fn the_handlers_span_is_a_child_of_the_producers() {
    let (_guard, exported) = recording();
    let producer = tracing::info_span!("produce");
    let (trace_id, producer_id) = ids(&producer);
    let event =
        producer.in_scope(|| Event::new(TenantId::new(), "invoice.paid", "/b", &1).unwrap());
    drop(producer);

    // What the handler sees: its span's context, the trace context it is
    // given, and the context of an event it creates.
    type Seen = (
        (TraceId, SpanId),
        Option<TraceContext>,
        Option<TraceContext>,
    );
    let seen: Arc<Mutex<Option<Seen>>> = Arc::default();
    let out = Arc::clone(&seen);
    let handler = HandlerService::new(handler_fn(move |e: ReceivedEvent| {
        let current = ids(&tracing::Span::current());
        let follow_up = Event::without_data(None, "invoice.mailed", "/b").unwrap();
        *out.lock().unwrap() = Some((current, e.trace_context(), follow_up.trace_context()));
        async { Ok(()) }
    }));
    TracingLayer::new()
        .layer(handler)
        .oneshot(ReceivedEvent::new(Arc::new(event), "billing", 1))
        .await
        .unwrap();

    let ((handler_trace, handler_id), given, follow_up) =
        seen.lock().unwrap().take().expect("the handler ran");
    assert_eq!(handler_trace, trace_id, "the producer's trace");
    assert_ne!(handler_id, producer_id, "a span of its own");
    let own = (handler_trace.to_string(), handler_id.to_string());
    assert_eq!(given.map(w3c), Some(own.clone()), "ReceivedEvent's context");
    assert_eq!(
        follow_up.map(w3c),
        Some(own),
        "events it creates continue it"
    );

    let span = exported.named("invoice.paid process");
    assert_eq!(span.span_context.trace_id(), trace_id);
    assert_eq!(span.span_context.span_id(), handler_id);
    assert_eq!(
        span.parent_span_id, producer_id,
        "the producer's span is its parent"
    );
    assert!(span.parent_span_is_remote, "a parent read from the event");
}
