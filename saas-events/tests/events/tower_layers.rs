//! The router with tower's own layers (`timeout`, `limit`, `load_shed`)
//! and foreign ones: layer order, readiness across workers, and how a
//! foreign error becomes an `EventError`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use saas_core::TenantId;
use saas_events::middleware::{
    Backoff, DEAD_LETTER_ATTEMPTS, DEAD_LETTER_REASON, DeadLetterLayer, RetryLayer, SeededRandom,
};
use saas_events::router::{ReceivedEvent, Router, handler_fn};
use saas_events::{
    BoxError, Event, EventError, InMemoryBus, InMemoryConfig, Publisher, SubscribeOptions,
    Subscriber,
};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::{Layer, Service, ServiceExt};

/// A failure guard only: no test expects to wait this long.
const WAIT: Duration = Duration::from_secs(30);

fn received(event_type: &str) -> ReceivedEvent {
    let event = Event::new(TenantId::new(), event_type, "/test", &1u32).unwrap();
    ReceivedEvent::new(Arc::new(event), "topic", 1)
}

fn ok_handler() -> impl saas_events::router::Handler {
    handler_fn(|_e: ReceivedEvent| async { Ok(()) })
}

/// A slow handler under `tower::timeout` (inner), the crate's retry and
/// dead-letter layers (outer): every try is cut off as a retryable
/// timeout, retried in place, and after the last retry the event is
/// dead-lettered with the timeout as its reason, and acked.
#[tokio::test(start_paused = true)]
async fn tower_timeout_under_retry_and_dead_letter_parks_a_slow_event() {
    let bus = InMemoryBus::new();
    let publisher: Arc<dyn Publisher> = Arc::new(bus.clone());
    let mut parked = bus
        .subscribe("slow.dead", SubscribeOptions::new())
        .await
        .unwrap();
    let tries = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&tries);
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
        .with_random(Arc::new(SeededRandom::new(7)));
    let router = Router::new()
        .route(
            "slow",
            handler_fn(move |_e: ReceivedEvent| {
                counted.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(())
                }
            }),
        )
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(1)))
        .layer(RetryLayer::new(2, backoff))
        .layer(DeadLetterLayer::new(publisher, "slow.dead", 1).unwrap());
    let running = router
        .run(&bus, "slow", SubscribeOptions::new().with_group("g"))
        .await
        .unwrap();
    bus.publish("slow", Event::new(None, "slow", "/t", &0).unwrap())
        .await
        .unwrap();

    let delivery = timeout(WAIT, parked.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let letter = delivery.event().clone();
    delivery.ack().await.unwrap();
    // One try and two retries, each cut off by the timeout.
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    let reason = letter
        .extension(DEAD_LETTER_REASON)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(reason.starts_with("timed out"), "reason: {reason}");
    assert_eq!(
        letter
            .extension(DEAD_LETTER_ATTEMPTS)
            .and_then(|v| v.as_i64()),
        Some(1)
    );
    // Dead-lettered means acked: the event is not delivered again.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    running.shutdown().await;
}

/// `ConcurrencyLimitLayer::new(1)` over four workers: each worker waits
/// for its clone of the pipeline to be ready, so handlers of different
/// partition keys (different workers) never overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_serialises_handlers_across_workers() {
    let bus = InMemoryBus::with_config(InMemoryConfig::default().with_ordering_per_key(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (done_tx, mut done) = mpsc::unbounded_channel::<u32>();
    let (f, p) = (Arc::clone(&in_flight), Arc::clone(&peak));
    let router = Router::new()
        .route(
            "n",
            handler_fn(move |e: ReceivedEvent| {
                let (f, p, done) = (Arc::clone(&f), Arc::clone(&p), done_tx.clone());
                async move {
                    let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    // Long enough for the other workers to start theirs
                    // if nothing held them back.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    f.fetch_sub(1, Ordering::SeqCst);
                    done.send(e.data_as()?).ok();
                    Ok(())
                }
            }),
        )
        .layer(ConcurrencyLimitLayer::new(1))
        .concurrency(4);
    let running = router
        .run(&bus, "limited", SubscribeOptions::new())
        .await
        .unwrap();
    let events: Vec<Event> = (0..40u32)
        .map(|n| {
            Event::new(None, "n", "/t", &n)
                .unwrap()
                .with_partition_key(format!("k{}", n % 8))
        })
        .collect();
    bus.publish_batch("limited", events).await.unwrap();
    let mut handled = Vec::new();
    for _ in 0..40 {
        handled.push(timeout(WAIT, done.recv()).await.unwrap().unwrap());
    }
    running.shutdown().await;
    handled.sort_unstable();
    assert_eq!(handled, (0..40).collect::<Vec<u32>>());
    assert_eq!(
        peak.load(Ordering::SeqCst),
        1,
        "handlers overlapped under a limit of one"
    );
}

/// A handler that panics fails its delivery (nacked, delivered again) and
/// gives back its concurrency permit: with a limit of one, the redelivery
/// and a later event are still handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_its_delivery_and_frees_its_permit() {
    let bus = InMemoryBus::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<(u32, u32)>();
    let router = Router::new()
        .route(
            "p",
            handler_fn(move |e: ReceivedEvent| {
                let tx = tx.clone();
                async move {
                    let n: u32 = e.data_as()?;
                    assert!(n != 0 || e.attempt() > 1, "first try of event 0 panics");
                    tx.send((n, e.attempt())).ok();
                    Ok(())
                }
            }),
        )
        .layer(ConcurrencyLimitLayer::new(1))
        .concurrency(2);
    let running = router
        .run(&bus, "panics", SubscribeOptions::new())
        .await
        .unwrap();
    for n in 0..2u32 {
        let event = Event::new(None, "p", "/t", &n)
            .unwrap()
            .with_partition_key("one");
        bus.publish("panics", event).await.unwrap();
    }
    let first = timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    let second = timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    running.shutdown().await;
    assert_eq!([first, second], [(0, 2), (1, 1)]);
}

