//! At least once up to the consumer: an in-memory bus confirms a tracked
//! publication only once every receiving group has acknowledged it, and
//! the outbox relays delete a row only after that — so a process killed
//! between relay and consumer loses nothing.

use std::sync::Arc;
use std::time::Duration;

use saas_core::TenantId;
use saas_events::{
    Event, EventError, InMemoryBus, Publisher, SubscribeOptions, Subscriber, Subscription,
};
use saas_test_support::{Service, service_url};

use crate::sqlite_outbox::SqliteScratch;
use crate::support::PgScratch;

const TOPIC: &str = "confirmations";

fn event(tenant: TenantId, n: u32) -> Event {
    Event::new(tenant, "test.confirm", "/tests", &n).unwrap()
}

fn group(name: &str) -> SubscribeOptions {
    SubscribeOptions::new().with_group(name)
}

/// The next delivery's number, acknowledged or not.
async fn next_number(sub: &mut Subscription, ack: bool) -> u32 {
    let delivery = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a delivery within 5 s")
        .expect("open")
        .unwrap();
    let n = delivery.event().data_as::<u32>().unwrap();
    if ack {
        delivery.ack().await.unwrap();
    } else {
        delivery.nack(None).await.unwrap();
    }
    n
}

/// Nothing more arrives within 200 ms.
async fn assert_quiet(sub: &mut Subscription) {
    let next = tokio::time::timeout(Duration::from_millis(200), sub.next()).await;
    assert!(next.is_err(), "nothing more may arrive");
}

