//! RabbitMQ: the conformance suite against the CI broker, publisher
//! confirms, delayed nacks, tenant isolation, and the broker restarted
//! under live subscriptions.
//!
//! The restart tests stop and start the shared broker's application
//! (`rabbitmqctl stop_app` / `start_app`), so they take a lock every other
//! test here holds shared: no test sees the broker vanish unless it asked.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use saas_core::TenantId;
use saas_events::rabbitmq::{RabbitMqBus, RabbitMqConfig};
use saas_events::testing::unique_topic;
use saas_events::{
    Capabilities, Event, EventError, Publisher, StartFrom, SubscribeOptions, Subscriber,
    Subscription,
};
use saas_test_support::{Service, service_url, unique_name};
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use crate::support::{OnDrop, loses_nothing_across_two_restarts};

/// Held shared by every test using the CI broker, exclusively by a test
/// that restarts it.
static BROKER: LazyLock<Arc<RwLock<()>>> = LazyLock::new(|| Arc::new(RwLock::new(())));

/// Deletes every queue and exchange whose name starts with `prefix`.
async fn delete_prefixed(url: &str, prefix: &str) {
    let list = |what: &str| {
        Command::new("rabbitmqctl")
            .args([what, "-q", "--no-table-headers", "name"])
            .stderr(Stdio::null())
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::trim)
                    .filter(|name| name.starts_with(prefix))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let (queues, exchanges) = (list("list_queues"), list("list_exchanges"));
    let Ok(connection) = Connection::connect(url, ConnectionProperties::default()).await else {
        return;
    };
    let Ok(channel) = connection.create_channel().await else {
        return;
    };
    for queue in queues {
        let _ = channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
    }
    for exchange in exchanges {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), Default::default())
            .await;
    }
    let _ = connection.close(200, "done".into()).await;
}

/// The bus of one test: its own name prefix, whose queues and exchanges
/// are deleted when the test drops it.
#[derive(Debug)]
struct Fixture {
    bus: RabbitMqBus,
    _cleanup: OnDrop,
    _shared: OwnedRwLockReadGuard<()>,
}

#[async_trait]
impl Publisher for Fixture {
    async fn publish(&self, topic: &str, event: Event) -> Result<(), EventError> {
        self.bus.publish(topic, event).await
    }
    async fn publish_batch(&self, topic: &str, events: Vec<Event>) -> Result<(), EventError> {
        self.bus.publish_batch(topic, events).await
    }
    fn capabilities(&self) -> Capabilities {
        Publisher::capabilities(&self.bus)
    }
}

fn cleanup(url: String, prefix: String) -> OnDrop {
    OnDrop::new(move || async move { delete_prefixed(&url, &prefix).await })
}

async fn fixture_with(config: RabbitMqConfig) -> Option<(Arc<Fixture>, RabbitMqBus)> {
    let url = service_url(Service::RabbitMq, "saas-events RabbitMQ")?;
    let shared = Arc::clone(&BROKER).read_owned().await;
    let prefix = unique_name("ev");
    let bus = RabbitMqBus::connect(&url, config.with_prefix(&prefix).unwrap())
        .await
        .unwrap();
    let fixture = Fixture {
        bus: bus.clone(),
        _cleanup: cleanup(url, prefix),
        _shared: shared,
    };
    Some((Arc::new(fixture), bus))
}

async fn rabbitmq_backend() -> Option<(Arc<dyn Publisher>, Arc<dyn Subscriber>)> {
    let (fixture, bus) = fixture_with(RabbitMqConfig::default()).await?;
    Some((fixture, Arc::new(bus)))
}

// Per-key order is not offered (members of a group compete for one
// queue); `declared_capabilities` checks it is not declared while every
// other optional behaviour is.
mod conformance {
    saas_events::conformance_tests!(super::rabbitmq_backend(), without: [OrderingPerKey]);
}