/// Records its name when called, then calls the inner service: a layer
/// from outside this crate, with the inner error type unchanged.
#[derive(Clone)]
struct Recording<S> {
    name: &'static str,
    log: Arc<Mutex<Vec<&'static str>>>,
    inner: S,
}

#[derive(Clone)]
struct RecordingLayer {
    name: &'static str,
    log: Arc<Mutex<Vec<&'static str>>>,
}

impl<S> Layer<S> for RecordingLayer {
    type Service = Recording<S>;

    fn layer(&self, inner: S) -> Recording<S> {
        Recording {
            name: self.name,
            log: Arc::clone(&self.log),
            inner,
        }
    }
}

impl<S: Service<ReceivedEvent>> Service<ReceivedEvent> for Recording<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, event: ReceivedEvent) -> S::Future {
        self.log.lock().unwrap().push(self.name);
        self.inner.call(event)
    }
}

/// As in axum, the last layer added is the outermost: an event meets it
/// first.
#[tokio::test]
async fn the_last_added_layer_is_outermost() {
    let log: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let seen = Arc::clone(&log);
    let layer = |name| RecordingLayer {
        name,
        log: Arc::clone(&log),
    };
    let service = Router::new()
        .fallback(handler_fn(move |_e: ReceivedEvent| {
            seen.lock().unwrap().push("handler");
            async { Ok(()) }
        }))
        .layer(layer("first added"))
        .layer(layer("second added"))
        .layer(layer("third added"))
        .into_service();
    service.oneshot(received("any")).await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["third added", "second added", "first added", "handler"]
    );
}

/// Fails every call with the error `make` builds: a foreign layer whose
/// error type is `BoxError`.
#[derive(Clone)]
struct Failing {
    make: fn() -> BoxError,
}

impl<S> Layer<S> for Failing {
    type Service = Failing;

    fn layer(&self, _inner: S) -> Failing {
        self.clone()
    }
}

impl Service<ReceivedEvent> for Failing {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _event: ReceivedEvent) -> Self::Future {
        let error = (self.make)();
        Box::pin(async move { Err(error) })
    }
}

async fn error_through(make: fn() -> BoxError) -> EventError {
    Router::new()
        .fallback(ok_handler())
        .layer(Failing { make })
        .into_service()
        .oneshot(received("any"))
        .await
        .unwrap_err()
}

/// A foreign layer's error becomes an `EventError`: an `EventError` it
/// boxed is itself again, anything else a retryable handler failure that
/// keeps the original as its source; tower's `Elapsed` is a timeout and
/// `Overloaded` a retryable failure.
#[tokio::test(start_paused = true)]
async fn foreign_layer_errors_become_event_errors() {
    let error = error_through(|| Box::new(std::io::Error::other("disk on fire"))).await;
    let EventError::Handler { source } = &error else {
        panic!("expected a handler error, got {error:?}");
    };
    assert!(source.is::<std::io::Error>(), "source: {source:?}");
    assert!(error.is_retryable());

    let error = error_through(|| Box::new(EventError::rejected("malformed order"))).await;
    assert!(
        matches!(&error, EventError::Rejected { reason } if reason == "malformed order"),
        "{error:?}"
    );
    assert!(!error.is_retryable());

    let error = Router::new()
        .fallback(handler_fn(|_e: ReceivedEvent| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }))
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(1)))
        .into_service()
        .oneshot(received("any"))
        .await
        .unwrap_err();
    assert!(matches!(error, EventError::Timeout { .. }), "{error:?}");
    assert!(error.is_retryable());

    // A limit of one under load shedding: while one clone holds the only
    // permit, another is shed at once instead of waiting.
    let service = Router::new()
        .fallback(ok_handler())
        .layer(ConcurrencyLimitLayer::new(1))
        .layer(LoadShedLayer::new())
        .into_service();
    let mut holder = service.clone();
    holder.ready().await.unwrap();
    let error = service.oneshot(received("any")).await.unwrap_err();
    let EventError::Handler { source } = &error else {
        panic!("expected a handler error, got {error:?}");
    };
    assert!(
        source.is::<tower::load_shed::error::Overloaded>(),
        "source: {source:?}"
    );
    assert!(error.is_retryable());
    // The holder's permit was reserved for it, and still serves it.
    holder.call(received("any")).await.unwrap();
}
