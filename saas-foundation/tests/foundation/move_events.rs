//! A tenant moved while it writes business rows and outbox events in the
//! same transactions, with two outbox relays running throughout (each
//! reading every tenant's outbox from the catalog, as two servers would),
//! NATS JetStream as the transport and a consumer deduplicating through a
//! PostgreSQL inbox: after the move and a drain, every committed event
//! reached the handler exactly once, none was lost, nothing was invented.
//! Transport-level duplicates are allowed (the inbox absorbs them) and
//! counted.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saas_core::{TenantContext, TenantSlug};
use saas_events::middleware::InboxClaim;
use saas_events::nats::{NatsBus, NatsConfig};
use saas_events::postgres::{DEFAULT_OUTBOX_TABLE, OutboxRelay, PgInbox, PgOutbox, RelayConfig};
use saas_events::{
    Capabilities, Event, EventError, InMemoryBus, InMemoryConfig, PublishReceipt, Publisher,
    SubscribeOptions, Subscriber,
};
use saas_foundation::outboxes::PgTenantOutboxes;
use saas_tenancy::postgres::{MoveMethod, MoveOptions, PgClusterConfig, PgTenancy, SqlIdent};
use saas_tenancy::testing::pg::{NOTES_SHARED, NOTES_TENANT};
use saas_tenancy::{ClusterName, NewTenant, PgCatalog, Placement, Strategy, TenantTable};
use saas_test_support::{Service, service_url, unique_name};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool, SqlSafeStr};

const TOPIC: &str = "moved-notes";
const CONSUMER: &str = "move-audit";

