//! Dispatch by event type to handlers, through tower layers, with bounded
//! concurrency that keeps order per partition key.

mod handler;
mod service;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tower_layer::Layer;
use tower_service::Service;

use crate::delivery::{Delivery, Subscription};
use crate::error::{BoxError, EventError};
use crate::middleware::Backoff;
use crate::observe::{HandlerTimes, Outcome};
use crate::traits::{SubscribeOptions, Subscriber};

pub use handler::{Handler, HandlerFn, ReceivedEvent, SharedHandler, handler_fn};
pub use service::{BoxEventService, HandlerService};
pub(crate) use service::{EventFuture, call_mapped, poll_ready_mapped, ready_then_call};

use service::{MapEventError, ServiceHandler};

/// Routes events to handlers by their `type`, through tower layers.
///
/// A handler's `Ok` acks the delivery; an error nacks it (after the
/// [`Router::nack_backoff`] delay, if set) unless a layer dealt with it.
/// An event whose type has no handler fails with [`EventError::NoHandler`]
/// (not retryable, so the dead-letter layer parks it at once); give a
/// [`Router::fallback`] to handle those instead.
///
/// The pipeline is a tower [`Service`]: the dispatcher under the layers
/// added with [`Router::layer`] — this crate's ([`crate::middleware`]) and
/// any other tower layer (`tower::timeout`, `tower::limit`,
/// `tower::load_shed`…). As in axum, **the last layer added is the
/// outermost**: an event passes through the layers from the last added to
/// the first, then reaches the handler.
///
/// Deliveries are handled by `concurrency` workers; events with the same
/// partition key always go to the same worker, so they are handled in the
/// order received. For each delivery a worker waits until (its clone of)
/// the pipeline is ready, then calls it, so a
/// `ConcurrencyLimitLayer` bounds handlers across all workers. A handler
/// that panics counts as failed.
///
/// ```
/// use std::time::Duration;
/// use saas_core::TenantId;
/// use saas_events::{Event, InMemoryBus, Publisher, SubscribeOptions};
/// use saas_events::middleware::{Backoff, RetryLayer, TracingLayer};
/// use saas_events::router::{ReceivedEvent, Router, handler_fn};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let bus = InMemoryBus::new();
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
/// // An event goes through TracingLayer, then the concurrency limit, then
/// // RetryLayer, then the timeout, and reaches the handler.
/// let router = Router::new()
///     .route("order.placed", handler_fn(move |event: ReceivedEvent| {
///         let tx = tx.clone();
///         async move { tx.send(event.data_as::<u64>()?).ok(); Ok(()) }
///     }))
///     // First added, innermost: bounds each try.
///     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
///     // Retries a try that failed or timed out.
///     .layer(RetryLayer::new(2, backoff))
///     // At most two events handled at once, across all workers.
///     .layer(tower::limit::ConcurrencyLimitLayer::new(2))
///     // Last added, outermost: one span per delivery.
///     .layer(TracingLayer::new())
///     .concurrency(4);
/// let running = router.run(&bus, "orders", SubscribeOptions::new().with_group("shop")).await?;
///
/// bus.publish("orders", Event::new(TenantId::new(), "order.placed", "/shop", &7u64)?).await?;
/// assert_eq!(rx.recv().await, Some(7));
/// running.shutdown().await;
/// # Ok::<(), saas_events::EventError>(())
/// # }).unwrap();
/// ```
pub struct Router {
    routes: HashMap<String, SharedHandler>,
    fallback: Option<SharedHandler>,
    /// Each wraps the pipeline built so far; applied in the order added.
    layers: Vec<WrapFn>,
    concurrency: usize,
    nack_backoff: Option<Backoff>,
}

