//! The PostgreSQL outbox: conformance through a relay into an in-memory
//! bus, the late-commit race, concurrent relays, stall visibility.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use saas_core::TenantId;
use saas_events::postgres::{
    OutboxRelay, PgOutbox, PgOutboxPublisher, RelayConfig, StaticLocations,
};
use saas_events::{Event, EventError, InMemoryBus, Publisher, Subscriber};
use saas_test_support::{Service, service_url};
use sqlx::{AssertSqlSafe, Connection, Row};

use saas_events::testing::stress_repeats;

use crate::support::{Guarded, OnDrop, PgScratch, Recorder};

fn relay_to(scratch: &PgScratch, sink: Arc<dyn Publisher>) -> OutboxRelay {
    OutboxRelay::new(
        Arc::new(StaticLocations(vec![scratch.location()])),
        sink,
        RelayConfig::default().with_poll_interval(Duration::from_millis(5)),
    )
}

async fn outbox_backend() -> Option<(Arc<dyn Publisher>, Arc<dyn Subscriber>)> {
    let url = service_url(Service::Postgres, "saas-events outbox conformance")?;
    let scratch = PgScratch::new(&url).await;
    let bus = InMemoryBus::new();
    let running = relay_to(&scratch, Arc::new(bus.clone())).spawn();
    let publisher = PgOutboxPublisher::new(PgOutbox::new(), scratch.pool.clone());
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

/// A relay that remembers the highest sequence it has forwarded and reads
/// only above it — the design the outbox must not use.
struct HighWaterMarkRelay {
    mark: i64,
}

impl HighWaterMarkRelay {
    async fn pass(&mut self, scratch: &PgScratch, sink: &Recorder) {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT seq, topic, event FROM \"{}\".saas_events_outbox WHERE seq > $1 ORDER BY seq",
            scratch.schema
        )))
        .bind(self.mark)
        .fetch_all(&scratch.pool)
        .await
        .unwrap();
        for row in rows {
            let seq: i64 = row.get(0);
            let topic: String = row.get(1);
            let body: String = row.get(2);
            sink.publish(&topic, Event::from_json_str(&body).unwrap())
                .await
                .unwrap();
            self.mark = self.mark.max(seq);
        }
    }
}

/// Two transactions; the one holding the lower sequence commits after a
/// relay pass has already forwarded the higher one. Returns the ids in
/// commit order (`late`, `early`) after running `pass` between each step.
async fn late_commit_race<F, Fut>(scratch: &PgScratch, mut pass: F) -> (String, String)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let outbox = PgOutbox::new();
    let tenant = TenantId::new();
    let late = event(tenant, 1);
    let early = event(tenant, 2);
    let mut slow = scratch.pool.acquire().await.unwrap();
    let mut slow_tx = slow.begin().await.unwrap();
    outbox
        .publish(&mut slow_tx, "race", late.clone())
        .await
        .unwrap();
    let mut fast = scratch.pool.acquire().await.unwrap();
    let mut fast_tx = fast.begin().await.unwrap();
    outbox
        .publish(&mut fast_tx, "race", early.clone())
        .await
        .unwrap();
    let seqs: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT seq FROM \"{}\".saas_events_outbox ORDER BY seq",
        scratch.schema
    )))
    .fetch_all(&mut *fast_tx)
    .await
    .unwrap();
    assert_eq!(seqs.len(), 1, "the slow transaction is not visible yet");
    fast_tx.commit().await.unwrap();
    pass().await; // forwards the higher sequence
    slow_tx.commit().await.unwrap(); // the lower sequence appears now
    pass().await;
    (late.id().to_owned(), early.id().to_owned())
}

#[tokio::test]
async fn relay_never_skips_a_late_commit() {
    let Some(url) = service_url(Service::Postgres, "relay_never_skips_a_late_commit") else {
        return;
    };
    for _ in 0..stress_repeats() {
        let scratch = PgScratch::new(&url).await;
        let sink = Recorder::default();
        let relay = relay_to(&scratch, Arc::new(sink.clone()));
        let (late, early) = late_commit_race(&scratch, || async {
            relay.relay_once().await.unwrap();
        })
        .await;
        assert_eq!(sink.ids(), vec![early, late], "the late commit was skipped");
        assert_eq!(relay.pending().await.unwrap(), 0);
        scratch.cleanup().await;
    }
}