async fn next(sub: &mut Subscription) -> saas_events::Delivery {
    tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("a delivery within 20 s")
        .expect("the subscription is open")
        .expect("a delivery, not an error")
}

fn event(tenant: Option<TenantId>, n: u32) -> Event {
    Event::new(tenant, "test.rabbit", "/tests", &n).unwrap()
}

/// How many messages `queue` holds, asked on a connection of its own.
async fn queued(url: &str, queue: &str) -> u32 {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;
    declared.message_count()
}

/// `publish` and `publish_batch` return once the broker has confirmed:
/// the group's queue already holds every event when asked from another
/// connection, and a tracked publication is confirmed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_returns_once_the_broker_confirmed() {
    let Some((p, bus)) = fixture_with(RabbitMqConfig::default()).await else {
        return;
    };
    let url = service_url(Service::RabbitMq, "confirms").unwrap();
    let topic = unique_topic("confirms");
    let group = bus
        .subscribe(&topic, SubscribeOptions::new().with_group("stored"))
        .await
        .unwrap();
    group.close().await;
    let queue = bus.group_queue_name(&topic, "stored", None);
    p.publish(&topic, event(None, 0)).await.unwrap();
    assert_eq!(queued(&url, &queue).await, 1);
    let batch: Vec<Event> = (1..=20).map(|n| event(Some(TenantId::new()), n)).collect();
    p.publish_batch(&topic, batch).await.unwrap();
    assert_eq!(queued(&url, &queue).await, 21);
    let receipt = p
        .publish_tracked(&topic, vec![event(None, 99)])
        .await
        .unwrap();
    assert!(receipt.is_confirmed(), "the broker stores what it confirms");
    assert_eq!(queued(&url, &queue).await, 22);
}

/// A delayed nack comes back no sooner than its delay, to any member of
/// the group, with the attempt counted across delays and plain nacks; a
/// private subscription's delayed nack too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_nacks_wait_and_count_attempts() {
    let Some((p, bus)) = fixture_with(RabbitMqConfig::default()).await else {
        return;
    };
    let topic = unique_topic("delay");
    let options = SubscribeOptions::new().with_group("slow");
    let mut first = bus.subscribe(&topic, options.clone()).await.unwrap();
    let mut private = bus
        .subscribe(&topic, SubscribeOptions::new())
        .await
        .unwrap();
    let sent = event(Some(TenantId::new()), 1);
    p.publish(&topic, sent.clone()).await.unwrap();

    let delay = Duration::from_millis(400);
    let delivery = next(&mut first).await;
    assert_eq!(delivery.attempt(), 1);
    let nacked_at = tokio::time::Instant::now();
    delivery.nack(Some(delay)).await.unwrap();
    // The first member goes away; the group keeps the delayed copy.
    first.close().await;
    let mut second = bus.subscribe(&topic, options).await.unwrap();
    let again = next(&mut second).await;
    assert!(nacked_at.elapsed() >= delay, "redelivered before the delay");
    assert_eq!(
        again.event(),
        &sent.clone().with_time(again.event().time().unwrap())
    );
    assert_eq!(again.attempt(), 2);
    again.nack(None).await.unwrap();
    let third = next(&mut second).await;
    assert_eq!(third.attempt(), 3);
    let nacked_at = tokio::time::Instant::now();
    third.nack(Some(delay)).await.unwrap();
    let fourth = next(&mut second).await;
    assert!(nacked_at.elapsed() >= delay, "redelivered before the delay");
    assert_eq!(fourth.attempt(), 4);
    fourth.ack().await.unwrap();

    let mine = next(&mut private).await;
    assert_eq!(mine.event().id(), sent.id());
    let nacked_at = tokio::time::Instant::now();
    mine.nack(Some(delay)).await.unwrap();
    let back = next(&mut private).await;
    assert!(nacked_at.elapsed() >= delay, "redelivered before the delay");
    assert_eq!((back.event().id(), back.attempt()), (sent.id(), 2));
    back.ack().await.unwrap();
}

