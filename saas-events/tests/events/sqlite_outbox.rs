//! The SQLite outbox: conformance through a relay into an in-memory bus,
//! rollback and bad input, stall visibility, concurrent writers and relays.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use saas_core::{ManualClock, TenantId};
use saas_events::sqlite::{
    OutboxLocation, OutboxRelay, RelayConfig, SqliteOutbox, SqliteOutboxPublisher, StaticLocations,
};
use saas_events::{Event, EventError, InMemoryBus, Publisher, Subscriber};
use saas_test_support::unique_name;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Connection, SqlitePool};

use crate::support::{Guarded, OnDrop, Recorder};

/// A database file of its own in a fresh temporary directory, with an
/// outbox table.
#[derive(Debug, Clone)]
pub(crate) struct SqliteScratch {
    pub(crate) dir: PathBuf,
    pub(crate) pool: SqlitePool,
}

impl SqliteScratch {
    pub(crate) async fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("saas_events_sqlite"));
        std::fs::create_dir_all(&dir).unwrap();
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(dir.join("app.sqlite"))
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        SqliteOutbox::new().create_table(&mut conn).await.unwrap();
        drop(conn);
        Self { dir, pool }
    }

    pub(crate) fn location(&self) -> OutboxLocation {
        OutboxLocation::new("app", self.pool.clone())
    }

    pub(crate) async fn cleanup(self) {
        self.pool.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn relay_to(scratch: &SqliteScratch, sink: Arc<dyn Publisher>) -> OutboxRelay {
    OutboxRelay::new(
        Arc::new(StaticLocations(vec![scratch.location()])),
        sink,
        RelayConfig::default().with_poll_interval(Duration::from_millis(5)),
    )
}

async fn outbox_backend() -> Option<(Arc<dyn Publisher>, Arc<dyn Subscriber>)> {
    let scratch = SqliteScratch::new().await;
    let bus = InMemoryBus::new();
    let running = relay_to(&scratch, Arc::new(bus.clone())).spawn();
    let publisher = SqliteOutboxPublisher::new(SqliteOutbox::new(), scratch.pool.clone());
    let guard = OnDrop::new(move || async move {
        running.abort();
        scratch.cleanup().await;
    });
    let publisher = Guarded {
        inner: publisher,
        _guard: guard,
    };
    Some((Arc::new(publisher), Arc::new(bus)))
}

mod conformance {
    saas_events::conformance_tests!(super::outbox_backend());
}

fn event(tenant: TenantId, n: u32) -> Event {
    Event::new(tenant, "test.outbox", "/tests", &n).unwrap()
}

/// A rolled-back transaction publishes nothing; bad input writes nothing;
/// a committed one is relayed with its payload intact.
#[tokio::test]
async fn sqlite_rollback_and_bad_input_publish_nothing() {
    let scratch = SqliteScratch::new().await;
    let outbox = SqliteOutbox::new().with_max_payload_bytes(16);
    let mut conn = scratch.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    outbox
        .publish(&mut tx, "rolled", event(TenantId::new(), 1))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let big = Event::new(TenantId::new(), "t", "/t", &"x".repeat(64)).unwrap();
    // One good event before the oversized one: the batch writes neither.
    let batch = vec![event(TenantId::new(), 1), big];
    assert!(matches!(
        outbox.publish_batch(&mut conn, "big", batch).await,
        Err(EventError::PayloadTooLarge { .. })
    ));
    assert!(matches!(
        outbox
            .publish(&mut conn, "bad topic", event(TenantId::new(), 1))
            .await,
        Err(EventError::InvalidName { .. })
    ));
    assert!(SqliteOutbox::new().with_table("Robert'); DROP").is_err());
    assert!(SqliteOutbox::new().create_table_sql_as("x\"y").is_err());
    assert!(scratch.location().with_table("A B").is_err());
    let relay = relay_to(&scratch, Arc::new(Recorder::default()));
    assert_eq!(relay.pending().await.unwrap(), 0);

    let mut tx = conn.begin().await.unwrap();
    let committed = event(TenantId::new(), 7);
    outbox
        .publish(&mut tx, "kept", committed.clone())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    drop(conn);
    let sink = Recorder::default();
    let relay = relay_to(&scratch, Arc::new(sink.clone()));
    assert_eq!(relay.relay_once().await.unwrap(), 1);
    let seen = sink.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "kept");
    assert_eq!(seen[0].1.id(), committed.id());
    assert_eq!(seen[0].1.data_as::<u32>().unwrap(), 7);
    assert_eq!(seen[0].1.tenant_id(), committed.tenant_id());
    scratch.cleanup().await;
}

#[derive(Debug)]
struct FailingSink;

#[async_trait::async_trait]
impl Publisher for FailingSink {
    async fn publish(&self, _: &str, _: Event) -> Result<(), EventError> {
        Err(EventError::Backend {
            backend: "test",
            retryable: true,
            source: "sink down".into(),
        })
    }
    fn capabilities(&self) -> saas_events::Capabilities {
        saas_events::Capabilities::default()
    }
}

