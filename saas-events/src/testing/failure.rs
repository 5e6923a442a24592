//! Conformance: nack, delays, crashes and dead letters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use saas_core::TenantId;

use super::{must, next_delivery, skip, unique_topic};
use crate::envelope::Event;
use crate::error::EventError;
use crate::middleware::{
    DEAD_LETTER_ATTEMPTS, DEAD_LETTER_REASON, DEAD_LETTER_TOPIC, DeadLetterLayer, RedriveOptions,
    redrive,
};
use crate::router::{ReceivedEvent, Router, handler_fn};
use crate::traits::{Publisher, SubscribeOptions, Subscriber};

fn event(n: u32) -> Event {
    must(
        Event::new(TenantId::new(), "conformance.failing", "/conformance", &n),
        "building an event",
    )
}

/// A nacked delivery comes back as the next attempt.
pub async fn nack_redelivery(p: Arc<dyn Publisher>, s: Arc<dyn Subscriber>) {
    let topic = unique_topic("nack");
    let mut sub = must(
        s.subscribe(&topic, SubscribeOptions::new()).await,
        "subscribing",
    );
    let sent = event(1);
    must(p.publish(&topic, sent.clone()).await, "publishing");
    for attempt in 1..=3 {
        let delivery = next_delivery(&mut sub, "a nacked event").await;
        assert_eq!(delivery.event().id(), sent.id());
        assert_eq!(delivery.attempt(), attempt);
        if attempt < 3 {
            must(delivery.nack(None).await, "nacking");
        } else {
            must(delivery.ack().await, "acking");
        }
    }
}

/// `nack(Some(delay))` redelivers no sooner than `delay`.
pub async fn delayed_retry(p: Arc<dyn Publisher>, s: Arc<dyn Subscriber>) {
    if !s.capabilities().delayed_delivery {
        return skip("delayed_retry", "delayed_delivery");
    }
    let topic = unique_topic("delay");
    let mut sub = must(
        s.subscribe(&topic, SubscribeOptions::new()).await,
        "subscribing",
    );
    must(p.publish(&topic, event(1)).await, "publishing");
    let delivery = next_delivery(&mut sub, "the event").await;
    let delay = Duration::from_millis(300);
    let nacked_at = tokio::time::Instant::now();
    must(delivery.nack(Some(delay)).await, "nacking with a delay");
    let again = next_delivery(&mut sub, "the delayed redelivery").await;
    assert!(nacked_at.elapsed() >= delay, "redelivered before the delay");
    assert_eq!(again.attempt(), 2);
    must(again.ack().await, "acking");
}

