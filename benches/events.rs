//! Event throughput per backend, side by side, each against a baseline
//! measured in the same run. Run: `cargo bench -p saas-benches --bench events`.
//! Services from `SAAS_TEST_POSTGRES_URL` / `SAAS_TEST_NATS_URL` /
//! `SAAS_TEST_REDIS_URL` (a missing
//! one is skipped with a line). Set `SAAS_EVENTS_BENCH_N` to scale. The
//! relay-lag table at 1,000 schema tenants (`relay_lag.rs`) comes last;
//! `-- relay` runs only it.

#![allow(clippy::unwrap_used)]

mod relay_lag;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use saas_core::TenantId;
use saas_events::nats::{NatsBus, NatsConfig};
use saas_events::postgres::{
    OutboxLocation, OutboxRelay, PgOutbox, PgOutboxPublisher, RelayConfig, StaticLocations,
};
use saas_events::redis::{RedisBus, RedisConfig};
use saas_events::{
    Capabilities, Event, EventError, InMemoryBus, Publisher, StartFrom, SubscribeOptions,
    Subscriber,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor};

struct Row {
    case: &'static str,
    events: u64,
    took: Duration,
    baseline: (&'static str, Duration),
    /// Events per second to reach; 0 for none.
    target: u64,
    /// Percent of the baseline's rate to reach; 0 for none.
    share_target: u64,
}

/// When and where the figures were taken, for the report.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned());
    format!(
        "{} UTC; {cores} × {cpu}; load average {load}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M")
    )
}

fn per_sec(events: u64, took: Duration) -> u64 {
    (events as f64 / took.as_secs_f64().max(1e-9)) as u64
}

fn n(default: u64) -> u64 {
    let scale: u64 = std::env::var("SAAS_EVENTS_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    default * scale / 100
}

fn events(count: u64) -> Vec<Event> {
    let tenant = TenantId::new();
    (0..count)
        .map(|i| Event::new(tenant, "bench.event", "/bench", &i).unwrap())
        .collect()
}

/// Counts what a relay forwards.
#[derive(Debug, Default, Clone)]
struct Counter(Arc<AtomicU64>);

#[async_trait]
impl Publisher for Counter {
    async fn publish(&self, _: &str, _: Event) -> Result<(), EventError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn publish_batch(&self, _: &str, events: Vec<Event>) -> Result<(), EventError> {
        self.0.fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}

/// Publish in batches of 1,000, receive and ack every event.
async fn in_memory() -> Row {
    let count = n(500_000);
    let bus = InMemoryBus::new();
    let mut sub = bus
        .subscribe("bench", SubscribeOptions::new())
        .await
        .unwrap();
    let batch = events(count);
    let start = Instant::now();
    let publisher = bus.clone();
    let producer = tokio::spawn(async move {
        let mut batch = batch;
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().saturating_sub(1000));
            publisher.publish_batch("bench", rest).await.unwrap();
        }
    });
    for _ in 0..count {
        sub.next().await.unwrap().unwrap().ack().await.unwrap();
    }
    producer.await.unwrap();
    let took = start.elapsed();
    // Baseline: the same events through a bare tokio channel.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let batch = events(count);
    let base_start = Instant::now();
    for event in batch {
        tx.send(Arc::new(event)).unwrap();
    }
    for _ in 0..count {
        rx.recv().await.unwrap();
    }
    Row {
        case: "in-memory publish → receive → ack",
        events: count,
        took,
        baseline: ("tokio mpsc send → recv", base_start.elapsed()),
        target: 1_000_000,
        share_target: 0,
    }
}

