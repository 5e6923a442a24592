//! The SQLite outbox and the idempotent consumer (inbox), each against a
//! baseline measured in the same run. Run:
//! `cargo bench -p saas-benches --bench events_sql`. PostgreSQL from
//! `SAAS_TEST_POSTGRES_URL` (skipped with a line when unset);
//! `SAAS_EVENTS_BENCH_N` scales the counts in percent (default 100).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use saas_core::TenantId;
use saas_events::middleware::{InMemoryInbox, InboxLayer, TxHandler};
use saas_events::postgres::PgInbox;
use saas_events::router::{Handler, ReceivedEvent, Router, handler_fn};
use saas_events::sqlite::{
    OutboxLocation, OutboxRelay, RelayConfig, SqliteInbox, SqliteOutbox, StaticLocations,
};
use saas_events::{Capabilities, Event, EventError, Publisher};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, SqliteConnection, SqlitePool};

struct Row {
    case: &'static str,
    events: u64,
    took: Duration,
    baseline: (&'static str, Duration),
}

fn per_sec(events: u64, took: Duration) -> u64 {
    (events as f64 / took.as_secs_f64().max(1e-9)) as u64
}

fn n(default: u64) -> u64 {
    let scale: u64 = std::env::var("SAAS_EVENTS_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    (default * scale / 100).max(100)
}

fn events(count: u64) -> Vec<Event> {
    let tenant = TenantId::new();
    (0..count)
        .map(|i| Event::new(tenant, "bench.event", "/bench", &i).unwrap())
        .collect()
}

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

async fn sqlite_file() -> (std::path::PathBuf, SqlitePool) {
    let dir = std::env::temp_dir().join(format!("saas_bench_sql_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(dir.join("bench.sqlite"))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal),
        )
        .await
        .unwrap();
    (dir, pool)
}

/// One writer commits transactions of 100 events; a relay (batches of
/// 2,000) forwards them to a counter; timed until the last is forwarded.
async fn sqlite_outbox(pool: &SqlitePool) -> Row {
    let count = n(100_000) / 100 * 100;
    let outbox = SqliteOutbox::new();
    outbox
        .create_table(&mut pool.acquire().await.unwrap())
        .await
        .unwrap();
    pool.execute(AssertSqlSafe(outbox.create_table_sql_as("plain").unwrap()))
        .await
        .unwrap();
    // Baseline: the same rows, the same statement shape, a plain table.
    let base_start = Instant::now();
    for _ in 0..count / 100 {
        let mut conn = pool.acquire().await.unwrap();
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
        for event in events(100) {
            sqlx::query(
                "INSERT INTO plain (tenant_id, topic, event, created_at) VALUES (?, ?, ?, ?)",
            )
            .bind(event.tenant_id().map(|t| *t.as_uuid()))
            .bind("bench")
            .bind(String::from_utf8(event.to_json().unwrap()).unwrap())
            .bind(0_i64)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    let baseline = base_start.elapsed();

    let counter = Counter::default();
    let relay = OutboxRelay::new(
        Arc::new(StaticLocations(vec![OutboxLocation::new(
            "bench",
            pool.clone(),
        )])),
        Arc::new(counter.clone()),
        RelayConfig::default()
            .with_batch_size(2000)
            .with_poll_interval(Duration::from_millis(1)),
    )
    .spawn();
    let start = Instant::now();
    for _ in 0..count / 100 {
        let mut conn = pool.acquire().await.unwrap();
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
        outbox
            .publish_batch(&mut tx, "bench", events(100))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    while counter.0.load(Ordering::Relaxed) < count {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = start.elapsed();
    relay.shutdown().await;
    Row {
        case: "SQLite outbox commit → relay forward (tx of 100)",
        events: count,
        took,
        baseline: ("same rows into a plain table", baseline),
    }
}

#[derive(Debug)]
struct SqliteEffect;

#[async_trait]
impl TxHandler<SqliteConnection> for SqliteEffect {
    async fn handle(&self, e: &ReceivedEvent, tx: &mut SqliteConnection) -> Result<(), EventError> {
        sqlx::query("INSERT INTO effects (event_id) VALUES (?)")
            .bind(e.event().id())
            .execute(tx)
            .await
            .map_err(EventError::handler)?;
        Ok(())
    }
}

fn received(events: Vec<Event>) -> Vec<ReceivedEvent> {
    events
        .into_iter()
        .map(|e| ReceivedEvent::new(Arc::new(e), "bench", 1))
        .collect()
}

/// Each event handled once in its own transaction writing one effect row.
async fn sqlite_inbox(pool: &SqlitePool) -> Row {
    let count = n(10_000);
    let inbox = SqliteInbox::new();
    inbox
        .create_table(&mut pool.acquire().await.unwrap())
        .await
        .unwrap();
    pool.execute("CREATE TABLE effects (event_id TEXT NOT NULL)")
        .await
        .unwrap();
    let base_start = Instant::now();
    for event in received(events(count)) {
        let mut conn = pool.acquire().await.unwrap();
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
        SqliteEffect.handle(&event, &mut tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    let baseline = base_start.elapsed();
    let handler = inbox.handler("bench", pool.clone(), SqliteEffect).unwrap();
    let start = Instant::now();
    for event in received(events(count)) {
        handler.handle(event).await.unwrap();
    }
    Row {
        case: "SQLite inbox: claim + effect in one tx",
        events: count,
        took: start.elapsed(),
        baseline: ("effect alone in one tx", baseline),
    }
}

#[derive(Debug)]
struct PgEffect;

#[async_trait]
impl TxHandler<PgConnection> for PgEffect {
    async fn handle(&self, e: &ReceivedEvent, tx: &mut PgConnection) -> Result<(), EventError> {
        sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
            .bind(e.event().id())
            .execute(tx)
            .await
            .map_err(EventError::handler)?;
        Ok(())
    }
}

async fn pg_inbox(url: &str) -> Row {
    let count = n(10_000);
    let schema = format!("bench_inbox_{}", std::process::id());
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
        .max_connections(2)
        .connect_with(base.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    let inbox = PgInbox::new();
    inbox
        .create_table(&mut pool.acquire().await.unwrap())
        .await
        .unwrap();
    pool.execute("CREATE TABLE effects (event_id text NOT NULL)")
        .await
        .unwrap();
    let base_start = Instant::now();
    for event in received(events(count)) {
        let mut tx = pool.begin().await.unwrap();
        PgEffect.handle(&event, &mut tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    let baseline = base_start.elapsed();
    let handler = inbox.handler("bench", pool.clone(), PgEffect).unwrap();
    let start = Instant::now();
    for event in received(events(count)) {
        handler.handle(event).await.unwrap();
    }
    let took = start.elapsed();
    pool.close().await;
    admin
        .execute(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .await
        .unwrap();
    Row {
        case: "PostgreSQL inbox: claim + effect in one tx",
        events: count,
        took,
        baseline: ("effect alone in one tx", baseline),
    }
}

/// The in-memory inbox around a handler that does nothing.
async fn memory_inbox() -> Row {
    let count = n(200_000);
    let bare = handler_fn(|_e: ReceivedEvent| async { Ok(()) });
    let base_start = Instant::now();
    for event in received(events(count)) {
        bare.handle(event).await.unwrap();
    }
    let baseline = base_start.elapsed();
    let deduplicated = Router::new()
        .layer(InboxLayer::new("bench", InMemoryInbox::new()).unwrap())
        .fallback(bare)
        .into_handler();
    let start = Instant::now();
    for event in received(events(count)) {
        deduplicated.handle(event).await.unwrap();
    }
    Row {
        case: "in-memory inbox around a no-op handler",
        events: count,
        took: start.elapsed(),
        baseline: ("the no-op handler alone", baseline),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (dir, pool) = sqlite_file().await;
    let mut rows = vec![sqlite_outbox(&pool).await, sqlite_inbox(&pool).await];
    pool.close().await;
    let _ = std::fs::remove_dir_all(dir);
    match std::env::var("SAAS_TEST_POSTGRES_URL") {
        Ok(url) => rows.push(pg_inbox(&url).await),
        Err(_) => println!("skipped PostgreSQL inbox: set SAAS_TEST_POSTGRES_URL"),
    }
    rows.push(memory_inbox().await);
    println!("| case | events | events/s | baseline | baseline events/s | ratio |");
    println!("| --- | ---: | ---: | --- | ---: | ---: |");
    for row in rows {
        let rate = per_sec(row.events, row.took);
        let base = per_sec(row.events, row.baseline.1);
        println!(
            "| {} | {} | {} | {} | {} | {:.2} |",
            row.case,
            row.events,
            rate,
            row.baseline.0,
            base,
            rate as f64 / base.max(1) as f64
        );
    }
}