/// Nothing relayed → the backlog's age (by the injected clock) and size
/// show it; a failing sink keeps the rows and counts the error; a working
/// one drains them and deletes them.
#[tokio::test]
async fn sqlite_stalled_relay_is_visible_and_loses_nothing() {
    let scratch = SqliteScratch::new().await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let outbox = SqliteOutbox::new().with_clock(clock.clone());
    let publisher = SqliteOutboxPublisher::new(outbox, scratch.pool.clone());
    publisher
        .publish("stalled", event(TenantId::new(), 1))
        .await
        .unwrap();
    let config = RelayConfig::default().with_clock(clock.clone());
    let locations = Arc::new(StaticLocations(vec![scratch.location()]));
    let failing = OutboxRelay::new(locations.clone(), Arc::new(FailingSink), config.clone());
    assert!(failing.relay_once().await.is_err());
    assert_eq!(failing.stats().errors(), 1);
    assert_eq!(failing.stats().relayed(), 0);
    assert_eq!(failing.pending().await.unwrap(), 1);
    clock.advance(chrono::Duration::seconds(90));
    assert_eq!(
        failing.oldest_pending_age().await.unwrap(),
        Some(Duration::from_secs(90))
    );

    let sink = Recorder::default();
    let working = OutboxRelay::new(locations, Arc::new(sink.clone()), config);
    assert_eq!(working.relay_once().await.unwrap(), 1);
    assert_eq!(working.stats().relayed(), 1);
    assert_eq!(working.oldest_pending_age().await.unwrap(), None);
    assert_eq!(working.pending().await.unwrap(), 0);
    assert_eq!(sink.len(), 1);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM saas_events_outbox")
        .fetch_one(&scratch.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "delivered rows are deleted");
    scratch.cleanup().await;
}

/// A row that is not a valid event stops its location (it is not dropped)
/// and shows as pending.
#[tokio::test]
async fn sqlite_a_corrupt_row_stalls_visibly() {
    let scratch = SqliteScratch::new().await;
    sqlx::query(
        "INSERT INTO saas_events_outbox (tenant_id, topic, event, created_at) \
         VALUES (NULL, 'x', 'not json', 0)",
    )
    .execute(&scratch.pool)
    .await
    .unwrap();
    let relay = relay_to(&scratch, Arc::new(Recorder::default()));
    assert!(matches!(
        relay.relay_once().await,
        Err(EventError::Malformed { .. })
    ));
    assert_eq!(relay.pending().await.unwrap(), 1);
    assert!(relay.oldest_pending_age().await.unwrap().is_some());
    scratch.cleanup().await;
}

/// Writers and two relays at once on one file: every event forwarded
/// exactly once, each tenant's events in publish order, and a clean
/// shutdown leaves nothing pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_writers_and_relays_deliver_once_in_order() {
    const TENANTS: u32 = 4;
    const EACH: u32 = 200;
    let scratch = SqliteScratch::new().await;
    let sink = Recorder::default();
    let config = RelayConfig::default()
        .with_batch_size(25)
        .with_poll_interval(Duration::from_millis(2));
    let relays: Vec<_> = (0..2)
        .map(|_| {
            OutboxRelay::new(
                Arc::new(StaticLocations(vec![scratch.location()])),
                Arc::new(sink.clone()),
                config.clone(),
            )
            .spawn()
        })
        .collect();
    let publisher = Arc::new(SqliteOutboxPublisher::new(
        SqliteOutbox::new(),
        scratch.pool.clone(),
    ));
    let mut tasks = Vec::new();
    for _ in 0..TENANTS {
        let publisher = Arc::clone(&publisher);
        tasks.push(tokio::spawn(async move {
            let tenant = TenantId::new();
            for chunk in (0..EACH).collect::<Vec<_>>().chunks(10) {
                let events = chunk.iter().map(|n| event(tenant, *n)).collect();
                publisher.publish_batch("ordered", events).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let total = (TENANTS * EACH) as usize;
    tokio::time::timeout(Duration::from_secs(30), async {
        while sink.len() < total {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every event relayed within 30 s");
    let mut relayed = 0;
    for running in relays {
        // The sink sees a batch before its pass commits and counts it:
        // read the counter once the relay has stopped.
        let relay = running.relay().clone();
        running.shutdown().await;
        relayed += relay.stats().relayed();
    }
    assert_eq!(relayed, total as u64);
    let seen = sink.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), total, "an event was forwarded twice");
    let unique: HashSet<&str> = seen.iter().map(|(_, e)| e.id()).collect();
    assert_eq!(unique.len(), total);
    let mut last: HashMap<TenantId, u32> = HashMap::new();
    for (_, e) in &seen {
        let n: u32 = e.data_as().unwrap();
        let tenant = e.tenant_id().unwrap();
        match last.insert(tenant, n) {
            Some(prev) => assert_eq!(n, prev + 1, "tenant order broken"),
            None => assert_eq!(n, 0),
        }
    }
    let check = relay_to(&scratch, Arc::new(Recorder::default()));
    assert_eq!(check.pending().await.unwrap(), 0);
    scratch.cleanup().await;
}
