//! The router over the in-memory bus: dispatch, concurrency with per-key
//! order, redelivery delays, shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saas_events::middleware::{Backoff, SeededRandom};
use saas_events::router::{ReceivedEvent, Router, handler_fn};
use saas_events::{Event, EventError, InMemoryBus, InMemoryConfig, Publisher, SubscribeOptions};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn dispatches_by_type_with_a_fallback() {
    let bus = InMemoryBus::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let (a, b) = (tx.clone(), tx);
    let router = Router::new()
        .route(
            "a",
            handler_fn(move |e: ReceivedEvent| {
                let a = a.clone();
                async move {
                    a.send(format!("a:{}", e.data_as::<u32>()?)).ok();
                    Ok(())
                }
            }),
        )
        .fallback(handler_fn(move |e: ReceivedEvent| {
            let b = b.clone();
            async move {
                b.send(format!("other:{}", e.event().event_type())).ok();
                Ok(())
            }
        }));
    let running = router
        .run(&bus, "mixed", SubscribeOptions::new())
        .await
        .unwrap();
    bus.publish("mixed", Event::new(None, "a", "/t", &1).unwrap())
        .await
        .unwrap();
    bus.publish("mixed", Event::new(None, "z", "/t", &2).unwrap())
        .await
        .unwrap();
    assert_eq!(timeout(WAIT, rx.recv()).await.unwrap().unwrap(), "a:1");
    assert_eq!(timeout(WAIT, rx.recv()).await.unwrap().unwrap(), "other:z");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_concurrency_keeps_order_per_key() {
    // Backend ordering off: the router alone must keep per-key order.
    let bus = InMemoryBus::with_config(InMemoryConfig::default().with_ordering_per_key(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let log: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let (done_tx, mut done) = mpsc::unbounded_channel::<()>();
    let (f, p, l) = (Arc::clone(&in_flight), Arc::clone(&peak), Arc::clone(&log));
    let router = Router::new()
        .route(
            "n",
            handler_fn(move |e: ReceivedEvent| {
                let (f, p, l, done) = (
                    Arc::clone(&f),
                    Arc::clone(&p),
                    Arc::clone(&l),
                    done_tx.clone(),
                );
                async move {
                    let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    let n: u32 = e.data_as()?;
                    tokio::time::sleep(Duration::from_millis(u64::from(n % 3))).await;
                    let key = e.event().partition_key().unwrap_or_default();
                    l.lock().unwrap().entry(key).or_default().push(n);
                    f.fetch_sub(1, Ordering::SeqCst);
                    done.send(()).ok();
                    Ok(())
                }
            }),
        )
        .concurrency(4);
    let running = router
        .run(&bus, "numbers", SubscribeOptions::new())
        .await
        .unwrap();
    let events: Vec<Event> = (0..200)
        .map(|n| {
            Event::new(None, "n", "/t", &n)
                .unwrap()
                .with_partition_key(format!("k{}", n % 8))
        })
        .collect();
    bus.publish_batch("numbers", events).await.unwrap();
    for _ in 0..200 {
        timeout(WAIT, done.recv()).await.unwrap().unwrap();
    }
    running.shutdown().await;
    assert!(
        peak.load(Ordering::SeqCst) <= 4,
        "more than 4 handlers ran at once"
    );
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 8);
    for (key, seen) in log.iter() {
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {seen:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn failed_events_are_redelivered_after_the_backoff() {
    let bus = InMemoryBus::new();
    let calls: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let seen = Arc::clone(&calls);
    let backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(60))
        .with_jitter(0.0)
        .with_random(Arc::new(SeededRandom::new(0)));
    let router = Router::new()
        .route(
            "t",
            handler_fn(move |e: ReceivedEvent| {
                seen.lock().unwrap().push((e.attempt(), Instant::now()));
                async move {
                    if e.attempt() < 3 {
                        Err(EventError::handler("not yet"))
                    } else {
                        Ok(())
                    }
                }
            }),
        )
        .nack_backoff(backoff);
    let running = router
        .run(&bus, "slow", SubscribeOptions::new())
        .await
        .unwrap();
    bus.publish("slow", Event::new(None, "t", "/t", &0).unwrap())
        .await
        .unwrap();
    timeout(Duration::from_secs(60), async {
        while calls.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    running.shutdown().await;
    let calls = calls.lock().unwrap();
    let attempts: Vec<u32> = calls.iter().map(|c| c.0).collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert!(calls[1].1 - calls[0].1 >= Duration::from_secs(2));
    assert!(calls[2].1 - calls[1].1 >= Duration::from_secs(4));
}

#[tokio::test]
async fn closing_the_bus_stops_the_router() {
    let bus = InMemoryBus::new();
    let router = Router::new().route("t", handler_fn(|_e: ReceivedEvent| async { Ok(()) }));
    let running = router
        .run(&bus, "closing", SubscribeOptions::new())
        .await
        .unwrap();
    bus.close();
    timeout(WAIT, async {
        while !running.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert!(matches!(
        bus.publish("closing", Event::new(None, "t", "/t", &0).unwrap())
            .await,
        Err(EventError::Closed)
    ));
}