#[tokio::test]
async fn a_receipt_waits_for_every_receiving_group() {
    let bus = InMemoryBus::new();
    let tenant = TenantId::new();
    let mut mailer = bus.subscribe(TOPIC, group("mailer")).await.unwrap();
    let mut audit = bus.subscribe(TOPIC, group("audit")).await.unwrap();
    // Another tenant's group does not receive it, so is not waited for.
    let _other = bus
        .subscribe(TOPIC, group("audit").with_tenant(TenantId::new()))
        .await
        .unwrap();
    let receipt = bus
        .publish_tracked(TOPIC, vec![event(tenant, 1)])
        .await
        .unwrap();
    assert!(!receipt.is_confirmed());
    assert_eq!(next_number(&mut mailer, true).await, 1);
    assert!(!receipt.is_confirmed(), "audit has not acknowledged yet");
    assert_eq!(next_number(&mut audit, false).await, 1, "a nack");
    assert!(!receipt.is_confirmed(), "a nack confirms nothing");
    assert_eq!(next_number(&mut audit, true).await, 1, "the redelivery");
    receipt.confirmed(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn a_receipt_without_receivers_is_confirmed_at_once() {
    let bus = InMemoryBus::new();
    let receipt = bus
        .publish_tracked(TOPIC, vec![event(TenantId::new(), 1)])
        .await
        .unwrap();
    assert!(receipt.is_confirmed());
    receipt.confirmed(Duration::ZERO).await.unwrap();
}

#[tokio::test]
async fn a_receipt_fails_when_its_copy_is_dropped_unacknowledged() {
    let bus = InMemoryBus::new();
    let private = bus.subscribe(TOPIC, SubscribeOptions::new()).await.unwrap();
    let receipt = bus
        .publish_tracked(TOPIC, vec![event(TenantId::new(), 1)])
        .await
        .unwrap();
    drop(private);
    assert!(receipt.is_lost());
    let waited = receipt.confirmed(Duration::from_secs(5)).await;
    assert!(matches!(waited, Err(EventError::Closed)), "{waited:?}");

    // Closing the bus loses what a durable group still holds.
    let _held = bus.subscribe(TOPIC, group("held")).await.unwrap();
    let receipt = bus
        .publish_tracked(TOPIC, vec![event(TenantId::new(), 2)])
        .await
        .unwrap();
    bus.close();
    let waited = receipt.confirmed(Duration::from_secs(5)).await;
    assert!(matches!(waited, Err(EventError::Closed)), "{waited:?}");
}

#[tokio::test]
async fn an_event_published_again_while_held_is_not_queued_twice() {
    let bus = InMemoryBus::new();
    let mut sub = bus.subscribe(TOPIC, group("slow")).await.unwrap();
    let held = event(TenantId::new(), 7);
    let first = bus
        .publish_tracked(TOPIC, vec![held.clone()])
        .await
        .unwrap();
    let waited = first.confirmed(Duration::from_millis(50)).await;
    assert!(
        matches!(waited, Err(EventError::Timeout { .. })),
        "{waited:?}"
    );
    // A relay forwarding the row again after its timeout.
    let second = bus.publish_tracked(TOPIC, vec![held]).await.unwrap();
    assert_eq!(next_number(&mut sub, true).await, 7);
    second.confirmed(Duration::from_secs(1)).await.unwrap();
    assert_quiet(&mut sub).await;
}

#[tokio::test]
async fn another_event_with_a_held_events_id_is_queued_too() {
    let bus = InMemoryBus::new();
    let mut sub = bus.subscribe(TOPIC, group("audit")).await.unwrap();
    let first = event(TenantId::new(), 1).with_id("shared-id").unwrap();
    let second = event(TenantId::new(), 2).with_id("shared-id").unwrap();
    let held = bus.publish_tracked(TOPIC, vec![first]).await.unwrap();
    let other = bus.publish_tracked(TOPIC, vec![second]).await.unwrap();
    let mut seen = vec![
        next_number(&mut sub, true).await,
        next_number(&mut sub, true).await,
    ];
    seen.sort_unstable();
    assert_eq!(seen, [1, 2], "the same id from two tenants is two events");
    held.confirmed(Duration::from_secs(1)).await.unwrap();
    other.confirmed(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn closing_the_bus_fails_a_receipt_whose_delivery_comes_back() {
    let bus = InMemoryBus::new();
    let mut sub = bus.subscribe(TOPIC, group("held")).await.unwrap();
    let receipt = bus
        .publish_tracked(TOPIC, vec![event(TenantId::new(), 1)])
        .await
        .unwrap();
    let delivery = sub.next().await.unwrap().unwrap();
    bus.close();
    delivery.nack(None).await.unwrap();
    assert!(receipt.is_lost());
    let waited = receipt.confirmed(Duration::from_secs(5)).await;
    assert!(matches!(waited, Err(EventError::Closed)), "{waited:?}");
}

/// What every relay scenario below needs from its backend.
trait Outbox {
    /// Writes `events` to the outbox, committed.
    async fn write(&self, events: Vec<Event>);
    /// A relay of this outbox into `bus`.
    fn relay(&self, bus: &InMemoryBus, confirm_timeout: Duration) -> Relay;
}

/// One relay, whichever backend.
enum Relay {
    Pg(saas_events::postgres::OutboxRelay),
    Sqlite(saas_events::sqlite::OutboxRelay),
}

impl Relay {
    async fn once(&self) -> usize {
        match self {
            Relay::Pg(r) => r.relay_once().await.unwrap(),
            Relay::Sqlite(r) => r.relay_once().await.unwrap(),
        }
    }

    async fn pending(&self) -> u64 {
        match self {
            Relay::Pg(r) => r.pending().await.unwrap(),
            Relay::Sqlite(r) => r.pending().await.unwrap(),
        }
    }
}

impl Outbox for PgScratch {
    async fn write(&self, events: Vec<Event>) {
        let publisher = saas_events::postgres::PgOutboxPublisher::new(
            saas_events::postgres::PgOutbox::new(),
            self.pool.clone(),
        );
        publisher.publish_batch(TOPIC, events).await.unwrap();
    }

    fn relay(&self, bus: &InMemoryBus, confirm_timeout: Duration) -> Relay {
        use saas_events::postgres::{OutboxRelay, RelayConfig, StaticLocations};
        Relay::Pg(OutboxRelay::new(
            Arc::new(StaticLocations(vec![self.location()])),
            Arc::new(bus.clone()),
            RelayConfig::default().with_confirm_timeout(confirm_timeout),
        ))
    }
}

impl Outbox for SqliteScratch {
    async fn write(&self, events: Vec<Event>) {
        let publisher = saas_events::sqlite::SqliteOutboxPublisher::new(
            saas_events::sqlite::SqliteOutbox::new(),
            self.pool.clone(),
        );
        publisher.publish_batch(TOPIC, events).await.unwrap();
    }

    fn relay(&self, bus: &InMemoryBus, confirm_timeout: Duration) -> Relay {
        use saas_events::sqlite::{OutboxRelay, RelayConfig, StaticLocations};
        Relay::Sqlite(OutboxRelay::new(
            Arc::new(StaticLocations(vec![self.location()])),
            Arc::new(bus.clone()),
            RelayConfig::default().with_confirm_timeout(confirm_timeout),
        ))
    }
}

/// The process dies after the relay handed events to the bus and before
/// the consumer acknowledged them: the rows are still there, and the next
/// process delivers every event once.
async fn a_crash_between_relay_and_consumer_loses_nothing(outbox: &impl Outbox) {
    let tenant = TenantId::new();
    outbox
        .write((0..20).map(|n| event(tenant, n)).collect())
        .await;
    let bus = InMemoryBus::new();
    let mut sub = bus.subscribe(TOPIC, group("audit")).await.unwrap();
    let relay = outbox.relay(&bus, Duration::from_secs(30));
    assert_eq!(relay.once().await, 20);
    // The consumer takes the first (the tenant's next waits for it) and
    // dies before acknowledging it.
    let delivery = sub.next().await.unwrap().unwrap();
    std::mem::forget(delivery);
    assert_eq!(relay.once().await, 0, "held rows are not forwarded again");
    assert_eq!(
        relay.pending().await,
        20,
        "nothing is deleted before an ack"
    );
    drop((sub, relay, bus));

    let bus = InMemoryBus::new();
    let mut sub = bus.subscribe(TOPIC, group("audit")).await.unwrap();
    let relay = outbox.relay(&bus, Duration::from_secs(30));
    assert_eq!(relay.once().await, 20);
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.push(next_number(&mut sub, true).await);
    }
    assert_eq!(seen, (0..20).collect::<Vec<_>>(), "each once, in order");
    assert_eq!(relay.once().await, 0);
    assert_eq!(relay.pending().await, 0, "acknowledged rows are deleted");
    assert_quiet(&mut sub).await;
}

/// A consumer failing one tenant's event holds back only that event's
/// rows: another tenant's later events are relayed, consumed and deleted
/// meanwhile; after the confirmation timeout the stuck row is forwarded
/// again without being queued twice.
async fn a_stuck_event_holds_back_only_its_own_rows(outbox: &impl Outbox) {
    // Wide margins: the steps before the timeout must fit in it however
    // loaded the machine, and the retry must come after the re-forward.
    const CONFIRM: Duration = Duration::from_secs(2);
    const RETRY: Duration = Duration::from_secs(3);
    let (stuck, flowing) = (TenantId::new(), TenantId::new());
    let bus = InMemoryBus::new();
    let mut sub = bus.subscribe(TOPIC, group("audit")).await.unwrap();
    let relay = outbox.relay(&bus, CONFIRM);
    outbox.write(vec![event(stuck, 0)]).await;
    assert_eq!(relay.once().await, 1);
    let forwarded_at = tokio::time::Instant::now(); // not before the run's own
    let delivery = sub.next().await.unwrap().unwrap();
    assert_eq!(delivery.event().data_as::<u32>().unwrap(), 0);
    // It fails; try again later.
    delivery.nack(Some(RETRY)).await.unwrap();
    outbox
        .write((1..4).map(|n| event(flowing, n)).collect())
        .await;
    assert_eq!(relay.once().await, 3);
    for n in 1..4 {
        assert_eq!(next_number(&mut sub, true).await, n);
    }
    assert_eq!(relay.once().await, 0);
    assert_eq!(
        relay.pending().await,
        1,
        "only the failing event's row waits"
    );
    tokio::time::sleep_until(forwarded_at + CONFIRM + Duration::from_millis(50)).await;
    assert_eq!(relay.once().await, 1, "forwarded again after the timeout");
    assert_eq!(next_number(&mut sub, true).await, 0, "retried, and handled");
    assert_quiet(&mut sub).await;
    assert_eq!(relay.once().await, 0);
    assert_eq!(relay.pending().await, 0);
}

#[tokio::test]
async fn postgres_a_crash_between_relay_and_consumer_loses_nothing() {
    let Some(url) = service_url(Service::Postgres, "saas-events relay confirmation") else {
        return;
    };
    let scratch = PgScratch::new(&url).await;
    a_crash_between_relay_and_consumer_loses_nothing(&scratch).await;
    scratch.cleanup().await;
}

#[tokio::test]
async fn postgres_a_stuck_event_holds_back_only_its_own_rows() {
    let Some(url) = service_url(Service::Postgres, "saas-events relay confirmation") else {
        return;
    };
    let scratch = PgScratch::new(&url).await;
    a_stuck_event_holds_back_only_its_own_rows(&scratch).await;
    scratch.cleanup().await;
}

#[tokio::test]
async fn sqlite_a_crash_between_relay_and_consumer_loses_nothing() {
    let scratch = SqliteScratch::new().await;
    a_crash_between_relay_and_consumer_loses_nothing(&scratch).await;
    scratch.cleanup().await;
}

#[tokio::test]
async fn sqlite_a_stuck_event_holds_back_only_its_own_rows() {
    let scratch = SqliteScratch::new().await;
    a_stuck_event_holds_back_only_its_own_rows(&scratch).await;
    scratch.cleanup().await;
}

/// The consumer writes to the outbox's own SQLite file before it
/// acknowledges (a tenant's audit log next to its outbox): the running
/// relay must not hold the file's write lock while it waits, and a clean
/// shutdown waits for the confirmations, leaving nothing to forward again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_consumers_writing_to_the_outbox_file_are_not_blocked() {
    let scratch = SqliteScratch::new().await;
    sqlx::query("CREATE TABLE seen (n INTEGER PRIMARY KEY)")
        .execute(&scratch.pool)
        .await
        .unwrap();
    let bus = InMemoryBus::new();
    let mut sub = bus.subscribe(TOPIC, group("audit")).await.unwrap();
    let pool = scratch.pool.clone();
    let consumer = tokio::spawn(async move {
        for _ in 0..50 {
            let delivery = sub.next().await.unwrap().unwrap();
            let n: u32 = delivery.event().data_as().unwrap();
            sqlx::query("INSERT INTO seen (n) VALUES (?)")
                .bind(n)
                .execute(&pool)
                .await
                .unwrap();
            delivery.ack().await.unwrap();
        }
    });
    let Relay::Sqlite(relay) = scratch.relay(&bus, Duration::from_secs(30)) else {
        unreachable!("a SQLite scratch makes a SQLite relay")
    };
    let running = relay.clone().spawn();
    let tenant = TenantId::new();
    for chunk in 0..5u32 {
        scratch
            .write((0..10).map(|n| event(tenant, chunk * 10 + n)).collect())
            .await;
    }
    tokio::time::timeout(Duration::from_secs(20), consumer)
        .await
        .expect("the consumer finishes within 20 s")
        .unwrap();
    running.shutdown().await;
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM seen")
        .fetch_one(&scratch.pool)
        .await
        .unwrap();
    assert_eq!(seen, 50);
    assert_eq!(relay.pending().await.unwrap(), 0);
    scratch.cleanup().await;
}
