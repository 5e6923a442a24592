//! Relays woken by commits over many schema outboxes: only locations with
//! rows are visited, a tenant provisioned after the start is found without
//! waiting for a full pass, rows written without notifications are found
//! by the full pass, and several relays over many locations deliver every
//! event once, in order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use saas_core::TenantId;
use saas_events::postgres::{
    OutboxLocation, OutboxLocations, OutboxRelay, PgOutbox, RelayConfig, RelayHandle,
};
use saas_events::{
    Event, EventError, InMemoryBus, InMemoryConfig, SubscribeOptions, Subscriber, Subscription,
};
use saas_test_support::{Service, service_url, unique_name};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Executor, PgPool};

use crate::support::Recorder;

/// Schemas of one test, each with an outbox, and the locations a relay
/// is given (growing when the test provisions another).
#[derive(Debug, Clone)]
struct Schemas {
    prefix: String,
    pool: PgPool,
    listed: Arc<Mutex<Vec<OutboxLocation>>>,
    /// Times the relay asked for the locations.
    listings: Arc<AtomicUsize>,
}

#[async_trait]
impl OutboxLocations for Schemas {
    async fn locations(&self) -> Result<Vec<OutboxLocation>, EventError> {
        self.listings.fetch_add(1, Ordering::AcqRel);
        Ok(self.listed.lock().unwrap().clone())
    }
}

impl Schemas {
    async fn new(url: &str, count: usize) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect(url)
            .await
            .unwrap();
        let schemas = Self {
            prefix: unique_name("wake"),
            pool,
            listed: Arc::default(),
            listings: Arc::default(),
        };
        for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
            let mut sql = String::new();
            for n in chunk {
                let schema = schemas.schema(*n);
                sql.push_str(&format!(
                    "CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\"; {};",
                    PgOutbox::new().create_table_sql()
                ));
            }
            schemas.pool.execute(AssertSqlSafe(sql)).await.unwrap();
        }
        for n in 0..count {
            schemas.list(n);
        }
        schemas
    }

    fn schema(&self, n: usize) -> String {
        format!("{}_{n}", self.prefix)
    }

    fn list(&self, n: usize) {
        let schema = self.schema(n);
        let location =
            OutboxLocation::new(&schema, self.pool.clone(), Some(schema.clone())).unwrap();
        self.listed.lock().unwrap().push(location);
    }

    /// Writes `events` into schema `n`'s outbox in one transaction.
    async fn publish(&self, outbox: &PgOutbox, n: usize, events: Vec<Event>) {
        let mut tx = self.pool.begin().await.unwrap();
        tx.execute(AssertSqlSafe(format!(
            "SET LOCAL search_path TO \"{}\"",
            self.schema(n)
        )))
        .await
        .unwrap();
        outbox.publish_batch(&mut tx, "wake", events).await.unwrap();
        tx.commit().await.unwrap();
    }

    async fn cleanup(self, count: usize) {
        let mut sql = String::new();
        for n in 0..count {
            sql.push_str(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE;",
                self.schema(n)
            ));
        }
        let _ = self.pool.execute(AssertSqlSafe(sql)).await;
        self.pool.close().await;
    }
}

fn event(tenant: TenantId, n: u32) -> Event {
    Event::new(tenant, "test.wake", "/tests", &n).unwrap()
}

/// Event `n` of `tenant`, written to schema `schema`'s outbox.
fn placed(tenant: TenantId, n: u32, schema: usize) -> Event {
    Event::new(tenant, "test.wake", "/tests", &(n, schema)).unwrap()
}

/// How long a relay keeps visiting a location that had rows (the crate's
/// `relay_task::LINGER`).
const LINGER: Duration = Duration::from_secs(2);

/// The relays' poll interval: how often a location that recently had rows
/// is visited without an announcement.
const POLL: Duration = Duration::from_millis(500);

/// A relay that only wakes on commit: no full pass after the first within
/// the test, so every later visit is one a notification, or a location's
/// recent rows, asked for.
fn woken_relay(schemas: &Schemas, sink: &Recorder, full_scan: Duration) -> RelayHandle {
    OutboxRelay::new(
        Arc::new(schemas.clone()),
        Arc::new(sink.clone()),
        RelayConfig::default()
            .with_poll_interval(POLL)
            .with_full_scan_interval(full_scan),
    )
    .spawn()
}

async fn wait_for(sink: &Recorder, count: usize, what: &str) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while sink.len() < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: {} of {count} events relayed", sink.len()));
}

async fn first_full_pass(relay: &RelayHandle, locations: u64) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while relay.relay().stats().location_passes() < locations {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the first pass visits every location");
}