/// Four writers commit transactions of 100 events; one relay forwards
/// them; timed until the last event is forwarded.
async fn outbox(url: &str) -> Row {
    let count = n(100_000);
    let schema = format!("bench_events_{}", std::process::id());
    let base: PgConnectOptions = url.parse().unwrap();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(base.clone())
        .await
        .unwrap();
    admin
        .execute(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        )))
        .await
        .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .connect_with(base.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    let outbox = PgOutbox::new();
    outbox
        .create_table(&mut pool.acquire().await.unwrap())
        .await
        .unwrap();
    pool.execute("CREATE TABLE plain (LIKE saas_events_outbox INCLUDING ALL)")
        .await
        .unwrap();

    let write = |table_sql: Option<&'static str>| {
        let pool = pool.clone();
        let outbox = outbox.clone();
        async move {
            let mut writers = Vec::new();
            for _ in 0..4 {
                let publisher = PgOutboxPublisher::new(outbox.clone(), pool.clone());
                let pool = pool.clone();
                writers.push(tokio::spawn(async move {
                    for _ in 0..count / 400 {
                        let batch = events(100);
                        match table_sql {
                            None => publisher.publish_batch("bench", batch).await.unwrap(),
                            Some(sql) => {
                                let bodies: Vec<String> = batch
                                    .iter()
                                    .map(|e| String::from_utf8(e.to_json().unwrap()).unwrap())
                                    .collect();
                                sqlx::query(sql).bind(bodies).execute(&pool).await.unwrap();
                            }
                        }
                    }
                }));
            }
            for w in writers {
                w.await.unwrap();
            }
        }
    };
    // Baseline: the same rows inserted into a plain table, no relay.
    let base_start = Instant::now();
    write(Some(
        "INSERT INTO plain (topic, event) SELECT 'bench', e FROM unnest($1::text[]) e",
    ))
    .await;
    let baseline = base_start.elapsed();

    let counter = Counter::default();
    let location = OutboxLocation::new("bench", pool.clone(), Some(schema.clone())).unwrap();
    let relay = OutboxRelay::new(
        Arc::new(StaticLocations(vec![location])),
        Arc::new(counter.clone()),
        RelayConfig::default()
            .with_batch_size(2000)
            .with_poll_interval(Duration::from_millis(1)),
    )
    .spawn();
    let total = (count / 400) * 400;
    let start = Instant::now();
    write(None).await;
    while counter.0.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = start.elapsed();
    relay.shutdown().await;
    pool.close().await;
    admin
        .execute(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .await
        .unwrap();
    Row {
        case: "outbox commit → relay forward (4 writers, tx of 100)",
        events: total,
        took,
        baseline: ("same rows into a plain table", baseline),
        target: 20_000,
        share_target: 0,
    }
}