/// A consumer that crashes holding a delivery (drops it unsettled) does not
/// lose it: another consumer of the group gets it as the next attempt, and
/// a router whose handler panics does the same.
pub async fn crash_mid_handler(p: Arc<dyn Publisher>, s: Arc<dyn Subscriber>) {
    if !s.capabilities().consumer_groups {
        return skip("crash_mid_handler", "consumer_groups");
    }
    let topic = unique_topic("crash");
    let options = SubscribeOptions::new().with_group("workers");
    let mut crashing = must(s.subscribe(&topic, options.clone()).await, "subscribing");
    let mut healthy = must(s.subscribe(&topic, options).await, "subscribing");
    let sent = event(1);
    must(p.publish(&topic, sent.clone()).await, "publishing");
    let delivery = next_delivery(&mut crashing, "the event").await;
    let crashed = tokio::spawn(async move {
        let _in_hand = delivery;
        panic!("simulated crash mid-handler (expected in this test)");
    })
    .await;
    assert!(crashed.is_err());
    let again = next_delivery(&mut healthy, "the redelivery after the crash").await;
    assert_eq!(again.event().id(), sent.id());
    assert_eq!(again.attempt(), 2);
    must(again.ack().await, "acking");
    drop(crashing);
    drop(healthy);

    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let router = Router::new().route(
        "conformance.failing",
        handler_fn(move |_event: ReceivedEvent| {
            let attempt = seen.fetch_add(1, Ordering::SeqCst);
            async move {
                if attempt == 0 {
                    panic!("handler panic (expected in this test)");
                }
                Ok(())
            }
        }),
    );
    let topic = unique_topic("crash-router");
    let running = must(
        router
            .run(&*s, &topic, SubscribeOptions::new().with_group("r"))
            .await,
        "starting the router",
    );
    must(p.publish(&topic, event(2)).await, "publishing");
    let waited = tokio::time::timeout(super::WAIT, async {
        while calls.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the event was not redelivered after the panic"
    );
    running.shutdown().await;
}

/// A router with a dead-letter layer parks an event after N failed
/// attempts, with the reason, attempt count and topic attached.
pub async fn dead_lettering(p: Arc<dyn Publisher>, s: Arc<dyn Subscriber>) {
    let topic = unique_topic("dlq-source");
    let dead = unique_topic("dlq");
    let mut parked = must(
        s.subscribe(&dead, SubscribeOptions::new()).await,
        "subscribing to the DLQ",
    );
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let layer = must(
        DeadLetterLayer::new(Arc::clone(&p), dead.clone(), 3),
        "building the layer",
    );
    let router = Router::new()
        .route(
            "conformance.failing",
            handler_fn(move |_event: ReceivedEvent| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Err(EventError::handler("always fails")) }
            }),
        )
        .layer(layer);
    let running = must(
        router.run(&*s, &topic, SubscribeOptions::new()).await,
        "starting",
    );
    let sent = event(1);
    must(p.publish(&topic, sent.clone()).await, "publishing");
    let delivery = next_delivery(&mut parked, "the dead letter").await;
    let letter = delivery.event();
    assert_eq!(letter.id(), sent.id());
    assert_eq!(
        letter
            .extension(DEAD_LETTER_ATTEMPTS)
            .and_then(|v| v.as_i64()),
        Some(3)
    );
    assert_eq!(
        letter.extension(DEAD_LETTER_TOPIC).and_then(|v| v.as_str()),
        Some(topic.as_str())
    );
    let reason = letter
        .extension(DEAD_LETTER_REASON)
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    assert!(reason.contains("always fails"), "reason was {reason:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    must(delivery.ack().await, "acking");

    // A permanent rejection is parked on the first attempt.
    let rejected = must(
        Event::new(
            TenantId::new(),
            "conformance.unknown-type",
            "/conformance",
            &0,
        ),
        "building",
    );
    must(p.publish(&topic, rejected.clone()).await, "publishing");
    let delivery = next_delivery(&mut parked, "the rejected event").await;
    assert_eq!(delivery.event().id(), rejected.id());
    assert_eq!(
        delivery
            .event()
            .extension(DEAD_LETTER_ATTEMPTS)
            .and_then(|v| v.as_i64()),
        Some(1)
    );
    must(delivery.ack().await, "acking");
    running.shutdown().await;
}

/// Dead letters redriven go back to their topic without the dead-letter
/// extensions.
pub async fn redrive_dead_letters(p: Arc<dyn Publisher>, s: Arc<dyn Subscriber>) {
    let caps = s.capabilities();
    if !caps.consumer_groups {
        return skip("redrive_dead_letters", "consumer_groups");
    }
    let topic = unique_topic("redrive-source");
    let dead = unique_topic("redrive-dlq");
    // Create the redrive group before dead letters arrive (needed without replay).
    let group = must(
        s.subscribe(&dead, SubscribeOptions::new().with_group("redrive"))
            .await,
        "creating the redrive group",
    );
    group.close().await;
    let mut source = must(
        s.subscribe(&topic, SubscribeOptions::new()).await,
        "subscribing",
    );
    let letter = must(
        event(7)
            .with_extension(DEAD_LETTER_REASON, "boom")
            .and_then(|e| e.with_extension(DEAD_LETTER_ATTEMPTS, 5i64))
            .and_then(|e| e.with_extension(DEAD_LETTER_TOPIC, topic.as_str())),
        "building a dead letter",
    );
    must(
        p.publish(&dead, letter.clone()).await,
        "publishing a dead letter",
    );
    let options = RedriveOptions::default().with_idle(Duration::from_millis(500));
    let moved = must(redrive(&*s, &*p, &dead, options).await, "redriving");
    assert_eq!(moved, 1);
    let delivery = next_delivery(&mut source, "the redriven event").await;
    assert_eq!(delivery.event().id(), letter.id());
    assert_eq!(delivery.event().extensions().count(), 0);
    must(delivery.ack().await, "acking");
}