/// 300 schema outboxes, rows in 5 of them: the relay visits those, not
/// the 295 idle ones, and an idle relay visits nothing at all. (Visits to
/// the 5: one per announcement — a writer announces rows into an outbox
/// it saw empty — and one per poll interval while they recently had rows;
/// far fewer than 295 within the test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_relay_visits_only_locations_with_rows() {
    let Some(url) = service_url(Service::Postgres, "a_woken_relay_visits_only") else {
        return;
    };
    const SCHEMAS: usize = 300;
    let schemas = Schemas::new(&url, SCHEMAS).await;
    let sink = Recorder::default();
    let relay = woken_relay(&schemas, &sink, Duration::from_secs(3600));
    first_full_pass(&relay, SCHEMAS as u64).await;
    let after_full = relay.relay().stats().location_passes();
    let outbox = PgOutbox::new();
    let active = [3, 50, 120, 200, 299];
    for round in 0..4u32 {
        for n in active {
            let tenant = TenantId::new();
            schemas
                .publish(
                    &outbox,
                    n,
                    vec![event(tenant, round), event(tenant, round + 1)],
                )
                .await;
        }
    }
    wait_for(&sink, 40, "woken relay").await;
    let visits = relay.relay().stats().location_passes() - after_full;
    assert!(
        (active.len() as u64..SCHEMAS as u64).contains(&visits),
        "{visits} location passes for 20 commits in {} schemas: idle schemas were visited",
        active.len()
    );
    // Idle: no commits, no visits (the next full pass is an hour away).
    // A location that had rows is visited every poll interval for a while
    // (rows whose writers saw it busy are not announced): let that end.
    tokio::time::sleep(LINGER + POLL + Duration::from_millis(200)).await;
    let idle_from = relay.relay().stats().location_passes();
    tokio::time::sleep(POLL + Duration::from_millis(500)).await;
    assert_eq!(
        relay.relay().stats().location_passes(),
        idle_from,
        "an idle woken relay visited locations"
    );
    relay.shutdown().await;
    schemas.cleanup(SCHEMAS).await;
}

/// A schema provisioned after the relay started is found by its first
/// commit's notification (the relay lists its locations again), not by
/// the full pass an hour away; an unannounced row in an outbox that just
/// had rows is found by the visits to busy locations; one in an idle
/// outbox by the full pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_tenants_are_found_at_once_and_silent_rows_by_the_full_pass() {
    let Some(url) = service_url(Service::Postgres, "new_tenants_are_found_at_once") else {
        return;
    };
    let schemas = Schemas::new(&url, 3).await;
    let sink = Recorder::default();
    let relay = woken_relay(&schemas, &sink, Duration::from_secs(3600));
    first_full_pass(&relay, 3).await;
    // Provisioned now: the table exists before it is listed.
    let late = schemas.schema(3);
    schemas
        .pool
        .execute(AssertSqlSafe(format!(
            "CREATE SCHEMA \"{late}\"; SET search_path TO \"{late}\"; {}",
            PgOutbox::new().create_table_sql()
        )))
        .await
        .unwrap();
    schemas.list(3);
    let tenant = TenantId::new();
    schemas
        .publish(&PgOutbox::new(), 3, vec![event(tenant, 0)])
        .await;
    wait_for(&sink, 1, "a new tenant's first event").await;
    // The outbox just had rows: a row written now without an announcement
    // (as by a writer that saw the table busy) is found by the relay's
    // visits to recently busy locations, an hour before the full pass.
    let quiet = PgOutbox::new().with_relay_wakeups(false);
    schemas.publish(&quiet, 3, vec![event(tenant, 1)]).await;
    wait_for(&sink, 2, "an unannounced row in a busy outbox").await;
    relay.shutdown().await;

    // Notifications off: only a full pass finds the row.
    let relay = woken_relay(&schemas, &sink, Duration::from_millis(300));
    schemas.publish(&quiet, 1, vec![event(tenant, 2)]).await;
    wait_for(&sink, 3, "a row written without notification").await;
    relay.shutdown().await;
    schemas.cleanup(4).await;
}