/// The transport as the relays see it: NATS, made slow on demand (each
/// publication waits 100 ms) so that the relays fall behind the writers
/// and the tenant has pending outbox rows when the fence goes up — the
/// rows the move must carry over. A slow broker, not a stopped relay:
/// passes keep running, reading, publishing and deleting.
/// It also counts the publications of each event: a relay publishing an
/// event again (a row moved while a pass had it in flight) is a duplicate
/// at the transport, which JetStream's duplicate window (`Nats-Msg-Id` =
/// the event id) or else the consumer's inbox absorbs.
#[derive(Debug, Clone)]
struct Throttled {
    inner: NatsBus,
    slow: Arc<AtomicBool>,
    published: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Throttled {
    async fn pause(&self, events: &[Event]) {
        {
            let mut published = self.published.lock().unwrap();
            for event in events {
                *published.entry(event.id().to_owned()).or_default() += 1;
            }
        }
        if self.slow.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[async_trait::async_trait]
impl Publisher for Throttled {
    async fn publish(&self, topic: &str, event: Event) -> Result<(), EventError> {
        self.pause(std::slice::from_ref(&event)).await;
        self.inner.publish(topic, event).await
    }

    async fn publish_tracked(
        &self,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<PublishReceipt, EventError> {
        self.pause(&events).await;
        self.inner.publish_tracked(topic, events).await
    }

    fn capabilities(&self) -> Capabilities {
        Publisher::capabilities(&self.inner)
    }
}

/// One PostgreSQL server: a fresh database on it, the tenancy's cluster.
struct Server {
    name: ClusterName,
    root: PgPool,
    db: String,
    admin: PgPool,
    options: PgConnectOptions,
}

async fn server(url: &str, name: &str) -> Server {
    let base = PgConnectOptions::from_str(url).unwrap();
    let root = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(base.clone())
        .await
        .unwrap();
    let db = unique_name("saas_mvev");
    root.execute(AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
        .await
        .unwrap();
    let options = base.database(&db);
    let admin = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.clone())
        .await
        .unwrap();
    admin.execute(NOTES_SHARED).await.unwrap();
    admin
        .execute(AssertSqlSafe(PgOutbox::new().create_table_sql()))
        .await
        .unwrap();
    Server {
        name: ClusterName::new(name).unwrap(),
        root,
        db,
        admin,
        options,
    }
}

struct World {
    one: Server,
    two: Server,
    role: String,
    catalog: saas_tenancy::DynCatalog,
}

impl World {
    /// A tenancy over both servers ("a process").
    fn tenancy(&self) -> PgTenancy {
        let tenant_sql = format!("{NOTES_TENANT}; {}", PgOutbox::new().create_table_sql());
        let migrations = Migrator::with_migrations(vec![Migration::new(
            1,
            "notes and outbox".into(),
            MigrationType::Simple,
            AssertSqlSafe(tenant_sql).into_sql_str(),
            false,
        )]);
        let mut builder = PgTenancy::builder(Arc::clone(&self.catalog))
            .tenant_table(TenantTable::new("notes").unwrap())
            .tenant_table(TenantTable::new(DEFAULT_OUTBOX_TABLE).unwrap())
            .tenant_migrations(migrations)
            .record_ttl(Duration::from_secs(1))
            .follow_moves(true);
        for s in [&self.one, &self.two] {
            let mut config = PgClusterConfig::new(
                s.name.clone(),
                s.options.clone(),
                SqlIdent::new(&self.role).unwrap(),
            );
            config.max_connections = 8;
            builder = builder.cluster(config);
        }
        builder.build().unwrap()
    }

    async fn cleanup(self, tenants: &[TenantContext]) {
        for s in [&self.one, &self.two] {
            s.admin.close().await;
            let mut dbs: Vec<String> = tenants
                .iter()
                .map(|c| format!("t_{}", c.tenant_id().simple()))
                .collect();
            dbs.push(s.db.clone());
            for db in dbs {
                let _ = s
                    .root
                    .execute(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
                    )))
                    .await;
            }
            for ctx in tenants {
                let _ = s
                    .root
                    .execute(AssertSqlSafe(format!(
                        "DROP ROLE IF EXISTS \"t_{}\"",
                        ctx.tenant_id().simple()
                    )))
                    .await;
            }
            let _ = s
                .root
                .execute(AssertSqlSafe(format!(
                    "DROP ROLE IF EXISTS \"{}\"",
                    self.role
                )))
                .await;
        }
    }
}

/// What the writers committed, by event id.
#[derive(Default)]
struct Written {
    /// Events whose transaction's commit was acknowledged.
    acked: BTreeSet<String>,
    /// Events whose transaction failed after being sent (outcome unknown).
    maybe: BTreeSet<String>,
}

/// One write: a note and its event, in one transaction.
async fn write(
    tenancy: &PgTenancy,
    outbox: &PgOutbox,
    ctx: &TenantContext,
    body: &str,
    written: &Mutex<Written>,
) -> bool {
    let event = Event::new(ctx.tenant_id(), "note.added", "/tests/move", &body).unwrap();
    let id = event.id().to_owned();
    let Ok(mut tx) = tenancy.begin(ctx).await else {
        return false;
    };
    let inserted = sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, $2)")
        .bind(ctx.tenant_id())
        .bind(body)
        .execute(&mut *tx)
        .await;
    if inserted.is_err() || outbox.publish(&mut tx, TOPIC, event).await.is_err() {
        return false;
    }
    match tx.commit().await {
        Ok(()) => {
            written.lock().unwrap().acked.insert(id);
            true
        }
        Err(_) => {
            written.lock().unwrap().maybe.insert(id);
            false
        }
    }
}

/// What the consumer saw, by event id.
#[derive(Default)]
struct Seen {
    /// Deliveries by the transport.
    delivered: BTreeMap<String, u32>,
    /// Times the handler ran past the inbox.
    handled: BTreeMap<String, u32>,
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pending(pool: &PgPool, table: &str, ctx: &TenantContext) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE tenant_id = $1"
    )))
    .bind(ctx.tenant_id())
    .fetch_one(pool)
    .await
    .unwrap()
}

fn source_placement(world: &World, ctx: &TenantContext) -> Placement {
    Placement::derive(Strategy::Shared, world.one.name.clone(), ctx.tenant_id())
}

