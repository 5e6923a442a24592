//! The PostgreSQL relay at 1,000 schema tenants with 10 active: the lag
//! from a writer's commit to the relay forwarding the event, for a relay
//! woken on commit against one visiting every location every pass (the
//! design before), and what the commit notification costs writers.
//! Part of the events benchmark (`cargo bench -p saas-benches --bench
//! events`); `SAAS_RELAY_BENCH_TENANTS` changes the 1,000.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use saas_core::TenantId;
use saas_events::postgres::{OutboxLocation, OutboxRelay, PgOutbox, RelayConfig, StaticLocations};
use saas_events::{Capabilities, Event, EventError, Publisher};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Executor, PgPool};

const ACTIVE: usize = 10;
/// Commits per active tenant, one event each, ~10 ms apart.
const COMMITS: usize = 150;

fn tenants() -> usize {
    std::env::var("SAAS_RELAY_BENCH_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

/// When each event's commit returned, and when the relay forwarded it.
#[derive(Debug, Default, Clone)]
struct Lags {
    committed: Arc<Mutex<HashMap<String, Instant>>>,
    forwarded: Arc<Mutex<HashMap<String, Instant>>>,
}

#[async_trait]
impl Publisher for Lags {
    async fn publish(&self, topic: &str, event: Event) -> Result<(), EventError> {
        self.publish_batch(topic, vec![event]).await
    }
    async fn publish_batch(&self, _: &str, events: Vec<Event>) -> Result<(), EventError> {
        let now = Instant::now();
        let mut forwarded = self.forwarded.lock().unwrap();
        for event in events {
            forwarded.entry(event.id().to_owned()).or_insert(now);
        }
        Ok(())
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}

impl Lags {
    /// The lags in milliseconds, sorted. A relay may forward an event
    /// before its writer has recorded the commit's return: that lag is 0.
    fn sorted_ms(&self) -> Vec<f64> {
        let committed = self.committed.lock().unwrap();
        let forwarded = self.forwarded.lock().unwrap();
        let mut lags: Vec<f64> = committed
            .iter()
            .map(|(id, at)| {
                forwarded
                    .get(id)
                    .map(|f| f.saturating_duration_since(*at).as_secs_f64() * 1000.0)
                    .unwrap_or(f64::INFINITY)
            })
            .collect();
        lags.sort_by(f64::total_cmp);
        lags
    }
}

fn pct(sorted: &[f64], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

struct Fleet {
    prefix: String,
    pool: PgPool,
    count: usize,
}

impl Fleet {
    async fn new(url: &str, count: usize) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(12)
            .connect(url)
            .await
            .unwrap();
        let prefix = format!("bench_relay_{}", std::process::id());
        let table = PgOutbox::new().create_table_sql();
        for chunk in (0..count).collect::<Vec<_>>().chunks(200) {
            let mut sql = String::new();
            for n in chunk {
                sql.push_str(&format!(
                    "CREATE SCHEMA \"{prefix}_{n}\"; SET search_path TO \"{prefix}_{n}\"; {table};"
                ));
            }
            pool.execute(AssertSqlSafe(sql)).await.unwrap();
        }
        Self {
            prefix,
            pool,
            count,
        }
    }

    fn locations(&self) -> Vec<OutboxLocation> {
        (0..self.count)
            .map(|n| {
                let schema = format!("{}_{n}", self.prefix);
                OutboxLocation::new(&schema, self.pool.clone(), Some(schema.clone())).unwrap()
            })
            .collect()
    }

    /// `ACTIVE` writers, each committing `COMMITS` one-event transactions
    /// into its own schema about 10 ms apart; returns when all are done.
    async fn write(&self, outbox: &PgOutbox, lags: &Lags) {
        let mut writers = Vec::new();
        for w in 0..ACTIVE {
            let schema = format!("{}_{}", self.prefix, w * (self.count / ACTIVE).max(1));
            let (pool, outbox, lags) = (self.pool.clone(), outbox.clone(), lags.clone());
            writers.push(tokio::spawn(async move {
                let tenant = TenantId::new();
                for i in 0..COMMITS {
                    let event = Event::new(tenant, "bench.lag", "/bench", &i).unwrap();
                    let id = event.id().to_owned();
                    let mut tx = pool.begin().await.unwrap();
                    tx.execute(AssertSqlSafe(format!(
                        "SET LOCAL search_path TO \"{schema}\""
                    )))
                    .await
                    .unwrap();
                    outbox.publish(&mut tx, "lag", event).await.unwrap();
                    tx.commit().await.unwrap();
                    lags.committed.lock().unwrap().insert(id, Instant::now());
                    // Spread the writers' commits (a prime, not a round 10).
                    tokio::time::sleep(Duration::from_millis(9 + (w as u64 % 3))).await;
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
    }

    async fn cleanup(self) {
        for chunk in (0..self.count).collect::<Vec<_>>().chunks(200) {
            let sql: String = chunk
                .iter()
                .map(|n| format!("DROP SCHEMA \"{}_{n}\" CASCADE;", self.prefix))
                .collect();
            let _ = self.pool.execute(AssertSqlSafe(sql)).await;
        }
        self.pool.close().await;
    }
}

/// One relay over the fleet while the active tenants write; the lags and
/// how many location passes the relay made per second.
async fn run(fleet: &Fleet, config: RelayConfig) -> (Vec<f64>, f64) {
    let lags = Lags::default();
    let relay = OutboxRelay::new(
        Arc::new(StaticLocations(fleet.locations())),
        Arc::new(lags.clone()),
        config,
    )
    .spawn();
    // Let the first full pass (every location) go by before writing.
    while relay.relay().stats().location_passes() < fleet.count as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = (Instant::now(), relay.relay().stats().location_passes());
    fleet.write(&PgOutbox::new(), &lags).await;
    let total = ACTIVE * COMMITS;
    let deadline = Instant::now() + Duration::from_secs(60);
    while lags.forwarded.lock().unwrap().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let passes = relay.relay().stats().location_passes() - start.1;
    let per_sec = passes as f64 / start.0.elapsed().as_secs_f64();
    relay.shutdown().await;
    (lags.sorted_ms(), per_sec)
}

/// What the notification costs writers: 8 writers committing one-event
/// transactions into their own schemas while a relay drains them —
/// announcing (and a relay woken on commit) against not announcing (and a
/// relay visiting every location every pass). Rounds alternate; returns
/// the median commits/s of each.
async fn notify_cost(fleet: &Fleet) -> (f64, f64) {
    let mut on = Vec::new();
    let mut off = Vec::new();
    let locations: Vec<OutboxLocation> = fleet.locations().into_iter().take(8).collect();
    for round in 0..6 {
        let notify = round % 2 == 0;
        let relay = OutboxRelay::new(
            Arc::new(StaticLocations(locations.clone())),
            Arc::new(Lags::default()),
            RelayConfig::default().with_wake_on_commit(notify),
        )
        .spawn();
        let outbox = PgOutbox::new().with_relay_wakeups(notify);
        let start = Instant::now();
        let mut writers = Vec::new();
        for w in 0..8 {
            let schema = format!("{}_{}", fleet.prefix, w);
            let (pool, outbox) = (fleet.pool.clone(), outbox.clone());
            writers.push(tokio::spawn(async move {
                let tenant = TenantId::new();
                for i in 0..500 {
                    let event = Event::new(tenant, "bench.cost", "/bench", &i).unwrap();
                    let mut tx = pool.begin().await.unwrap();
                    tx.execute(AssertSqlSafe(format!(
                        "SET LOCAL search_path TO \"{schema}\""
                    )))
                    .await
                    .unwrap();
                    outbox.publish(&mut tx, "cost", event).await.unwrap();
                    tx.commit().await.unwrap();
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
        let rate = 4_000.0 / start.elapsed().as_secs_f64();
        if notify {
            on.push(rate)
        } else {
            off.push(rate)
        }
        relay.shutdown().await;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(on), median(off))
}

/// Prints the relay-lag table.
pub(crate) async fn report(url: &str) {
    let count = tenants();
    let fleet = Fleet::new(url, count).await;
    let (cost_on, cost_off) = notify_cost(&fleet).await;
    let woken = run(
        &fleet,
        RelayConfig::default().with_poll_interval(Duration::from_millis(20)),
    )
    .await;
    let polling = run(
        &fleet,
        RelayConfig::default()
            .with_poll_interval(Duration::from_millis(20))
            .with_wake_on_commit(false),
    )
    .await;
    fleet.cleanup().await;
    println!();
    println!(
        "Relay lag, commit → forwarded, {count} schema tenants, {ACTIVE} active ({} commits):",
        ACTIVE * COMMITS
    );
    println!("| relay | p50 ms | p99 ms | max ms | location passes/s | target p99 < 100 ms |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    for (name, (lags, per_sec)) in [
        ("woken on commit (default)", &woken),
        ("every location every pass (baseline)", &polling),
    ] {
        let p99 = pct(lags, 99);
        let verdict = if p99 < 100.0 { "met" } else { "MISSED" };
        println!(
            "| {name} | {:.1} | {p99:.1} | {:.1} | {per_sec:.0} | {verdict} |",
            pct(lags, 50),
            lags.last().copied().unwrap_or(f64::NAN),
        );
    }
    println!(
        "Commit notification cost, 8 writers × 500 one-event commits, a relay draining, median of 3 alternating rounds each: {cost_on:.0} commits/s announcing, {cost_off:.0} without ({:.2}×)",
        cost_on / cost_off
    );
}
