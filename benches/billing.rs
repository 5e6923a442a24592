//! Billing throughput. Run: `cargo bench -p saas-benches --bench billing`
//! (PostgreSQL from `SAAS_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`). Prints a markdown table and
//! writes `target/bench-reports/billing.md`.
//!
//! - Durable idempotent ingestion through `PgUsageStore::ingest`
//!   beside a plain bulk `INSERT … SELECT FROM unnest(…) ON CONFLICT DO
//!   NOTHING` of the same rows into an identical table (same columns,
//!   keys and indexes), alternating rounds, same batch size and writers.
//! - For reference, the plain insert into the same table with only its
//!   primary key (no secondary index), in the same rounds: what the
//!   secondary indexes cost, and the ceiling of a plain insert here.
//! - The same rows' shape through `BillingEngine::record_usage_batch`
//!   (reading the batch's subscriptions, admitting each event, then the
//!   store's `ingest`, then quota counting) beside the store's `ingest`,
//!   in the same rounds, same batch size and writers.
//! - The same replayed (every key already stored).
//! - In-memory ingestion, aggregation, and entitlement checks on one core.
//! - Quotas exact across servers (Redis from `SAAS_TEST_REDIS_URL`, default
//!   `redis://127.0.0.1:6379`): durable `QuotaStore::try_consume` on
//!   PostgreSQL and on Redis (`QUOTA_TASKS` concurrent tasks, keys of
//!   `TENANTS` tenants), and `LeasedQuota::try_consume` on one task (one
//!   core) over each, every line against the in-memory entitlement check
//!   of the same run.
//!
//! Sections can be chosen by name: `cargo bench -p saas-benches --bench
//! billing -- quotas` (also `ingestion`, `aggregation`, `entitlements`;
//! none named runs all). `quotas` runs the entitlement check too: it is
//! the quota lines' baseline.
//!
//! Rates are computed in integers (events per second).

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use saas_billing::quota::{
    LeasedQuota, PgQuotaStore, QuotaKey, QuotaStore, RedisQuotaConfig, RedisQuotaStore,
};
use saas_billing::store::InMemoryUsageStore;
use saas_billing::store::postgres::PgBillingStores;
use saas_billing::{
    Aggregation, BillingCalendar, BillingEngine, Cadence, Catalog, Charge, Currency, Decimal,
    EntitlementChecker, Meter, MeterKey, Money, NewSubscription, PlanId, PlanRef, PlanVersion,
    Product, ProductId, SubscriptionId, Tz, UsageEvent, UsageRecord, UsageStore, Window, aggregate,
};
use saas_core::{ManualClock, TenantId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
const TENANTS: usize = 64;
const BATCH: usize = 2_000;
const WRITERS: usize = 2;
const EVENTS_PER_ROUND: usize = 60_000;
const ROUNDS: usize = 4;
const AGGREGATED_EVENTS: usize = 1_000_000;
const CHECKS: u64 = 5_000_000;
/// Concurrent tasks calling a durable quota store (one server's requests).
const QUOTA_TASKS: usize = 8;
/// Durable grants per task and store.
const QUOTA_CALLS_PER_TASK: u64 = 2_500;
/// Grants through a lease, on one task.
const LEASED_CALLS: u64 = 5_000_000;
/// Units a lease takes from the store at a time.
const LEASE: u64 = 1_000;

struct Line {
    case: &'static str,
    rate: u64,
    baseline: Option<u64>,
    target: &'static str,
}

fn rate(count: u64, elapsed: Duration) -> u64 {
    let nanos = elapsed.as_nanos().max(1);
    u64::try_from(u128::from(count) * 1_000_000_000 / nanos).unwrap_or(u64::MAX)
}

fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
}

/// `count` events spread over January, round-robin over the tenants.
fn records(subs: &[(TenantId, SubscriptionId)], prefix: &str, count: usize) -> Vec<UsageRecord> {
    let calls = MeterKey::new("calls").unwrap();
    (0..count)
        .map(|i| {
            let (tenant, sub) = subs[i % subs.len()];
            let at = start() + TimeDelta::milliseconds(i64::try_from(i).unwrap() * 40);
            let event = UsageEvent::new(
                tenant,
                sub,
                calls.clone(),
                Decimal::ONE,
                at,
                format!("{prefix}-{i}"),
            )
            .with_property("region", if i.is_multiple_of(3) { "eu" } else { "us" });
            UsageRecord { event, period: 0 }
        })
        .collect()
}