/// The race above is real: a high-water-mark relay loses the event.
#[tokio::test]
async fn the_late_commit_race_catches_a_high_water_mark_relay() {
    let Some(url) = service_url(Service::Postgres, "the_late_commit_race_catches_hwm") else {
        return;
    };
    let scratch = PgScratch::new(&url).await;
    let sink = Recorder::default();
    let naive = tokio::sync::Mutex::new(HighWaterMarkRelay { mark: 0 });
    let (late, early) = late_commit_race(&scratch, || async {
        naive.lock().await.pass(&scratch, &sink).await;
    })
    .await;
    assert_eq!(
        sink.ids(),
        vec![early],
        "a high-water mark skips the late commit"
    );
    assert!(!sink.ids().contains(&late));
    scratch.cleanup().await;
}

/// Two relays on one table: every event forwarded exactly once (no crash,
/// so no repeat), each tenant's events in publish order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_relays_deliver_once_in_order() {
    let Some(url) = service_url(Service::Postgres, "concurrent_relays_deliver_once") else {
        return;
    };
    const TENANTS: u32 = 4;
    const EACH: u32 = 500;
    let scratch = PgScratch::new(&url).await;
    let sink = Recorder::default();
    let config = RelayConfig::default()
        .with_batch_size(50)
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
    let publisher = Arc::new(PgOutboxPublisher::new(
        PgOutbox::new(),
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
    for relay in relays {
        relay.shutdown().await;
    }
    let seen = sink.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), total, "an event was forwarded twice");
    let unique: HashSet<&str> = seen.iter().map(|(_, e)| e.id()).collect();
    assert_eq!(unique.len(), total);
    let mut last: HashMap<TenantId, u32> = HashMap::new();
    for (_, e) in &seen {
        let n: u32 = e.data_as().unwrap();
        let tenant = e.tenant_id().unwrap();
        if let Some(prev) = last.insert(tenant, n) {
            assert_eq!(n, prev + 1, "tenant order broken");
        } else {
            assert_eq!(n, 0);
        }
    }
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

/// Nothing relayed → the backlog's age and size show it; a failing sink
/// keeps the rows and counts the error; a working one drains them.
#[tokio::test]
async fn a_stalled_relay_is_visible_and_loses_nothing() {
    let Some(url) = service_url(Service::Postgres, "a_stalled_relay_is_visible") else {
        return;
    };
    let scratch = PgScratch::new(&url).await;
    let publisher = PgOutboxPublisher::new(PgOutbox::new(), scratch.pool.clone());
    publisher
        .publish("stalled", event(TenantId::new(), 1))
        .await
        .unwrap();
    let failing = relay_to(&scratch, Arc::new(FailingSink));
    assert!(failing.relay_once().await.is_err());
    assert_eq!(failing.stats().errors(), 1);
    assert_eq!(failing.pending().await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let age = failing.oldest_pending_age().await.unwrap();
    assert!(
        age.is_some_and(|a| a >= Duration::from_millis(10)),
        "{age:?}"
    );

    let sink = Recorder::default();
    let working = relay_to(&scratch, Arc::new(sink.clone()));
    assert_eq!(working.relay_once().await.unwrap(), 1);
    assert_eq!(working.oldest_pending_age().await.unwrap(), None);
    assert_eq!(sink.len(), 1);
    scratch.cleanup().await;
}

/// A rolled-back transaction publishes nothing; bad input writes nothing.
#[tokio::test]
async fn rollback_and_bad_input_publish_nothing() {
    let Some(url) = service_url(Service::Postgres, "rollback_publishes_nothing") else {
        return;
    };
    let scratch = PgScratch::new(&url).await;
    let outbox = PgOutbox::new().with_max_payload_bytes(16);
    let mut conn = scratch.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    outbox
        .publish(&mut tx, "rolled", event(TenantId::new(), 1))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let big = Event::new(TenantId::new(), "t", "/t", &"x".repeat(64)).unwrap();
    assert!(matches!(
        outbox.publish(&mut conn, "big", big).await,
        Err(EventError::PayloadTooLarge { .. })
    ));
    assert!(matches!(
        outbox
            .publish(&mut conn, "bad topic", event(TenantId::new(), 1))
            .await,
        Err(EventError::InvalidName { .. })
    ));
    assert!(PgOutbox::new().with_table("Robert'); DROP").is_err());
    drop(conn);
    let relay = relay_to(&scratch, Arc::new(Recorder::default()));
    assert_eq!(relay.pending().await.unwrap(), 0);
    scratch.cleanup().await;
}