type WrapFn = Box<dyn FnOnce(BoxEventService) -> BoxEventService + Send + Sync>;

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes)
            .field("fallback", &self.fallback)
            .field("layers", &self.layers.len())
            .field("concurrency", &self.concurrency)
            .field("nack_backoff", &self.nack_backoff)
            .finish()
    }
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// A router with no routes, one worker and immediate redelivery on failure.
    pub fn new() -> Self {
        Self {
            routes: HashMap::new(),
            fallback: None,
            layers: Vec::new(),
            concurrency: 1,
            nack_backoff: None,
        }
    }

    /// Handles events of `event_type` with `handler` (replacing any previous one).
    pub fn route(mut self, event_type: impl Into<String>, handler: impl Handler + 'static) -> Self {
        self.routes.insert(event_type.into(), Arc::new(handler));
        self
    }

    /// Handles events whose type has no route.
    pub fn fallback(mut self, handler: impl Handler + 'static) -> Self {
        self.fallback = Some(Arc::new(handler));
        self
    }

    /// Adds a tower layer around the pipeline built so far: **the last
    /// added is the outermost**, as with axum's `Router::layer`. Layers
    /// wrap every route and the fallback, whether added before or after
    /// them.
    ///
    /// Any layer fits whose service handles [`ReceivedEvent`]s and answers
    /// `()`, is `Clone + Send + Sync` and has a `Send` future. Its error
    /// becomes an [`EventError`] before the next layer out sees it: an
    /// `EventError` stays itself, `tower::timeout`'s `Elapsed` becomes
    /// [`EventError::Timeout`], and anything else (`tower::load_shed`'s
    /// `Overloaded`, say) a retryable [`EventError::Handler`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use saas_events::middleware::{Backoff, RetryLayer};
    /// use saas_events::router::{Router, handler_fn};
    ///
    /// let router = Router::new()
    ///     .fallback(handler_fn(|_event| async { Ok(()) }))
    ///     // Inner: each try gets 2 s...
    ///     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(2)))
    ///     // ...outer: a timed-out try is retried up to 3 times.
    ///     .layer(RetryLayer::new(3, Backoff::new(Duration::from_millis(50), Duration::from_secs(1))));
    /// # let _ = router;
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxEventService> + Send + Sync + 'static,
        L::Service: Service<ReceivedEvent, Response = ()> + Clone + Send + Sync + 'static,
        <L::Service as Service<ReceivedEvent>>::Error: Into<BoxError>,
        <L::Service as Service<ReceivedEvent>>::Future: Send + 'static,
    {
        self.layers.push(Box::new(move |inner| {
            BoxEventService::new(MapEventError::new(layer.layer(inner)))
        }));
        self
    }

    /// How many events are handled at once (at least 1; default 1).
    pub fn concurrency(mut self, workers: usize) -> Self {
        self.concurrency = workers.max(1);
        self
    }

    /// Delays redelivery after a failed attempt by `backoff` (exponential,
    /// with jitter), using the backend's delayed delivery.
    pub fn nack_backoff(mut self, backoff: Backoff) -> Self {
        self.nack_backoff = Some(backoff);
        self
    }

    /// The dispatcher under the layers: one tower service for all routes.
    /// Call it like any tower service — wait for
    /// [`ready`](tower::ServiceExt::ready), then `call` — on a clone per
    /// event.
    pub fn into_service(self) -> BoxEventService {
        let mut service = BoxEventService::new(Dispatch {
            routes: Arc::new(self.routes),
            fallback: self.fallback,
        });
        for wrap in self.layers {
            service = wrap(service);
        }
        service
    }

    /// [`Router::into_service`] as a [`Handler`]: each event waits for the
    /// pipeline to be ready, then is handled.
    pub fn into_handler(self) -> SharedHandler {
        Arc::new(ServiceHandler::new(self.into_service()))
    }

    /// Subscribes to `topic` and handles its events on background tasks
    /// until [`RunningRouter::shutdown`] or the subscription ends.
    ///
    /// # Errors
    /// Whatever [`Subscriber::subscribe`] returns.
    pub async fn run(
        self,
        subscriber: &dyn Subscriber,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<RunningRouter, EventError> {
        let subscription = subscriber.subscribe(topic, options).await?;
        Ok(self.run_subscription(subscription))
    }

    /// Handles the deliveries of an existing subscription on background tasks.
    pub fn run_subscription(self, subscription: Subscription) -> RunningRouter {
        let workers = self.concurrency;
        let backoff = self.nack_backoff.clone();
        let service = self.into_service();
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(pump(subscription, service, backoff, workers, stop_rx));
        RunningRouter {
            stop: stop_tx,
            task,
        }
    }
}