/// JetStream publish with the stream's ack for every event, from 4
/// concurrent publishers (as an application's request handlers would be),
/// each sending batches of 1,000 and waiting for their acks: up to 4,000 in
/// flight. The events are built before the clock starts; encoding them is
/// timed, as it is part of publishing.
async fn nats(url: &str) -> Row {
    const PUBLISHERS: u64 = 4;
    let count = n(100_000);
    let prefix = format!("bench{}", std::process::id());
    let bus = NatsBus::connect(url, NatsConfig::default().with_prefix(&prefix).unwrap())
        .await
        .unwrap();
    bus.publish("bench", events(1).remove(0)).await.unwrap();
    let per_publisher = count / 1000 / PUBLISHERS;
    let batches: Vec<Vec<Vec<Event>>> = (0..PUBLISHERS)
        .map(|_| (0..per_publisher).map(|_| events(1000)).collect())
        .collect();
    let start = Instant::now();
    let publishers: Vec<_> = batches
        .into_iter()
        .map(|mine| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for batch in mine {
                    bus.publish_batch("bench", batch).await.unwrap();
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let took = start.elapsed();
    bus.delete_topic("bench").await.unwrap();
    // Baseline: core NATS publish of the same bytes (no persistence, no ack).
    let client = async_nats::connect(url).await.unwrap();
    let bodies: Vec<bytes::Bytes> = events(count)
        .iter()
        .map(|e| bytes::Bytes::from(e.to_json().unwrap()))
        .collect();
    let base_start = Instant::now();
    for body in bodies {
        client
            .publish(format!("{prefix}.core"), body)
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    Row {
        case: "NATS JetStream publish, acked (4 publishers)",
        events: per_publisher * PUBLISHERS * 1000,
        took,
        baseline: ("core NATS publish + flush", base_start.elapsed()),
        target: 50_000,
        share_target: 0,
    }
}

/// Redis Streams publish: pipelines of 1,000 XADDs, each acknowledged.
async fn redis_streams(url: &str) -> Row {
    let count = n(100_000);
    let prefix = format!("bench{}", std::process::id());
    let bus = RedisBus::connect(url, RedisConfig::default().with_prefix(&prefix).unwrap())
        .await
        .unwrap();
    let start = Instant::now();
    for _ in 0..count / 1000 {
        bus.publish_batch("bench", events(1000)).await.unwrap();
    }
    let took = start.elapsed();
    bus.delete_topic("bench").await.unwrap();
    // Baseline: the same bytes XADDed raw, same pipelining.
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}:raw");
    let base_start = Instant::now();
    for _ in 0..count / 1000 {
        let mut pipe = redis::pipe();
        for event in events(1000) {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("event")
                .arg(event.to_json().unwrap())
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }
    let baseline = base_start.elapsed();
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    Row {
        case: "Redis Streams publish (pipelines of 1,000)",
        events: (count / 1000) * 1000,
        took,
        baseline: ("raw XADD pipeline, same bytes", baseline),
        target: 50_000,
        share_target: 0,
    }
}

/// Events over 64 partition keys, so a partitioned backend can spread them.
fn keyed_events(count: u64) -> Vec<Event> {
    let tenant = TenantId::new();
    (0..count)
        .map(|i| {
            Event::new(tenant, "bench.event", "/bench", &i)
                .unwrap()
                .with_partition_key(format!("key{}", i % 64))
        })
        .collect()
}

/// Two consumers of one group receive and ack `count` events already
/// published to `topic`; returns how long until the last ack.
async fn consume_in_order(bus: Arc<dyn Subscriber>, topic: &str, count: u64) -> Duration {
    let options = SubscribeOptions::new()
        .with_group("bench")
        .starting_from(StartFrom::Earliest);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut sub = bus.subscribe(topic, options.clone()).await.unwrap();
        let done = Arc::clone(&done);
        workers.push(tokio::spawn(async move {
            while let Some(delivery) = sub.next().await {
                delivery.unwrap().ack().await.unwrap();
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    while done.load(Ordering::SeqCst) < count {
        assert!(
            !workers.iter().any(|w| w.is_finished()),
            "a consumer failed"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = start.elapsed();
    for worker in workers {
        worker.abort();
    }
    took
}

/// Ordered consumption: two consumers of a group, events over 64 keys.
async fn nats_consume(url: &str) -> Row {
    let count = n(5_000);
    let prefix = format!("benchc{}", std::process::id());
    let bus = NatsBus::connect(url, NatsConfig::default().with_prefix(&prefix).unwrap())
        .await
        .unwrap();
    bus.publish_batch("bench", keyed_events(count))
        .await
        .unwrap();
    let took = consume_in_order(Arc::new(bus.clone()), "bench", count).await;
    // Baseline: a plain durable pull consumer on the same stored messages,
    // 256 per pull, fire-and-forget acks, no order kept.
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(bus.stream_name("bench")).await.unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("raw".to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    let base_start = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(256)
        .messages()
        .await
        .unwrap();
    for _ in 0..count {
        let message = futures_util::StreamExt::next(&mut messages)
            .await
            .unwrap()
            .unwrap();
        message.ack().await.unwrap();
    }
    let baseline = base_start.elapsed();
    bus.delete_topic("bench").await.unwrap();
    // The group's lease bucket.
    let _ = js.delete_stream(format!("KV_{prefix}_leases")).await;
    Row {
        case: "NATS JetStream receive → ack, in key order, 2 consumers",
        events: count,
        took,
        baseline: ("plain pull consumer, 256 per pull", baseline),
        target: 0,
        // Issue 19: ordered consumption at half the unordered rate or better.
        share_target: 50,
    }
}

/// Ordered consumption: two consumers of a group, events over 64 keys.
async fn redis_consume(url: &str) -> Row {
    let count = n(5_000);
    let prefix = format!("benchc{}", std::process::id());
    let bus = RedisBus::connect(url, RedisConfig::default().with_prefix(&prefix).unwrap())
        .await
        .unwrap();
    bus.publish_batch("bench", keyed_events(count))
        .await
        .unwrap();
    let took = consume_in_order(Arc::new(bus.clone()), "bench", count).await;
    bus.delete_topic("bench").await.unwrap();
    // Baseline: the same bytes in one raw stream, read 100 at a time with
    // XREADGROUP and acked with one XACK per batch, no order kept.
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}:raw");
    let mut pipe = redis::pipe();
    for event in keyed_events(count) {
        pipe.cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("event")
            .arg(event.to_json().unwrap())
            .ignore();
    }
    pipe.query_async::<()>(&mut conn).await.unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("raw")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let base_start = Instant::now();
    let mut read = 0;
    while read < count {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("raw")
            .arg("c")
            .arg("COUNT")
            .arg(100)
            .arg("STREAMS")
            .arg(&key)
            .arg(">")
            .query_async(&mut conn)
            .await
            .unwrap();
        let ids: Vec<String> = reply
            .keys
            .into_iter()
            .flat_map(|k| k.ids.into_iter().map(|id| id.id))
            .collect();
        read += ids.len() as u64;
        let _: i64 = redis::cmd("XACK")
            .arg(&key)
            .arg("raw")
            .arg(ids)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let baseline = base_start.elapsed();
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    Row {
        case: "Redis Streams receive → ack, in key order, 2 consumers",
        events: count,
        took,
        baseline: ("raw XREADGROUP 100 + XACK, no order", baseline),
        target: 0,
        share_target: 50,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench -p saas-benches --bench events -- relay`: only the
    // relay-lag table.
    if std::env::args().skip(1).any(|arg| arg == "relay") {
        match std::env::var("SAAS_TEST_POSTGRES_URL") {
            Ok(url) => relay_lag::report(&url).await,
            Err(_) => println!("skipped relay lag: set SAAS_TEST_POSTGRES_URL"),
        }
        return;
    }
    let mut rows = vec![in_memory().await];
    match std::env::var("SAAS_TEST_POSTGRES_URL") {
        Ok(url) => rows.push(outbox(&url).await),
        Err(_) => println!("skipped outbox: set SAAS_TEST_POSTGRES_URL"),
    }
    match std::env::var("SAAS_TEST_NATS_URL") {
        Ok(url) => {
            rows.push(nats(&url).await);
            rows.push(nats_consume(&url).await);
        }
        Err(_) => println!("skipped NATS: set SAAS_TEST_NATS_URL"),
    }
    match std::env::var("SAAS_TEST_REDIS_URL") {
        Ok(url) => {
            rows.push(redis_streams(&url).await);
            rows.push(redis_consume(&url).await);
        }
        Err(_) => println!("skipped Redis: set SAAS_TEST_REDIS_URL"),
    }
    println!("Taken {}", machine());
    println!("| case | events | events/s | target | baseline | baseline events/s | of baseline |");
    println!("| --- | ---: | ---: | ---: | --- | ---: | ---: |");
    for row in rows {
        let rate = per_sec(row.events, row.took);
        let base_rate = per_sec(row.events, row.baseline.1);
        let share = rate * 100 / base_rate.max(1);
        let target = match (row.target, row.share_target) {
            (0, 0) => "none".to_owned(),
            (0, s) if share >= s => format!("≥ {s} % of baseline (met)"),
            (0, s) => format!("≥ {s} % of baseline (MISSED)"),
            (t, _) if rate >= t => format!("≥ {t} (met)"),
            (t, _) => format!("≥ {t} (MISSED)"),
        };
        println!(
            "| {} | {} | {} | {target} | {} | {} | {share} % |",
            row.case, row.events, rate, row.baseline.0, base_rate
        );
    }
    if let Ok(url) = std::env::var("SAAS_TEST_POSTGRES_URL") {
        relay_lag::report(&url).await;
    }
}
