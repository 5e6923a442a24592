//! Dispatch by event type to handlers, through middleware, with bounded
//! concurrency that keeps order per partition key.

mod handler;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::delivery::{Delivery, Subscription};
use crate::error::EventError;
use crate::middleware::Backoff;
use crate::traits::{SubscribeOptions, Subscriber};

pub use handler::{Handler, HandlerFn, Middleware, ReceivedEvent, SharedHandler, handler_fn};

/// Routes events to handlers by their `type`.
///
/// A handler's `Ok` acks the delivery; an error nacks it (after the
/// [`Router::nack_backoff`] delay, if set) unless a middleware dealt with
/// it. An event whose type has no handler fails with
/// [`EventError::NoHandler`] (not retryable, so the dead-letter layer
/// parks it at once); give a [`Router::fallback`] to handle those instead.
///
/// Deliveries are handled by `concurrency` workers; events with the same
/// partition key always go to the same worker, so they are handled in the
/// order received. A handler that panics counts as failed.
///
/// ```
/// use std::time::Duration;
/// use saas_core::TenantId;
/// use saas_events::{Event, InMemoryBus, Publisher, SubscribeOptions};
/// use saas_events::middleware::{TimeoutLayer, TracingLayer};
/// use saas_events::router::{ReceivedEvent, Router, handler_fn};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let bus = InMemoryBus::new();
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let router = Router::new()
///     .route("order.placed", handler_fn(move |event: ReceivedEvent| {
///         let tx = tx.clone();
///         async move { tx.send(event.data_as::<u64>()?).ok(); Ok(()) }
///     }))
///     .layer(TracingLayer::new())
///     .layer(TimeoutLayer::new(Duration::from_secs(5)))
///     .concurrency(4);
/// let running = router.run(&bus, "orders", SubscribeOptions::new().with_group("shop")).await?;
///
/// bus.publish("orders", Event::new(TenantId::new(), "order.placed", "/shop", &7u64)?).await?;
/// assert_eq!(rx.recv().await, Some(7));
/// running.shutdown().await;
/// # Ok::<(), saas_events::EventError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct Router {
    routes: HashMap<String, SharedHandler>,
    fallback: Option<SharedHandler>,
    layers: Vec<Arc<dyn Middleware>>,
    concurrency: usize,
    nack_backoff: Option<Backoff>,
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

    /// Adds a middleware around every handler; the first added is outermost.
    pub fn layer(mut self, middleware: impl Middleware + 'static) -> Self {
        self.layers.push(Arc::new(middleware));
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

    /// The dispatcher wrapped in the middleware: one handler for all routes.
    pub fn into_handler(self) -> SharedHandler {
        let mut handler: SharedHandler = Arc::new(Dispatch {
            routes: self.routes,
            fallback: self.fallback,
        });
        for layer in self.layers.iter().rev() {
            handler = layer.wrap(handler);
        }
        handler
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
        let handler = self.into_handler();
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(pump(subscription, handler, backoff, workers, stop_rx));
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

#[derive(Debug)]
struct Dispatch {
    routes: HashMap<String, SharedHandler>,
    fallback: Option<SharedHandler>,
}

#[async_trait]
impl Handler for Dispatch {
    async fn handle(&self, event: ReceivedEvent) -> Result<(), EventError> {
        let handler = self
            .routes
            .get(event.event().event_type())
            .or(self.fallback.as_ref());
        match handler {
            Some(handler) => handler.handle(event).await,
            None => Err(EventError::NoHandler {
                event_type: event.event().event_type().to_owned(),
            }),
        }
    }
}

async fn pump(
    mut subscription: Subscription,
    handler: SharedHandler,
    backoff: Option<Backoff>,
    workers: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut lanes = Vec::with_capacity(workers);
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = mpsc::channel::<Delivery>(1);
        lanes.push(tx);
        tasks.push(tokio::spawn(worker(
            rx,
            Arc::clone(&handler),
            backoff.clone(),
        )));
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
    handler: SharedHandler,
    backoff: Option<Backoff>,
) {
    while let Some(delivery) = rx.recv().await {
        let event = ReceivedEvent::from_delivery(&delivery);
        let handler = Arc::clone(&handler);
        // Its own task, so a panicking handler fails this event only.
        let outcome = tokio::spawn(async move { handler.handle(event).await }).await;
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
