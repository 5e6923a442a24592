//! The handler pipeline as tower services: the boxed service the router
//! runs, adapters between [`Handler`]s and services, and the mapping of a
//! layer's error to [`EventError`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;
use tower_service::Service;

use super::{Handler, ReceivedEvent};
use crate::error::{BoxError, EventError};

/// A whole handler pipeline — the router's dispatcher under its layers —
/// as one tower service that is cheap to clone and shared across tasks.
/// [`Router::into_service`](super::Router::into_service) builds one.
pub type BoxEventService = BoxCloneSyncService<ReceivedEvent, (), EventError>;

/// The future of this crate's services.
pub(crate) type EventFuture = Pin<Box<dyn Future<Output = Result<(), EventError>> + Send>>;

/// `poll_ready` of `service`, its error as an [`EventError`].
pub(crate) fn poll_ready_mapped<S>(
    service: &mut S,
    cx: &mut Context<'_>,
) -> Poll<Result<(), EventError>>
where
    S: Service<ReceivedEvent>,
    S::Error: Into<BoxError>,
{
    service
        .poll_ready(cx)
        .map_err(|error| EventError::from_service_error(error.into(), Duration::ZERO))
}

/// Calls `service` (which must be ready) with `event`; its error as an
/// [`EventError`]. The clock starts at the call, so a timeout reports how
/// long the call ran.
pub(crate) fn call_mapped<S>(
    service: &mut S,
    event: ReceivedEvent,
) -> impl Future<Output = Result<(), EventError>> + Send + use<S>
where
    S: Service<ReceivedEvent, Response = ()>,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let started = Instant::now();
    let call = service.call(event);
    async move {
        call.await
            .map_err(|error| EventError::from_service_error(error.into(), started.elapsed()))
    }
}

/// Waits until `service` is ready, then calls it with `event`.
pub(crate) async fn ready_then_call<S>(
    service: &mut S,
    event: ReceivedEvent,
) -> Result<(), EventError>
where
    S: Service<ReceivedEvent, Response = ()>,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    service
        .ready()
        .await
        .map_err(|error| EventError::from_service_error(error.into(), Duration::ZERO))?;
    call_mapped(service, event).await
}

/// A [`Handler`] as a tower service (always ready), for composing this
/// crate's layers — or any tower layer — around a handler without a
/// [`Router`](super::Router).
///
/// ```
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt};
/// use saas_core::TenantId;
/// use saas_events::Event;
/// use saas_events::middleware::TimeoutLayer;
/// use saas_events::router::{HandlerService, ReceivedEvent, handler_fn};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let handler = handler_fn(|_event: ReceivedEvent| async { Ok(()) });
/// let service = TimeoutLayer::new(Duration::from_secs(5)).layer(HandlerService::new(handler));
/// let event = Event::new(TenantId::new(), "order.placed", "/shop", &1u64)?;
/// service.oneshot(ReceivedEvent::new(event.into(), "orders", 1)).await?;
/// # Ok::<(), saas_events::EventError>(())
/// # }).unwrap();
/// ```
pub struct HandlerService<H: ?Sized> {
    handler: Arc<H>,
}

impl<H> HandlerService<H> {
    /// Serves events with `handler`.
    pub fn new(handler: H) -> Self {
        Self {
            handler: Arc::new(handler),
        }
    }
}

impl<H: ?Sized> HandlerService<H> {
    /// Serves events with a shared handler (a
    /// [`SharedHandler`](super::SharedHandler), say).
    pub fn from_shared(handler: Arc<H>) -> Self {
        Self { handler }
    }
}

impl<H: ?Sized> Clone for HandlerService<H> {
    fn clone(&self) -> Self {
        Self {
            handler: Arc::clone(&self.handler),
        }
    }
}

impl<H: fmt::Debug + ?Sized> fmt::Debug for HandlerService<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HandlerService")
            .field(&self.handler)
            .finish()
    }
}

impl<H: Handler + ?Sized + 'static> Service<ReceivedEvent> for HandlerService<H> {
    type Response = ();
    type Error = EventError;
    type Future = EventFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), EventError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, event: ReceivedEvent) -> EventFuture {
        let handler = Arc::clone(&self.handler);
        Box::pin(async move { handler.handle(event).await })
    }
}

/// A foreign layer's service with its error mapped to [`EventError`], so
/// the next layer out (and the router) sees this crate's error.
#[derive(Clone, Debug)]
pub(crate) struct MapEventError<S> {
    inner: S,
}

impl<S> MapEventError<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<ReceivedEvent> for MapEventError<S>
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
        Box::pin(call_mapped(&mut self.inner, event))
    }
}

/// A service as a [`Handler`]: each event waits for a clone of the service
/// to be ready, then calls it.
#[derive(Debug)]
pub(crate) struct ServiceHandler {
    service: BoxEventService,
}

impl ServiceHandler {
    pub(crate) fn new(service: BoxEventService) -> Self {
        Self { service }
    }
}

#[async_trait]
impl Handler for ServiceHandler {
    async fn handle(&self, event: ReceivedEvent) -> Result<(), EventError> {
        let mut service = self.service.clone();
        ready_then_call(&mut service, event).await
    }
}