/// The baseline: the store's insert statement, minus idempotency
/// resolution and seal locking, into `table` (`usage_plain`, or
/// `usage_pk_only` to show what the secondary indexes cost).
async fn plain_insert(pool: &PgPool, table: &'static str, batch: &[UsageRecord]) {
    let mut tenants = Vec::with_capacity(batch.len());
    let mut keys = Vec::with_capacity(batch.len());
    let mut subs = Vec::with_capacity(batch.len());
    let mut meters = Vec::with_capacity(batch.len());
    let mut values: Vec<Decimal> = Vec::with_capacity(batch.len());
    let mut times: Vec<DateTime<Utc>> = Vec::with_capacity(batch.len());
    let mut nanos: Vec<i32> = Vec::with_capacity(batch.len());
    let mut props = Vec::with_capacity(batch.len());
    let mut periods = Vec::with_capacity(batch.len());
    for r in batch {
        let e = &r.event;
        tenants.push(*e.tenant_id.as_uuid());
        keys.push(e.idempotency_key.as_str());
        subs.push(*e.subscription_id.as_uuid());
        meters.push(e.meter.as_str());
        values.push(e.value);
        times.push(e.timestamp);
        nanos.push(i32::try_from(e.timestamp.timestamp_subsec_nanos()).unwrap());
        props.push(serde_json::to_string(&e.properties).unwrap());
        periods.push(r.period);
    }
    // `table` is one of this file's constants, never input.
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (tenant_id, idempotency_key, subscription_id, meter, value, \
         occurred_at, occurred_nanos, properties, period, billed_in) \
         SELECT t, k, s, m, v, o, n, p::jsonb, pe, pe \
         FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::numeric[], \
                     $6::timestamptz[], $7::int4[], $8::text[], $9::int8[]) \
              AS u(t, k, s, m, v, o, n, p, pe) \
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING"
    )))
    .bind(&tenants)
    .bind(&keys)
    .bind(&subs)
    .bind(&meters)
    .bind(&values)
    .bind(&times)
    .bind(&nanos)
    .bind(&props)
    .bind(&periods)
    .execute(pool)
    .await
    .unwrap();
}