/// The tenant's outbox rows left at `placement`.
async fn left_at(world: &World, placement: &Placement, ctx: &TenantContext) -> i64 {
    let server = if *placement.cluster() == world.one.name {
        &world.one
    } else {
        &world.two
    };
    match placement {
        Placement::Shared { .. } => pending(&server.admin, DEFAULT_OUTBOX_TABLE, ctx).await,
        Placement::Schema { schema, .. } => {
            let table = format!("{}.{DEFAULT_OUTBOX_TABLE}", schema.quoted());
            pending(&server.admin, &table, ctx).await
        }
        _ => {
            let database = placement.object_name().unwrap();
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(server.options.clone().database(database.as_str()))
                .await;
            // A purged database holds nothing.
            let Ok(pool) = pool else { return 0 };
            let n = pending(&pool, DEFAULT_OUTBOX_TABLE, ctx).await;
            pool.close().await;
            n
        }
    }
}

/// Moves a row tenant on server one to `to` (on server two if `to_two`)
/// while it writes, its neighbours write (the one on server two only if
/// `busy_target`: otherwise nothing announces rows there but the move),
/// and two relays run; then checks every committed event is handled once.
async fn move_with_relays_running(
    test: &str,
    to: Strategy,
    to_two: bool,
    busy_target: bool,
    method: MoveMethod,
) {
    let Some(url1) = service_url(Service::Postgres, test) else {
        return;
    };
    let Some(url2) = service_url(Service::Postgres2, test) else {
        return;
    };
    let Some(nats_url) = service_url(Service::Nats, test) else {
        return;
    };
    let one = server(&url1, "one").await;
    let two = server(&url2, "two").await;
    let catalog = PgCatalog::new(one.admin.clone());
    catalog.migrate().await.unwrap();
    let world = World {
        one,
        two,
        role: unique_name("saas_mvevrt"),
        catalog: Arc::new(catalog),
    };
    let mover = world.tenancy();
    mover.setup().await.unwrap();
    let other_server = world.tenancy();
    // The consumer's database of its own (an inbox next to the tenants'
    // shared tables would be a tenant table: it has a tenant column, and
    // it would move with the tenant).
    let inbox = PgInbox::new();
    let consumer_db = format!("{}_consumer", world.one.db);
    world
        .one
        .root
        .execute(AssertSqlSafe(format!("CREATE DATABASE \"{consumer_db}\"")))
        .await
        .unwrap();
    let consumer_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(world.one.options.clone().database(&consumer_db))
        .await
        .unwrap();
    consumer_pool
        .execute(AssertSqlSafe(inbox.create_table_sql()))
        .await
        .unwrap();

    let provision = async |slug: &str, cluster: &ClusterName| {
        let new = NewTenant::new(
            TenantSlug::parse(slug).unwrap(),
            slug,
            Strategy::Shared,
            cluster.clone(),
        )
        .unwrap();
        let record = mover.provision(new).await.unwrap();
        TenantContext::new(record.id, record.slug)
    };
    let ctx = provision("moving", &world.one.name).await;
    // Neighbours publishing in the same outboxes, before and after.
    let neighbours = [
        provision("next-door", &world.one.name).await,
        provision("far-away", &world.two.name).await,
    ];

    // The transport and the consumer: NATS JetStream, a group, the inbox
    // in its own transaction with the handler's effect.
    let prefix = unique_name("mvev");
    let bus = NatsBus::connect(
        &nats_url,
        NatsConfig::default().with_prefix(&prefix).unwrap(),
    )
    .await
    .unwrap();
    let mut sub = bus
        .subscribe(TOPIC, SubscribeOptions::new().with_group("audit"))
        .await
        .unwrap();
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let consuming = Arc::new(AtomicBool::new(true));
    let consumer = {
        let (seen, consuming, pool, inbox) = (
            Arc::clone(&seen),
            Arc::clone(&consuming),
            consumer_pool.clone(),
            inbox.clone(),
        );
        tokio::spawn(async move {
            while consuming.load(Ordering::Acquire) {
                let next = tokio::time::timeout(Duration::from_millis(200), sub.next()).await;
                let Ok(Some(delivery)) = next else { continue };
                let delivery = delivery.unwrap();
                let id = delivery.event().id().to_owned();
                *seen
                    .lock()
                    .unwrap()
                    .delivered
                    .entry(id.clone())
                    .or_default() += 1;
                let mut tx = pool.begin().await.unwrap();
                if inbox
                    .claim(&mut tx, CONSUMER, delivery.event())
                    .await
                    .unwrap()
                    == InboxClaim::First
                {
                    tx.commit().await.unwrap();
                    *seen.lock().unwrap().handled.entry(id).or_default() += 1;
                } else {
                    tx.rollback().await.unwrap();
                }
                delivery.ack().await.unwrap();
            }
        })
    };

    // Two relays, as two servers run them, each over its own tenancy.
    // No sweep during the test: every row must be found by the commit
    // notifications, the listings and the visits of busy locations.
    let slow = Arc::new(AtomicBool::new(false));
    let sink = Arc::new(Throttled {
        inner: bus.clone(),
        slow: Arc::clone(&slow),
        published: Arc::default(),
    });
    let relay_config = RelayConfig::default()
        .with_poll_interval(Duration::from_millis(20))
        .with_batch_size(20)
        .with_full_scan_interval(Duration::from_secs(3600));
    let relays = [&mover, &other_server].map(|tenancy| {
        OutboxRelay::new(
            Arc::new(PgTenantOutboxes::new(tenancy)),
            Arc::clone(&sink) as Arc<dyn Publisher>,
            relay_config.clone(),
        )
        .spawn()
    });

    // Writers: the moving tenant (4 tasks) and its neighbours.
    let outbox = PgOutbox::new();
    let written: Arc<Mutex<Written>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let mut who_writes = vec![&ctx, &ctx, &ctx, &ctx, &neighbours[0]];
    if busy_target {
        who_writes.push(&neighbours[1]);
    }
    for (w, who) in who_writes.into_iter().enumerate() {
        let (tenancy, who, outbox) = (mover.clone(), who.clone(), outbox.clone());
        let (written, stop, ops) = (Arc::clone(&written), Arc::clone(&stop), Arc::clone(&ops));
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                n += 1;
                if !write(&tenancy, &outbox, &who, &format!("w{w}-{n}"), &written).await {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                ops.fetch_add(1, Ordering::AcqRel);
            }
        }));
    }
    let acked = || written.lock().unwrap().acked.len();
    let target_acked = acked() + 300;
    wait_for("writers before the move", Duration::from_secs(60), || {
        acked() >= target_acked
    })
    .await;

    // The broker slows down: a backlog of the tenant's events builds up.
    slow.store(true, Ordering::Release);
    let backlog = async || left_at(&world, &source_placement(&world, &ctx), &ctx).await;
    let mut pending_before = 0;
    for _ in 0..500 {
        pending_before = backlog().await;
        if pending_before >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pending_before >= 200, "a backlog: {pending_before}");
    let source = source_placement(&world, &ctx);
    let cluster = if to_two {
        &world.two.name
    } else {
        &world.one.name
    };
    let target = Placement::derive(to, cluster.clone(), ctx.tenant_id());
    let report = mover
        .move_tenant(ctx.tenant_id(), target.clone(), MoveOptions::default())
        .await
        .unwrap();
    assert_eq!(report.method, method);
    slow.store(false, Ordering::Release);
    let target_acked = acked() + 300;
    wait_for("writers after the move", Duration::from_secs(60), || {
        acked() >= target_acked
    })
    .await;
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await.unwrap();
    }

    // The drain: every acknowledged event handled, the outboxes empty.
    let written = std::mem::take(&mut *written.lock().unwrap());
    let all_handled = || {
        let seen = seen.lock().unwrap();
        written.acked.iter().all(|id| seen.handled.contains_key(id))
    };
    let drained = tokio::time::Instant::now();
    wait_for(
        "every committed event handled",
        Duration::from_secs(90),
        all_handled,
    )
    .await;
    let drain = drained.elapsed();
    for placement in [&source, &target] {
        let mut left = i64::MAX;
        for _ in 0..250 {
            left = left_at(&world, placement, &ctx).await;
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(left, 0, "outbox rows of the tenant left at {placement:?}");
    }
    let relayed: Vec<u64> = relays.iter().map(|r| r.relay().stats().relayed()).collect();
    for relay in relays {
        relay.shutdown().await;
    }
    // Late transport duplicates, if any, arrive within the quiet second
    // the consumer is given after the relays stopped.
    let quiet = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut last = seen.lock().unwrap().delivered.values().sum::<u32>();
    while tokio::time::Instant::now() < quiet {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = seen.lock().unwrap().delivered.values().sum::<u32>();
        assert!(now >= last);
        last = now;
    }
    consuming.store(false, Ordering::Release);
    consumer.await.unwrap();

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let moving: BTreeSet<&String> = written.acked.iter().collect();
    for id in &written.acked {
        assert_eq!(seen.handled.get(id), Some(&1), "event {id} handled once");
    }
    for id in &written.maybe {
        assert!(
            seen.handled.get(id).copied().unwrap_or(0) <= 1,
            "event {id} of unknown outcome handled at most once"
        );
    }
    for (id, n) in &seen.handled {
        assert_eq!(*n, 1, "event {id} handled {n} times");
        assert!(
            moving.contains(id) || written.maybe.contains(id),
            "event {id} was never written"
        );
    }
    let deliveries: u32 = seen.delivered.values().sum();
    let duplicates = deliveries as usize - seen.delivered.len();
    let published = std::mem::take(&mut *sink.published.lock().unwrap());
    let publications: u32 = published.values().sum();
    let republished = publications as usize - published.len();
    assert!(
        written.acked.iter().all(|id| published.contains_key(id)),
        "every committed event published"
    );
    eprintln!(
        "{test}: {} events committed ({} of unknown outcome, {} of them handled), \
         {publications} publications by the relays ({republished} again), \
         {deliveries} deliveries ({duplicates} duplicates), relayed {relayed:?}; \
         {pending_before} pending as the move began, moved {:?} outbox rows, fence {:?}, \
         drain after the writers stopped {drain:?}",
        written.acked.len(),
        written.maybe.len(),
        written
            .maybe
            .iter()
            .filter(|id| seen.handled.contains_key(*id))
            .count(),
        report.queued,
        report.fence,
    );
    assert!(
        report
            .queued
            .get(DEFAULT_OUTBOX_TABLE)
            .is_some_and(|n| *n > 0),
        "pending events moved under the fence: {report:?}"
    );

    bus.delete_topic(TOPIC).await.unwrap();
    consumer_pool.close().await;
    world
        .one
        .root
        .execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{consumer_db}\" WITH (FORCE)"
        )))
        .await
        .unwrap();
    drop((mover, other_server));
    let mut tenants = neighbours.to_vec();
    tenants.push(ctx);
    world.cleanup(&tenants).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_of_a_tenant_moved_from_row_to_schema_are_delivered_once() {
    move_with_relays_running(
        "move_events::row_to_schema",
        Strategy::Schema,
        false,
        true,
        MoveMethod::CapturedCopy,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_of_a_tenant_moved_from_row_to_database_are_delivered_once() {
    move_with_relays_running(
        "move_events::row_to_database",
        Strategy::Database,
        false,
        true,
        MoveMethod::LogicalReplication,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_of_a_tenant_moved_to_rows_on_another_server_are_delivered_once() {
    move_with_relays_running(
        "move_events::row_to_row",
        Strategy::Shared,
        true,
        true,
        MoveMethod::LogicalReplication,
    )
    .await;
}

/// Nothing else writes on the target server: the moved rows must announce
/// themselves (no relay visits a quiet outbox unannounced, and the sweep
/// is an hour away).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_moved_into_a_quiet_outbox_are_delivered_once() {
    move_with_relays_running(
        "move_events::row_to_quiet_row",
        Strategy::Shared,
        true,
        false,
        MoveMethod::LogicalReplication,
    )
    .await;
}

/// A database tenant moved to another server while the relay waits for
/// its sink to confirm forwarded events: the target database's outbox
/// numbers the moved rows from its own sequence, so the source's
/// sequence numbers the relay remembers (forwarded, awaiting
/// confirmation) name other rows there. None of them may be skipped or
/// deleted for it: the location of the target is not the source's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_awaiting_confirmation_loses_nothing_when_the_tenant_changes_server() {
    let test = "move_events::awaiting_confirmation";
    let Some(url1) = service_url(Service::Postgres, test) else {
        return;
    };
    let Some(url2) = service_url(Service::Postgres2, test) else {
        return;
    };
    let one = server(&url1, "one").await;
    let two = server(&url2, "two").await;
    let catalog = PgCatalog::new(one.admin.clone());
    catalog.migrate().await.unwrap();
    let world = World {
        one,
        two,
        role: unique_name("saas_mvevrt"),
        catalog: Arc::new(catalog),
    };
    let tenancy = world.tenancy();
    tenancy.setup().await.unwrap();
    let new = NewTenant::new(
        TenantSlug::parse("wanders").unwrap(),
        "wanders",
        Strategy::Database,
        world.one.name.clone(),
    )
    .unwrap();
    let record = tenancy.provision(new).await.unwrap();
    let ctx = TenantContext::new(record.id, record.slug);
    let outbox = PgOutbox::new();
    let publish = async |from: u32| {
        let mut tx = tenancy.begin(&ctx).await.unwrap();
        let events = (from..from + 20)
            .map(|n| Event::new(ctx.tenant_id(), "note.added", "/tests/move", &n).unwrap())
            .collect();
        outbox.publish_batch(&mut tx, TOPIC, events).await.unwrap();
        tx.commit().await.unwrap();
    };

    // An in-memory sink confirms once its consumer has acknowledged; the
    // relay holds at most 20 forwarded, unconfirmed rows per location.
    // (Unordered, so the consumer can hold 20 at once.)
    let bus = InMemoryBus::with_config(InMemoryConfig::default().with_ordering_per_key(false));
    let mut sub = bus
        .subscribe(TOPIC, SubscribeOptions::new().with_group("audit"))
        .await
        .unwrap();
    let relay = OutboxRelay::new(
        Arc::new(PgTenantOutboxes::new(&tenancy)),
        Arc::new(bus.clone()),
        RelayConfig::default()
            .with_poll_interval(Duration::from_millis(20))
            .with_max_unconfirmed(20),
    )
    .spawn();
    let mut got: BTreeMap<u32, u32> = BTreeMap::new();
    let mut receive = async |n: usize| {
        let mut held = Vec::new();
        for _ in 0..n {
            let delivery = tokio::time::timeout(Duration::from_secs(30), sub.next())
                .await
                .unwrap_or_else(|_| panic!("a delivery within 30 s; got {got:?}"))
                .unwrap()
                .unwrap();
            *got.entry(delivery.event().data_as().unwrap()).or_default() += 1;
            held.push(delivery);
        }
        held
    };
    // Events 0..20 go through; the source's sequence is now past 20.
    publish(0).await;
    for d in receive(20).await {
        d.ack().await.unwrap();
    }
    // Events 20..40 are forwarded and held unacknowledged (sequence
    // numbers 21..40 await confirmation); 40..60 wait in the outbox.
    publish(20).await;
    let held = receive(20).await;
    publish(40).await;
    assert_eq!(relay.relay().stats().relayed(), 40, "room for no more");

    let to = Placement::derive(Strategy::Database, world.two.name.clone(), ctx.tenant_id());
    let report = tenancy
        .move_tenant(ctx.tenant_id(), to, MoveOptions::default())
        .await
        .unwrap();
    assert_eq!(report.queued.get(DEFAULT_OUTBOX_TABLE), Some(&40));
    // On the target the 40 rows are numbered 1..=40: 21..=40 are events
    // 40..60, never forwarded.
    for d in held {
        d.ack().await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (0..60).any(|n| !got.contains_key(&n)) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some(delivery)) = tokio::time::timeout(left, sub.next()).await else {
            break;
        };
        let delivery = delivery.unwrap();
        *got.entry(delivery.event().data_as().unwrap()).or_default() += 1;
        delivery.ack().await.unwrap();
    }
    let missing: Vec<u32> = (0..60).filter(|n| !got.contains_key(n)).collect();
    assert!(missing.is_empty(), "events never delivered: {missing:?}");
    let again: u32 = got.values().map(|n| n - 1).sum();
    eprintln!("{test}: 60 events delivered, {again} delivered again");
    relay.shutdown().await;
    drop(tenancy);
    world.cleanup(&[ctx]).await;
}