/// Tenant A's subscriptions (private, and a group scoped to A) see only
/// A's events: not B's, not tenant-less ones, and not a message of B's
/// published straight to the exchange under A's routing key. The group of
/// the same name scoped to B is another group, with only B's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_tenant_events_never_reach_a_tenant_scoped_subscription() {
    let Some((p, bus)) = fixture_with(RabbitMqConfig::default()).await else {
        return;
    };
    let url = service_url(Service::RabbitMq, "cross-tenant").unwrap();
    let topic = unique_topic("cross-tenant");
    let (a, b) = (TenantId::new(), TenantId::new());
    let mut only_a = bus
        .subscribe(&topic, SubscribeOptions::new().with_tenant(a))
        .await
        .unwrap();
    let group = SubscribeOptions::new().with_group("billing");
    let mut group_a = bus
        .subscribe(&topic, group.clone().with_tenant(a))
        .await
        .unwrap();
    let mut group_b = bus.subscribe(&topic, group.with_tenant(b)).await.unwrap();
    for n in 0..10 {
        for tenant in [Some(a), Some(b), None] {
            p.publish(&topic, event(tenant, n)).await.unwrap();
        }
    }
    // Someone else's publisher claiming tenant A's routing key for B's event.
    let spoof = event(Some(b), 666);
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_publish(
            bus.exchange_name(&topic).as_str().into(),
            format!("t.{a}").as_str().into(),
            BasicPublishOptions::default(),
            &spoof.to_json().unwrap(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;
    let (sentinel_a, sentinel_b) = (event(Some(a), 1000), event(Some(b), 1000));
    p.publish(&topic, sentinel_a.clone()).await.unwrap();
    p.publish(&topic, sentinel_b.clone()).await.unwrap();

    for (sub, tenant, sentinel) in [
        (&mut only_a, a, &sentinel_a),
        (&mut group_a, a, &sentinel_a),
        (&mut group_b, b, &sentinel_b),
    ] {
        let mut seen = HashSet::new();
        loop {
            let delivery = next(sub).await;
            let got = delivery.event().clone();
            delivery.ack().await.unwrap();
            assert_eq!(got.tenant_id(), Some(tenant), "another tenant's event");
            assert_ne!(got.id(), spoof.id(), "a spoofed routing key got through");
            if got.id() == sentinel.id() {
                break;
            }
            seen.insert(got.id().to_owned());
        }
        assert_eq!(seen.len(), 10, "each of the tenant's own events");
    }
}

/// Queues hold no history: starting a new group from the earliest event
/// is refused with a typed error; an existing group resumes whatever the
/// start says, with what it holds.
#[tokio::test]
async fn earliest_is_refused_for_a_new_group_only() {
    let Some((p, bus)) = fixture_with(RabbitMqConfig::default()).await else {
        return;
    };
    let topic = unique_topic("earliest");
    let earliest = SubscribeOptions::new()
        .with_group("history")
        .starting_from(StartFrom::Earliest);
    match bus.subscribe(&topic, earliest.clone()).await {
        Err(EventError::Unsupported { .. }) => {}
        other => panic!("expected Unsupported, got {other:?}"),
    }
    match bus
        .subscribe(
            &topic,
            SubscribeOptions::new().starting_from(StartFrom::Earliest),
        )
        .await
    {
        Err(EventError::Unsupported { .. }) => {}
        other => panic!("expected Unsupported for a private subscription, got {other:?}"),
    }
    let created = bus
        .subscribe(&topic, SubscribeOptions::new().with_group("history"))
        .await
        .unwrap();
    created.close().await;
    let kept = event(None, 1);
    p.publish(&topic, kept.clone()).await.unwrap();
    let mut resumed = bus.subscribe(&topic, earliest).await.unwrap();
    let delivery = next(&mut resumed).await;
    assert_eq!(delivery.event().id(), kept.id());
    delivery.ack().await.unwrap();
}

/// Stops and starts the CI broker's application. Call with [`BROKER`]
/// held exclusively.
fn restart_broker() {
    for step in ["stop_app", "start_app", "await_startup"] {
        let status = Command::new("rabbitmqctl")
            .arg(step)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("rabbitmqctl on PATH");
        assert!(status.success(), "rabbitmqctl {step} failed");
    }
}

/// Connects once the broker answers (it may still be starting).
async fn wait_connect(url: &str, prefix: &str) -> RabbitMqBus {
    let config = RabbitMqConfig::default().with_prefix(prefix).unwrap();
    for _ in 0..200 {
        if let Ok(bus) = RabbitMqBus::connect(url, config.clone()).await {
            return bus;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("RabbitMQ at {url} did not come back");
}

/// The shared restart scenario: publish, take a few, restart the broker,
/// twice; a durable group then receives every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_twice_loses_nothing() {
    let Some(url) = service_url(Service::RabbitMq, "rabbitmq broker restart") else {
        return;
    };
    let _exclusive = BROKER.write().await;
    let prefix = unique_name("ev");
    let _cleanup = cleanup(url.clone(), prefix.clone());
    loses_nothing_across_two_restarts(async || wait_connect(&url, &prefix).await, restart_broker)
        .await;
}

/// Live subscriptions survive a restart: a group reconnects and gets what
/// was published meanwhile, the delivery held across the restart comes
/// back as a later attempt (settling it on the lost connection fails), and
/// a private subscription reconnects and receives new events again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_reconnect_after_a_broker_restart() {
    let Some(url) = service_url(Service::RabbitMq, "rabbitmq reconnection") else {
        return;
    };
    let _exclusive = BROKER.write().await;
    let prefix = unique_name("ev");
    let _cleanup = cleanup(url.clone(), prefix.clone());
    let bus = wait_connect(&url, &prefix).await;
    let topic = unique_topic("reconnect");
    let mut group = bus
        .subscribe(&topic, SubscribeOptions::new().with_group("steady"))
        .await
        .unwrap();
    let mut private = bus
        .subscribe(&topic, SubscribeOptions::new())
        .await
        .unwrap();
    let tenant = TenantId::new();
    let before = event(Some(tenant), 1);
    bus.publish(&topic, before.clone()).await.unwrap();
    let held = next(&mut group).await;
    assert_eq!(held.event().id(), before.id());
    next(&mut private).await.ack().await.unwrap();

    restart_broker();

    // The same bus publishes again: it reconnects on its own.
    let after = event(Some(tenant), 2);
    bus.publish(&topic, after.clone()).await.unwrap();
    assert!(held.ack().await.is_err(), "its connection is gone");
    let mut waiting: HashSet<String> = [before.id(), after.id()].map(str::to_owned).into();
    while !waiting.is_empty() {
        let delivery = next(&mut group).await;
        if delivery.event().id() == before.id() {
            assert!(delivery.attempt() >= 2, "a redelivery counts as one");
        }
        waiting.remove(delivery.event().id());
        delivery.ack().await.unwrap();
    }

    // A private queue is gone with the broker's restart and comes back
    // when the subscription reconnects: publish until it receives again.
    let received = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let probe = event(Some(tenant), 3);
            bus.publish(&topic, probe.clone()).await.unwrap();
            match tokio::time::timeout(Duration::from_millis(500), private.next()).await {
                Ok(Some(Ok(delivery))) => {
                    delivery.ack().await.unwrap();
                    return;
                }
                Ok(Some(Err(error))) => panic!("private subscription failed: {error}"),
                Ok(None) => panic!("private subscription ended"),
                Err(_) => continue,
            }
        }
    })
    .await;
    assert!(
        received.is_ok(),
        "the private subscription never reconnected"
    );
}
