//! Handlers and the event they receive.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use crate::delivery::Delivery;
use crate::envelope::Event;
use crate::error::EventError;
use crate::trace::TraceContext;

/// An event as a handler sees it: the event, where it came from, which
/// delivery attempt this is and the trace context to continue. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    event: Arc<Event>,
    topic: Arc<str>,
    attempt: u32,
    trace: Option<TraceContext>,
}

impl ReceivedEvent {
    /// A received event; the trace context starts as the event's own.
    pub fn new(event: Arc<Event>, topic: impl Into<Arc<str>>, attempt: u32) -> Self {
        let trace = event.trace_context();
        Self {
            event,
            topic: topic.into(),
            attempt: attempt.max(1),
            trace,
        }
    }

    /// What a [`Delivery`] carries.
    pub fn from_delivery(delivery: &Delivery) -> Self {
        Self::new(
            delivery.shared_event(),
            delivery.topic(),
            delivery.attempt(),
        )
    }

    /// The event.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The event, shared.
    pub fn shared_event(&self) -> Arc<Event> {
        Arc::clone(&self.event)
    }

    /// The topic it was published to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The delivery attempt, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The payload decoded into `T` (see [`Event::data_as`]).
    ///
    /// # Errors
    /// As [`Event::data_as`].
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, EventError> {
        self.event.data_as()
    }

    /// The trace context to put on events this handler publishes: the
    /// handling span's context under the
    /// [`TracingLayer`](crate::middleware::TracingLayer), else the
    /// producer's.
    pub fn trace_context(&self) -> Option<TraceContext> {
        self.trace
    }

    /// Replaces the trace context (used by tracing middleware).
    pub fn with_trace_context(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace;
        self
    }
}

/// Handles events. `Ok` acknowledges the event; an error has it retried or
/// dead-lettered by the middleware and, failing that, nacked.
///
/// The convenient way to write a route's handler; the router runs it as a
/// tower service ([`HandlerService`](super::HandlerService)) under its
/// layers.
#[async_trait]
pub trait Handler: Send + Sync + fmt::Debug {
    /// Handles one event.
    async fn handle(&self, event: ReceivedEvent) -> Result<(), EventError>;
}

/// A shareable handler.
pub type SharedHandler = Arc<dyn Handler>;

#[async_trait]
impl<H: Handler + ?Sized> Handler for Arc<H> {
    async fn handle(&self, event: ReceivedEvent) -> Result<(), EventError> {
        (**self).handle(event).await
    }
}

/// A handler from an async closure; see [`handler_fn`].
#[derive(Clone)]
pub struct HandlerFn<F> {
    f: F,
}

impl<F> fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandlerFn")
    }
}

/// Makes a [`Handler`] of an async closure.
///
/// ```
/// use saas_events::router::{ReceivedEvent, handler_fn};
///
/// let handler = handler_fn(|event: ReceivedEvent| async move {
///     let amount: u64 = event.data_as()?;
///     assert!(amount > 0);
///     Ok(())
/// });
/// # let _ = handler;
/// ```
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(ReceivedEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), EventError>> + Send + 'static,
{
    HandlerFn { f }
}

#[async_trait]
impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(ReceivedEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), EventError>> + Send + 'static,
{
    async fn handle(&self, event: ReceivedEvent) -> Result<(), EventError> {
        (self.f)(event).await
    }
}