/// Three woken relays over 200 schema outboxes, 8 writers committing
/// throughout: every event is forwarded exactly once (no crash, so no
/// repeat) and each tenant's events in the order they were written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_woken_relays_share_many_locations_once_in_order() {
    let Some(url) = service_url(Service::Postgres, "several_woken_relays") else {
        return;
    };
    const SCHEMAS: usize = 200;
    const WRITERS: usize = 8;
    const COMMITS: u32 = 60;
    let schemas = Schemas::new(&url, SCHEMAS).await;
    let sink = Recorder::default();
    let relays: Vec<RelayHandle> = (0..3)
        .map(|_| woken_relay(&schemas, &sink, Duration::from_millis(500)))
        .collect();
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let schemas = schemas.clone();
        writers.push(tokio::spawn(async move {
            let outbox = PgOutbox::new();
            let tenant = TenantId::new();
            for commit in 0..COMMITS {
                // Each writer cycles over 10 schemas of its own: its
                // tenant's events land in several outboxes, six commits
                // in each.
                let n = (writer * 25 + commit as usize % 10) % SCHEMAS;
                let events = (0..2).map(|i| placed(tenant, commit * 2 + i, n)).collect();
                schemas.publish(&outbox, n, events).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let total = WRITERS * COMMITS as usize * 2;
    wait_for(&sink, total, "several relays").await;
    for relay in relays {
        relay.shutdown().await;
    }
    let seen = sink.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), total, "an event was forwarded twice");
    let unique: HashSet<&str> = seen.iter().map(|(_, e)| e.id()).collect();
    assert_eq!(unique.len(), total);
    // Within one outbox a tenant's events keep their order; a tenant
    // writing to several outboxes has no order across them.
    let mut last: HashMap<(TenantId, usize), u32> = HashMap::new();
    for (_, e) in &seen {
        let (n, schema): (u32, usize) = e.data_as().unwrap();
        let tenant = e.tenant_id().unwrap();
        if let Some(prev) = last.insert((tenant, schema), n) {
            assert!(n > prev, "schema {schema}: event {n} after {prev}");
        }
    }
    schemas.cleanup(SCHEMAS).await;
}

/// Receives `n` deliveries (within 30 s each), acknowledging them or
/// holding them; returns their numbers and the held ones.
async fn receive(
    sub: &mut Subscription,
    n: usize,
    ack: bool,
) -> (Vec<u32>, Vec<saas_events::Delivery>) {
    let (mut numbers, mut held) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let delivery = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap_or_else(|_| panic!("a delivery within 30 s; got {numbers:?}"))
            .unwrap()
            .unwrap();
        numbers.push(delivery.event().data_as::<u32>().unwrap());
        if ack {
            delivery.ack().await.unwrap();
        } else {
            held.push(delivery);
        }
    }
    (numbers, held)
}

/// A location no longer listed is forgotten at the next listing, not at
/// the next sweep: listed again under its name but elsewhere (a tenant
/// moved away and back into storage made anew), its table numbers rows
/// afresh, and the sequence numbers the relay remembered from the old
/// table (forwarded, awaiting confirmation) must neither skip nor delete
/// rows there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_listed_again_elsewhere_is_not_drained_with_the_old_numbers() {
    let test = "outbox_wake::listed_again_elsewhere";
    let Some(url) = service_url(Service::Postgres, test) else {
        return;
    };
    let schemas = Schemas::new(&url, 2).await;
    let at = |n: usize| {
        OutboxLocation::new("tenant", schemas.pool.clone(), Some(schemas.schema(n))).unwrap()
    };
    *schemas.listed.lock().unwrap() = vec![at(0)];
    let bus = InMemoryBus::with_config(InMemoryConfig::default().with_ordering_per_key(false));
    let mut sub = bus
        .subscribe("wake", SubscribeOptions::new().with_group("audit"))
        .await
        .unwrap();
    let relay = OutboxRelay::new(
        Arc::new(schemas.clone()),
        Arc::new(bus.clone()),
        RelayConfig::default()
            .with_poll_interval(Duration::from_millis(20))
            .with_max_unconfirmed(20)
            .with_full_scan_interval(Duration::from_secs(3600)),
    )
    .spawn();
    let outbox = PgOutbox::new();
    let tenant = TenantId::new();
    // Sequence numbers 1..=20 of the first table, forwarded and held.
    schemas
        .publish(&outbox, 0, (0..20).map(|n| event(tenant, n)).collect())
        .await;
    let (_, held) = receive(&mut sub, 20, false).await;
    // The location goes; a listing sees it gone.
    schemas.listed.lock().unwrap().clear();
    let before = schemas.listings.load(Ordering::Acquire);
    tokio::time::timeout(Duration::from_secs(10), async {
        while schemas.listings.load(Ordering::Acquire) < before + 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the relay lists its locations every second");
    // Back under its name, in the other table: numbers 1..=40 again.
    *schemas.listed.lock().unwrap() = vec![at(1)];
    for delivery in held {
        delivery.ack().await.unwrap();
    }
    schemas
        .publish(&outbox, 1, (20..60).map(|n| event(tenant, n)).collect())
        .await;
    let (mut got, _) = receive(&mut sub, 40, true).await;
    got.sort_unstable();
    assert_eq!(
        got,
        (20..60).collect::<Vec<_>>(),
        "every row of the new table"
    );
    relay.shutdown().await;
    schemas.cleanup(2).await;
}
