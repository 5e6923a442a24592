//! OpenTelemetry propagation through an event's `traceparent` and
//! `tracestate` (feature `otel`).
//!
//! Injection and extraction go through the global text-map propagator
//! (`opentelemetry::global`), which the host sets — with
//! `TraceContextPropagator` for the W3C form these two extensions hold —
//! when it installs its `tracing-opentelemetry` layer. The event is the
//! propagator's carrier: only the W3C keys land in it, as CloudEvents'
//! distributed tracing extension defines no others.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::envelope::Event;
use crate::trace::TraceContext;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// An event written by the propagator.
struct EventInjector<'a>(&'a mut Event);

impl Injector for EventInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // Keys come lowercase from the W3C propagator; others (baggage,
        // vendor formats of a composite propagator) have no place here.
        match key {
            TRACEPARENT => self.0.traceparent = Some(value),
            TRACESTATE => self.0.tracestate = Some(value).filter(|s| !s.is_empty()),
            _ => {}
        }
    }
}

/// An event read by the propagator.
struct EventExtractor<'a>(&'a Event);

impl Extractor for EventExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.0.traceparent(),
            TRACESTATE => self.0.tracestate(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        [
            (TRACEPARENT, self.0.traceparent.is_some()),
            (TRACESTATE, self.0.tracestate.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, present)| present.then_some(key))
        .collect()
    }
}

/// Writes the OpenTelemetry context of the current `tracing` span into
/// `event`, if that span has a valid one (a `tracing-opentelemetry` layer
/// is installed and the span is enabled). Without one the event is left
/// as it is, so no empty or made-up context is ever sent.
pub(crate) fn inject_current_span(event: &mut Event) {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut EventInjector(event));
    });
}

/// The producer's context carried by `event`, as the propagator reads it
/// (a context without a valid span when there is none).
pub(crate) fn producer_context(event: &Event) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&EventExtractor(event))
    })
}

/// The typed W3C form of `span`'s OpenTelemetry context, if valid.
pub(crate) fn span_trace_context(span: &tracing::Span) -> Option<TraceContext> {
    let cx = span.context();
    let span_ref = cx.span();
    let ids = span_ref.span_context();
    if !ids.is_valid() {
        return None;
    }
    TraceContext::new(
        u128::from_be_bytes(ids.trace_id().to_bytes()),
        u64::from_be_bytes(ids.span_id().to_bytes()),
        ids.is_sampled(),
    )
}