/// Runs the batches on `WRITERS` concurrent tasks; returns the elapsed time.
async fn timed_store(store: &Arc<dyn UsageStore>, batches: Vec<Vec<UsageRecord>>) -> Duration {
    let mut lanes: Vec<Vec<Vec<UsageRecord>>> = (0..WRITERS).map(|_| Vec::new()).collect();
    for (i, b) in batches.into_iter().enumerate() {
        lanes[i % WRITERS].push(b);
    }
    let began = Instant::now();
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|lane| {
            let store = store.clone();
            tokio::spawn(async move {
                for batch in lane {
                    let out = store.ingest(batch).await.unwrap();
                    assert!(out.iter().all(Result::is_ok));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    began.elapsed()
}

/// Records the batches through the engine on `WRITERS` concurrent tasks;
/// returns the elapsed time.
async fn timed_engine(engine: &BillingEngine, batches: Vec<Vec<UsageRecord>>) -> Duration {
    let mut lanes: Vec<Vec<Vec<UsageEvent>>> = (0..WRITERS).map(|_| Vec::new()).collect();
    for (i, b) in batches.into_iter().enumerate() {
        lanes[i % WRITERS].push(b.into_iter().map(|r| r.event).collect());
    }
    let began = Instant::now();
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|lane| {
            let engine = engine.clone();
            tokio::spawn(async move {
                for batch in lane {
                    let out = engine.record_usage_batch(batch).await.unwrap();
                    assert!(out.iter().all(Result::is_ok));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    began.elapsed()
}

/// An engine on `stores` with `TENANTS` subscriptions to the `pro` plan
/// created at `start()`, its clock a day later (so January's events are
/// neither before the subscriptions nor in the future).
async fn engine_with_subscriptions(
    stores: &PgBillingStores,
) -> (BillingEngine, Vec<(TenantId, SubscriptionId)>) {
    let clock = ManualClock::new(start());
    let engine = BillingEngine::new(
        Arc::new(catalog()),
        stores.billing_stores(),
        Arc::new(clock.clone()),
    );
    let mut subs = Vec::with_capacity(TENANTS);
    for _ in 0..TENANTS {
        let tenant = TenantId::new();
        let new = NewSubscription::new(tenant, pro(), Currency::USD);
        let sub = engine.create_subscription(new).await.unwrap();
        subs.push((tenant, sub.id()));
    }
    clock.set(start() + TimeDelta::days(1));
    (engine, subs)
}

async fn timed_plain(
    pool: &PgPool,
    table: &'static str,
    batches: Arc<Vec<Vec<UsageRecord>>>,
) -> Duration {
    let began = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (pool, batches) = (pool.clone(), batches.clone());
            tokio::spawn(async move {
                for batch in batches.iter().skip(w).step_by(WRITERS) {
                    plain_insert(&pool, table, batch).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    began.elapsed()
}

fn chunks(records: &[UsageRecord]) -> Vec<Vec<UsageRecord>> {
    records.chunks(BATCH).map(<[UsageRecord]>::to_vec).collect()
}

async fn durable(url: &str, lines: &mut Vec<Line>) {
    let schema = format!("bench_billing_{}", std::process::id());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    admin
        .execute(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .await
        .unwrap();
    let options = PgConnectOptions::from_str(url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(WRITERS).unwrap() + 1)
        .connect_with(options)
        .await
        .unwrap();
    let stores = PgBillingStores::new(pool.clone());
    stores.migrate().await.unwrap();
    pool.execute("CREATE TABLE usage_plain (LIKE billing_usage_events INCLUDING ALL)")
        .await
        .unwrap();
    // The same table with its primary key (the idempotency check) and no
    // secondary index: the most a plain insert of these rows can do here.
    pool.execute(
        "CREATE TABLE usage_pk_only (LIKE billing_usage_events \
           INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS); \
         ALTER TABLE usage_pk_only ADD PRIMARY KEY (tenant_id, idempotency_key)",
    )
    .await
    .unwrap();
    let store: Arc<dyn UsageStore> = Arc::new(stores.usage());
    let subs: Vec<_> = (0..TENANTS)
        .map(|_| (TenantId::new(), SubscriptionId::new()))
        .collect();

    let (engine, engine_subs) = engine_with_subscriptions(&stores).await;

    let (mut store_time, mut plain_time) = (Duration::ZERO, Duration::ZERO);
    let (mut pk_only_time, mut engine_time) = (Duration::ZERO, Duration::ZERO);
    let mut first_round = Vec::new();
    for round in 0..=ROUNDS {
        let rows = records(&subs, &format!("r{round}"), EVENTS_PER_ROUND);
        let plain = timed_plain(&pool, "usage_plain", Arc::new(chunks(&rows))).await;
        let ours = timed_store(&store, chunks(&rows)).await;
        let pk_only = timed_plain(&pool, "usage_pk_only", Arc::new(chunks(&rows))).await;
        // The same shape of rows for the engine's own subscriptions.
        let engine_rows = records(&engine_subs, &format!("e{round}"), EVENTS_PER_ROUND);
        let through_engine = timed_engine(&engine, chunks(&engine_rows)).await;
        if round == 0 {
            first_round = rows; // warm-up, not counted; replayed below
        } else {
            plain_time += plain;
            store_time += ours;
            pk_only_time += pk_only;
            engine_time += through_engine;
        }
    }
    let total = u64::try_from(EVENTS_PER_ROUND * ROUNDS).unwrap();
    lines.push(Line {
        case: "PostgreSQL ingestion, new events (store vs plain INSERT … ON CONFLICT DO NOTHING)",
        rate: rate(total, store_time),
        baseline: Some(rate(total, plain_time)),
        target: "≥ 50,000/s",
    });
    lines.push(Line {
        case: "PostgreSQL ingestion through BillingEngine::record_usage_batch (engine vs store)",
        rate: rate(total, engine_time),
        baseline: Some(rate(total, store_time)),
        target: "—",
    });
    lines.push(Line {
        case: "PostgreSQL plain INSERT, primary key only (no secondary index; for reference)",
        rate: rate(total, pk_only_time),
        baseline: Some(rate(total, plain_time)),
        target: "—",
    });
    let plain = timed_plain(&pool, "usage_plain", Arc::new(chunks(&first_round))).await;
    let ours = timed_store(&store, chunks(&first_round)).await;
    let replayed = u64::try_from(first_round.len()).unwrap();
    lines.push(Line {
        case: "PostgreSQL ingestion, replayed events (all duplicates)",
        rate: rate(replayed, ours),
        baseline: Some(rate(replayed, plain)),
        target: "—",
    });
    pool.close().await;
    admin
        .execute(AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
        .await
        .unwrap();
}

async fn in_memory_ingestion(lines: &mut Vec<Line>) {
    let subs: Vec<_> = (0..TENANTS)
        .map(|_| (TenantId::new(), SubscriptionId::new()))
        .collect();
    let rows = records(&subs, "m", 500_000);
    let store = InMemoryUsageStore::new();
    let batches = chunks(&rows);
    let began = Instant::now();
    for batch in batches {
        black_box(store.ingest(batch).await.unwrap());
    }
    lines.push(Line {
        case: "In-memory store ingestion (one task)",
        rate: rate(500_000, began.elapsed()),
        baseline: None,
        target: "—",
    });
}

fn aggregation(lines: &mut Vec<Line>) {
    let subs = [(TenantId::new(), SubscriptionId::new())];
    let rows = records(&subs, "a", AGGREGATED_EVENTS);
    let events: Vec<UsageEvent> = rows.into_iter().map(|r| r.event).collect();
    let calendar = BillingCalendar::new(start(), Tz::UTC, Cadence::monthly());
    let count = Meter::new(MeterKey::new("calls").unwrap(), Aggregation::Count);
    let by_region =
        Meter::new(MeterKey::new("calls").unwrap(), Aggregation::Sum).group_by("region");
    let n = u64::try_from(events.len()).unwrap();
    let best = |meter: &Meter, window: Window| {
        (0..3)
            .map(|_| {
                let began = Instant::now();
                black_box(aggregate(meter, &events, window).unwrap());
                began.elapsed()
            })
            .min()
            .unwrap()
    };
    lines.push(Line {
        case: "In-memory aggregation: count per billing period (one core)",
        rate: rate(n, best(&count, Window::BillingPeriod(calendar))),
        baseline: None,
        target: "≥ 5,000,000/s",
    });
    lines.push(Line {
        case: "In-memory aggregation: sum by region per day (one core)",
        rate: rate(n, best(&by_region, Window::Day(Tz::UTC))),
        baseline: None,
        target: "—",
    });
}

/// `pro` v1: 90.00 USD a month, a quota of 10¹² calls, `sso`, 50 seats.
fn catalog() -> Catalog {
    let app = ProductId::new("app").unwrap();
    Catalog::builder()
        .product(Product::new(app.clone(), "App"))
        .meter(Meter::new(
            MeterKey::new("calls").unwrap(),
            Aggregation::Count,
        ))
        .plan(
            PlanVersion::builder(PlanId::new("pro").unwrap(), 1, app)
                .recurring(
                    "base",
                    "Pro",
                    [Charge::flat(Money::new(Decimal::from(90), Currency::USD)).unwrap()],
                )
                .quota("api_calls", "calls", Decimal::from(1_000_000_000_000_i64))
                .flag("sso")
                .limit("seats", Decimal::from(50))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn pro() -> PlanRef {
    PlanRef::new(PlanId::new("pro").unwrap(), 1)
}

/// The entitlement lines; returns the check rate (the quota lines' baseline).
fn entitlements(lines: &mut Vec<Line>) -> u64 {
    let catalog = catalog();
    let plan = catalog.plan(&pro()).unwrap();
    let clock = ManualClock::new(start() + TimeDelta::days(3));
    let checker = EntitlementChecker::new(Arc::new(clock));
    let tenants: Vec<TenantId> = (0..1_000).map(|_| TenantId::new()).collect();
    let calendar = BillingCalendar::new(start(), Tz::UTC, Cadence::monthly());
    for t in &tenants {
        checker.set_plan(*t, plan.entitlements(), calendar);
    }
    let features = ["api_calls", "sso", "seats"];
    let began = Instant::now();
    let mut allowed = 0u64;
    for i in 0..CHECKS {
        let i = usize::try_from(i).unwrap();
        let t = tenants[i % tenants.len()];
        let d = checker.check(black_box(t), black_box(features[i % 3]), Decimal::ONE);
        allowed += u64::from(d.is_allowed());
    }
    assert_eq!(allowed, CHECKS);
    let check_rate = rate(CHECKS, began.elapsed());
    lines.push(Line {
        case: "Entitlement check (quota, flag, limit; 1,000 tenants; one core)",
        rate: check_rate,
        baseline: None,
        target: "≥ 1,000,000/s",
    });
    let began = Instant::now();
    for i in 0..CHECKS {
        let i = usize::try_from(i).unwrap();
        black_box(checker.try_consume(tenants[i % tenants.len()], "api_calls", Decimal::ONE));
    }
    lines.push(Line {
        case: "Quota try_consume (one core)",
        rate: rate(CHECKS, began.elapsed()),
        baseline: None,
        target: "—",
    });
    check_rate
}

/// `QUOTA_TASKS` tasks × `QUOTA_CALLS_PER_TASK` durable grants of 1, keys
/// round-robin over `TENANTS` tenants (limits never reached, so every call
/// is a granted write); returns the elapsed time.
async fn timed_durable(store: Arc<dyn QuotaStore>, keys: Arc<Vec<QuotaKey>>) -> Duration {
    let began = Instant::now();
    let tasks: Vec<_> = (0..QUOTA_TASKS)
        .map(|t| {
            let (store, keys) = (store.clone(), keys.clone());
            tokio::spawn(async move {
                for i in 0..QUOTA_CALLS_PER_TASK {
                    let key = &keys[(usize::try_from(i).unwrap() + t) % keys.len()];
                    assert!(
                        store
                            .try_consume(key, 1, u64::MAX >> 1)
                            .await
                            .unwrap()
                            .is_granted()
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    began.elapsed()
}

/// `LEASED_CALLS` grants of 1 through one lease on one task; returns the
/// elapsed time. The lease is released afterwards and the store must
/// count exactly the grants.
async fn timed_leased(store: Arc<dyn QuotaStore>) -> Duration {
    let key = QuotaKey::new(TenantId::new(), "api_calls", "bench").unwrap();
    let lease = LeasedQuota::new(store.clone(), key.clone(), u64::MAX >> 1, LEASE).unwrap();
    let began = Instant::now();
    for _ in 0..LEASED_CALLS {
        assert!(lease.try_consume(black_box(1)).await.unwrap());
    }
    let elapsed = began.elapsed();
    lease.release().await.unwrap();
    assert_eq!(store.used(&key).await.unwrap(), LEASED_CALLS);
    elapsed
}

async fn quotas(url: &str, redis_url: &str, check_rate: u64, lines: &mut Vec<Line>) {
    let keys: Arc<Vec<QuotaKey>> = Arc::new(
        (0..TENANTS)
            .map(|_| QuotaKey::new(TenantId::new(), "api_calls", "2024-01").unwrap())
            .collect(),
    );
    let calls = QUOTA_CALLS_PER_TASK * u64::try_from(QUOTA_TASKS).unwrap();

    let schema = format!("bench_quota_{}", std::process::id());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    admin
        .execute(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .await
        .unwrap();
    let options = PgConnectOptions::from_str(url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(QUOTA_TASKS).unwrap())
        .connect_with(options)
        .await
        .unwrap();
    let postgres = PgQuotaStore::new(pool.clone());
    postgres.migrate().await.unwrap();
    let postgres: Arc<dyn QuotaStore> = Arc::new(postgres);
    // Warm-up: the pool's connections, every key's row.
    timed_durable(postgres.clone(), keys.clone()).await;
    lines.push(Line {
        case: "PostgreSQL QuotaStore::try_consume, durable (8 tasks; vs entitlement check)",
        rate: rate(calls, timed_durable(postgres.clone(), keys.clone()).await),
        baseline: Some(check_rate),
        target: "—",
    });
    lines.push(Line {
        case: "LeasedQuota::try_consume over PostgreSQL, lease 1,000 (one task; vs entitlement check)",
        rate: rate(LEASED_CALLS, timed_leased(postgres).await),
        baseline: Some(check_rate),
        target: "≥ 1,000,000/s",
    });
    pool.close().await;
    admin
        .execute(AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
        .await
        .unwrap();

    let prefix = format!("bench_quota_{}", std::process::id());
    let config = RedisQuotaConfig::default().with_prefix(&prefix).unwrap();
    let redis: Arc<dyn QuotaStore> =
        Arc::new(RedisQuotaStore::connect(redis_url, config).await.unwrap());
    timed_durable(redis.clone(), keys.clone()).await;
    lines.push(Line {
        case: "Redis QuotaStore::try_consume, durable (8 tasks, one connection; vs entitlement check)",
        rate: rate(calls, timed_durable(redis.clone(), keys.clone()).await),
        baseline: Some(check_rate),
        target: "—",
    });
    lines.push(Line {
        case: "LeasedQuota::try_consume over Redis, lease 1,000 (one task; vs entitlement check)",
        rate: rate(LEASED_CALLS, timed_leased(redis).await),
        baseline: Some(check_rate),
        target: "≥ 1,000,000/s",
    });
    delete_redis_keys(redis_url, &format!("{prefix}:*")).await;
}

async fn delete_redis_keys(url: &str, pattern: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// `rate / baseline` with three decimals, or three significant digits
/// below 0.1 (a durable store beside an in-memory check).
fn ratio_text(rate: u64, baseline: u64) -> String {
    let micro = u128::from(rate) * 1_000_000 / u128::from(baseline.max(1));
    if micro >= 100_000 {
        let milli = micro / 1000;
        format!("{}.{:03}×", milli / 1000, milli % 1000)
    } else {
        let mut digits = 6; // decimals
        let mut shown = micro;
        while shown >= 1_000 {
            shown /= 10;
            digits -= 1;
        }
        format!("0.{shown:0digits$}×")
    }
}

fn table(lines: &[Line]) -> String {
    let mut out = String::from(
        "| case | events or checks per second | baseline per second | store / baseline | target |\n\
         |---|---:|---:|---:|---|\n",
    );
    for l in lines {
        let (base, ratio) = match l.baseline {
            Some(b) => (grouped(b), ratio_text(l.rate, b)),
            None => ("—".to_owned(), "—".to_owned()),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            l.case,
            grouped(l.rate),
            base,
            ratio,
            l.target
        ));
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let only = |part: &str| {
        let parts = ["ingestion", "aggregation", "entitlements", "quotas"];
        let chosen: Vec<&String> = args
            .iter()
            .filter(|a| parts.contains(&a.as_str()))
            .collect();
        chosen.is_empty() || chosen.iter().any(|a| *a == part)
    };
    let url = std::env::var("SAAS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let redis_url =
        std::env::var("SAAS_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned());
    let mut lines = Vec::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if only("ingestion") {
        runtime.block_on(durable(&url, &mut lines));
        runtime.block_on(in_memory_ingestion(&mut lines));
    }
    if only("aggregation") {
        aggregation(&mut lines);
    }
    if only("entitlements") || only("quotas") {
        let check_rate = entitlements(&mut lines);
        if only("quotas") {
            runtime.block_on(quotas(&url, &redis_url, check_rate, &mut lines));
        }
    }
    let report = table(&lines);
    println!("{report}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-reports");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("billing.md"), report).unwrap();
}