/// A router running in the background. Dropping it stops the router like
/// [`RunningRouter::shutdown`], without waiting.
#[derive(Debug)]
pub struct RunningRouter {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningRouter {
    /// Stops taking new deliveries, lets the ones already taken finish, and
    /// closes the subscription.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Whether the router has stopped (the subscription ended).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Finds the event's handler; always ready.
#[derive(Debug, Clone)]
struct Dispatch {
    routes: Arc<HashMap<String, SharedHandler>>,
    fallback: Option<SharedHandler>,
}

impl Service<ReceivedEvent> for Dispatch {
    type Response = ();
    type Error = EventError;
    type Future = EventFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), EventError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, event: ReceivedEvent) -> EventFuture {
        let handler = self
            .routes
            .get(event.event().event_type())
            .or(self.fallback.as_ref())
            .map(Arc::clone);
        Box::pin(async move {
            match handler {
                Some(handler) => handler.handle(event).await,
                None => Err(EventError::NoHandler {
                    event_type: event.event().event_type().to_owned(),
                }),
            }
        })
    }
}

async fn pump(
    mut subscription: Subscription,
    service: BoxEventService,
    backoff: Option<Backoff>,
    workers: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut lanes = Vec::with_capacity(workers);
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = mpsc::channel::<Delivery>(1);
        lanes.push(tx);
        tasks.push(tokio::spawn(worker(rx, service.clone(), backoff.clone())));
    }
    let mut next_lane = 0usize;
    loop {
        let delivery = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            next = subscription.next() => next,
        };
        let delivery = match delivery {
            None => break,
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => {
                tracing::warn!(%error, "subscription error; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let lane = match delivery.event().partition_key() {
            Some(key) => {
                let mut hasher = DefaultHasher::new();
                key.hash(&mut hasher);
                (hasher.finish() % workers as u64) as usize
            }
            None => {
                next_lane = (next_lane + 1) % workers;
                next_lane
            }
        };
        if let Some(tx) = lanes.get(lane) {
            // A worker only goes away if its task ended; the delivery is
            // then dropped unsettled and redelivered.
            let _ = tx.send(delivery).await;
        }
    }
    drop(lanes);
    for task in tasks {
        let _ = task.await;
    }
    subscription.close().await;
}

async fn worker(
    mut rx: mpsc::Receiver<Delivery>,
    service: BoxEventService,
    backoff: Option<Backoff>,
) {
    let mut times = HandlerTimes::default();
    while let Some(delivery) = rx.recv().await {
        let event = ReceivedEvent::from_delivery(&delivery);
        let (tenant, started) = (event.event().tenant_id(), times.start());
        // A clone per delivery: readiness (a concurrency permit, say) is
        // reserved by the clone that is then called, as tower expects.
        let mut service = service.clone();
        // Its own task, so a panicking handler (or layer) fails this event
        // only.
        let outcome = tokio::spawn(async move { ready_then_call(&mut service, event).await }).await;
        let settled_as = match &outcome {
            Ok(Ok(())) => Outcome::Ack,
            Ok(Err(_)) => Outcome::Nack,
            Err(_) => Outcome::Panic,
        };
        times.record(tenant, settled_as, started);
        let settled = match outcome {
            Ok(Ok(())) => delivery.ack().await,
            Ok(Err(error)) => {
                tracing::debug!(%error, attempt = delivery.attempt(), "handler failed; nacking");
                let delay = backoff.as_ref().map(|b| b.delay(delivery.attempt()));
                delivery.nack(delay).await
            }
            Err(join_error) => {
                tracing::error!(error = %join_error, "handler panicked; nacking");
                delivery.nack(None).await
            }
        };
        if let Err(error) = settled {
            tracing::warn!(%error, "could not settle a delivery; it may be delivered again");
        }
    }
}
