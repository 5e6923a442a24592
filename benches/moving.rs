//! Online tenant moves at size: a row tenant of 100,000 and 1,000,000
//! notes (`SAAS_BENCH_MOVE_ROWS=100000,1000000`) among as many rows of
//! four other tenants, moved while eight writers keep inserting and
//! updating its rows — row on one server → row on another (logical
//! replication), row → its own database (replication), row → schema
//! (one database: a copy caught up from triggers). Reports, per move:
//!
//! - the writers' stall: latency of every write that overlapped the fence
//!   (p50 / p99 / max, retries included), next to the writes' p50 outside;
//! - copy throughput: the tenant's rows over the time their copy took —
//!   the initial copy (`MoveReport::initial_copy`: for replication the
//!   publication, the slot over a replication connection, the mover's
//!   `COPY` under the slot's exported snapshot and the subscription — or,
//!   where no replication connection can be made, PostgreSQL's table sync
//!   until every table's rows are copied; for a captured copy the
//!   triggers and the `COPY`) —
//!   and over the whole copy phase (initial copy and catch-up with the
//!   writes made meanwhile: "copy + catch-up"), next to the same rows streamed by hand with
//!   `COPY (SELECT … WHERE tenant_id = …) TO STDOUT` into `COPY … FROM
//!   STDIN` on the other server, in the same run, while the same writers
//!   write (median of three);
//! - the mover's memory: the process's peak heap during the move above
//!   what it held when the move started (writers included), from a
//!   counting allocator — flat in the tenant's size when nothing is held
//!   whole.
//!
//! `SAAS_BENCH_MOVE_ONLY=database` (or `server 2`, `schema`) runs only the
//! moves whose name contains it.
//!
//! Run: `cargo bench -p saas-benches --bench moving` with
//! `SAAS_TEST_POSTGRES_URL` and `SAAS_TEST_POSTGRES2_URL` (both servers
//! `wal_level = logical`, as `.ci/run` sets them).

#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use saas_core::{TenantContext, TenantSlug};
use saas_tenancy::postgres::{
    MoveOptions, MovePhase, MoveReport, PgClusterConfig, PgTenancy, SqlIdent, TenantTable,
};
use saas_tenancy::testing::pg::{NOTES_SHARED, tenant_migrations};
use saas_tenancy::testing::unique_name;
use saas_tenancy::{ClusterName, NewTenant, PgCatalog, Placement, Strategy};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool};

/// Counts the heap the process holds, and its peak since the last reset.
struct CountingAlloc;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are plain atomics.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is System's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = HELD.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) };
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is System's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grew = new_size - layout.size();
                let now = HELD.fetch_add(grew, Ordering::Relaxed) + grew;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                HELD.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const WRITERS: usize = 8;
const NEIGHBOURS: usize = 4;
/// A note's body: about the size of a short text row.
const BODY: &str =
    "'lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor #'";

fn sizes() -> Vec<u64> {
    std::env::var("SAAS_BENCH_MOVE_ROWS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<u64>| !v.is_empty())
        .unwrap_or_else(|| vec![100_000, 1_000_000])
}

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
    let db = unique_name("saas_bm");
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
    // The baseline's target: the same columns, no rows, in a schema off
    // the search path (not a tenant table, so moves ignore it).
    admin
        .execute(
            "CREATE SCHEMA baseline; \
             CREATE TABLE baseline.notes_copy (LIKE notes INCLUDING ALL)",
        )
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
    tenancy: PgTenancy,
    tenants: Vec<saas_core::TenantId>,
}

impl World {
    async fn new(url1: &str, url2: &str) -> World {
        let one = server(url1, "one").await;
        let two = server(url2, "two").await;
        let catalog = PgCatalog::new(one.admin.clone());
        catalog.migrate().await.unwrap();
        let role = unique_name("saas_bmrt");
        let mut builder = PgTenancy::builder(Arc::new(catalog))
            .tenant_table(TenantTable::new("notes").unwrap())
            .tenant_migrations(Migrator::with_migrations(tenant_migrations()))
            .follow_moves(true)
            .move_wait(Duration::from_secs(60));
        for s in [&one, &two] {
            let mut config = PgClusterConfig::new(
                s.name.clone(),
                s.options.clone(),
                SqlIdent::new(&role).unwrap(),
            );
            config.max_connections = 16;
            builder = builder.cluster(config);
        }
        let tenancy = builder.build().unwrap();
        tenancy.setup().await.unwrap();
        World {
            one,
            two,
            role,
            tenancy,
            tenants: Vec::new(),
        }
    }

    /// A row tenant on `one` holding `rows` notes.
    async fn tenant(&mut self, rows: u64) -> TenantContext {
        let slug = unique_name("bm").replace('_', "-");
        let new = NewTenant::new(
            TenantSlug::parse(&slug).unwrap(),
            &slug,
            Strategy::Shared,
            self.one.name.clone(),
        )
        .unwrap();
        let record = self.tenancy.provision(new).await.unwrap();
        self.tenants.push(record.id);
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO notes (tenant_id, body) SELECT $1, {BODY} || g FROM generate_series(1, $2) g"
        )))
        .bind(record.id)
        .bind(i64::try_from(rows).unwrap())
        .execute(&self.one.admin)
        .await
        .unwrap();
        TenantContext::new(record.id, record.slug)
    }

    /// Streams the tenant's notes from `one` into `two`'s `notes_copy`
    /// through this process, as a hand-written move would; rows per
    /// second, median of three.
    async fn copy_baseline(&self, ctx: &TenantContext) -> f64 {
        let mut rates = Vec::new();
        for _ in 0..3 {
            self.two
                .admin
                .execute("TRUNCATE baseline.notes_copy")
                .await
                .unwrap();
            let mut src = self.one.admin.acquire().await.unwrap();
            let mut dst = self.two.admin.acquire().await.unwrap();
            let start = Instant::now();
            let mut sink = dst
                .copy_in_raw("COPY baseline.notes_copy (tenant_id, id, body) FROM STDIN")
                .await
                .unwrap();
            let out = format!(
                "COPY (SELECT tenant_id, id, body FROM notes WHERE tenant_id = '{}') TO STDOUT",
                ctx.tenant_id()
            );
            let mut stream = src.copy_out_raw(&out).await.unwrap();
            while let Some(chunk) = stream.try_next().await.unwrap() {
                sink.send(chunk).await.unwrap();
            }
            drop(stream);
            let rows = sink.finish().await.unwrap();
            rates.push(rows as f64 / start.elapsed().as_secs_f64());
        }
        self.two
            .admin
            .execute("TRUNCATE baseline.notes_copy")
            .await
            .unwrap();
        rates.sort_by(f64::total_cmp);
        rates[1]
    }

    async fn cleanup(self) {
        // Pools still open are cut by `WITH (FORCE)`.
        let mut databases: Vec<String> = self
            .tenants
            .iter()
            .map(|id| format!("t_{}", id.simple()))
            .collect();
        for s in [&self.one, &self.two] {
            s.admin.close().await;
            databases.push(s.db.clone());
            for db in &databases {
                drop_replication(s, db).await;
                s.root
                    .execute(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
                    )))
                    .await
                    .unwrap();
            }
            databases.pop();
            for role in databases.iter().chain([&self.role]) {
                let _ = s
                    .root
                    .execute(AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{role}\"")))
                    .await;
            }
        }
    }
}

/// Subscriptions and slots a move left in `db` (none after a clean move).
async fn drop_replication(s: &Server, db: &str) {
    if let Ok(pool) = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(s.options.clone().database(db))
        .await
    {
        let subs: Vec<String> = sqlx::query_scalar(
            "SELECT subname::text FROM pg_subscription WHERE subdbid = \
             (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        for sub in subs {
            for sql in [
                format!("ALTER SUBSCRIPTION \"{sub}\" DISABLE"),
                format!("ALTER SUBSCRIPTION \"{sub}\" SET (slot_name = NONE)"),
                format!("DROP SUBSCRIPTION \"{sub}\""),
            ] {
                let _ = pool.execute(AssertSqlSafe(sql)).await;
            }
        }
        pool.close().await;
    }
    let _ = sqlx::query(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
         WHERE database = $1 AND NOT active",
    )
    .bind(db)
    .execute(&s.root)
    .await;
}

/// One write: its first attempt's start and its latency until
/// acknowledged (retries included).
type Write = (Instant, Duration);

/// Eight writers inserting, and every third write updating one of their
/// rows, until `stop`.
fn writers(
    tenancy: &PgTenancy,
    ctx: &TenantContext,
    stop: &Arc<AtomicBool>,
    log: &Arc<Mutex<Vec<Write>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| {
            let (tenancy, ctx, stop, log) = (
                tenancy.clone(),
                ctx.clone(),
                Arc::clone(stop),
                Arc::clone(log),
            );
            tokio::spawn(async move {
                // Room for every write of a long move, so the writers do not
                // count against the mover's heap.
                let mut mine: Vec<i64> = Vec::with_capacity(200_000);
                let mut n = 0usize;
                while !stop.load(Ordering::Acquire) {
                    n += 1;
                    let start = Instant::now();
                    let update = n
                        .is_multiple_of(3)
                        .then(|| mine.get(n / 3 % mine.len().max(1)))
                        .flatten();
                    loop {
                        match write(&tenancy, &ctx, update.copied(), &format!("w{w}-{n}")).await {
                            Ok(Some(id)) => {
                                mine.push(id);
                                break;
                            }
                            Ok(None) => break,
                            Err(_) if stop.load(Ordering::Acquire) => return,
                            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                    log.lock().unwrap().push((start, start.elapsed()));
                }
            })
        })
        .collect()
}

async fn write(
    tenancy: &PgTenancy,
    ctx: &TenantContext,
    update: Option<i64>,
    body: &str,
) -> Result<Option<i64>, saas_tenancy::TenancyError> {
    let mut tx = tenancy.begin(ctx).await?;
    let id = match update {
        Some(id) => {
            // By the whole key: a schema or database tenant's `notes` has
            // no row-level policy adding the tenant, and `id` alone would
            // scan its table (what a row tenant's policy hides).
            sqlx::query("UPDATE notes SET body = $2 WHERE tenant_id = $3 AND id = $1")
                .bind(id)
                .bind(body)
                .bind(ctx.tenant_id())
                .execute(&mut *tx)
                .await?;
            None
        }
        None => Some(
            sqlx::query_scalar("INSERT INTO notes (tenant_id, body) VALUES ($1, $2) RETURNING id")
                .bind(ctx.tenant_id())
                .bind(body)
                .fetch_one(&mut *tx)
                .await?,
        ),
    };
    tx.commit().await?;
    Ok(id)
}

fn percentile(sorted: &[Duration], q: usize) -> Duration {
    let i = sorted.len().saturating_sub(1) * q / 100;
    sorted.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// What one move measured.
struct Measured {
    kind: &'static str,
    rows: u64,
    report: MoveReport,
    stalled: Vec<Duration>,
    outside_p50: Duration,
    copy_rate: f64,
    /// Replication: over the initial copy and the catch-up.
    copy_and_catch_up_rate: Option<f64>,
    baseline_rate: f64,
    heap_peak: usize,
}

async fn measure(world: &mut World, kind: &'static str, rows: u64) -> Measured {
    let ctx = world.tenant(rows).await;
    let to = match kind {
        "row → row (server 2)" => Placement::Shared {
            cluster: world.two.name.clone(),
        },
        "row → database" => {
            Placement::derive(Strategy::Database, world.one.name.clone(), ctx.tenant_id())
        }
        _ => Placement::derive(Strategy::Schema, world.one.name.clone(), ctx.tenant_id()),
    };
    world
        .one
        .admin
        .execute("VACUUM ANALYZE notes")
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::with_capacity(2_000_000)));
    let tasks = writers(&world.tenancy, &ctx, &stop, &log);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The baseline copies while the writers write, as the move will.
    let baseline_rate = world.copy_baseline(&ctx).await;
    let marks: Arc<Mutex<Vec<(MovePhase, Instant)>>> = Arc::new(Mutex::new(Vec::with_capacity(64)));
    let seen = Arc::clone(&marks);
    let copied_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let copied = Arc::clone(&copied_at);
    let options = MoveOptions::default().on_progress(move |p| {
        let mut seen = seen.lock().unwrap();
        if seen.last().is_none_or(|(phase, _)| *phase != p.phase) {
            seen.push((p.phase, Instant::now()));
        }
        let mut copied = copied.lock().unwrap();
        if p.tables > 0 && p.tables_ready == p.tables && copied.is_none() {
            *copied = Some(Instant::now());
        }
    });
    let held = HELD.load(Ordering::Relaxed);
    PEAK.store(held, Ordering::Relaxed);
    let report = world
        .tenancy
        .move_tenant(ctx.tenant_id(), to, options)
        .await
        .unwrap();
    let heap_peak = PEAK.load(Ordering::Relaxed).saturating_sub(held);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await.unwrap();
    }

    let marks = marks.lock().unwrap().clone();
    let start = marks.first().map(|(_, t)| *t).unwrap();
    let mut timeline: Vec<String> = report
        .phases
        .iter()
        .map(|(p, d)| format!("{p} {}", ms(*d)))
        .collect();
    if let Some(took) = report.initial_copy {
        timeline.push(format!("initial copy {}", ms(took)));
    }
    if let Some(why) = &report.copied_by_table_sync {
        timeline.push(format!("copied by PostgreSQL's table sync ({why})"));
    }
    if let Some(at) = *copied_at.lock().unwrap() {
        timeline.push(format!("tables ready at {}", ms(at - start)));
    }
    eprintln!("moving: {kind}, {rows} rows: {}", timeline.join(", "));
    let at = |phase: MovePhase| marks.iter().find(|(p, _)| *p == phase).map(|(_, t)| *t);
    let fence_start = at(MovePhase::Fenced).unwrap();
    let fence_end = at(MovePhase::Done).unwrap();
    let (mut stalled, mut outside): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for (start, took) in log.lock().unwrap().iter() {
        if *start <= fence_end && *start + *took >= fence_start {
            stalled.push(*took);
        } else {
            outside.push(*took);
        }
    }
    stalled.sort_unstable();
    outside.sort_unstable();
    // The slowest writes, against the fence: when they started and how
    // long they took (what a stall past the cut-over waited for shows here).
    let mut slowest: Vec<(Instant, Duration)> = log.lock().unwrap().clone();
    slowest.sort_unstable_by_key(|(_, took)| std::cmp::Reverse(*took));
    let offset = |t: Instant| {
        t.checked_duration_since(fence_start).map_or_else(
            || format!("-{}", ms(fence_start - t)),
            |d| format!("+{}", ms(d)),
        )
    };
    eprintln!(
        "moving: {kind}, {rows} rows: fence ends at {}; slowest writes (start: took) {}",
        offset(fence_end),
        slowest
            .iter()
            .take(3)
            .map(|(start, took)| format!("{}: {}", offset(*start), ms(*took)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let phase = |phase: MovePhase| {
        report
            .phases
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, d)| *d)
            .unwrap()
    };
    let moved = report.rows.values().sum::<u64>() as f64;
    // An online copy (replication, or a captured copy) reports its
    // initial copy; a copy under the fence is the synced phase.
    let (copied, copy_and_catch_up_rate) = match report.initial_copy {
        Some(initial) => (
            initial,
            Some(moved / phase(MovePhase::Copying).as_secs_f64()),
        ),
        None => (phase(MovePhase::Synced), None),
    };
    Measured {
        kind,
        rows,
        stalled,
        outside_p50: percentile(&outside, 50),
        copy_rate: moved / copied.as_secs_f64(),
        copy_and_catch_up_rate,
        baseline_rate,
        heap_peak,
        report,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let url1 = std::env::var("SAAS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let Ok(url2) = std::env::var("SAAS_TEST_POSTGRES2_URL") else {
        eprintln!("moving: set SAAS_TEST_POSTGRES2_URL (a second server, wal_level = logical)");
        std::process::exit(2);
    };
    let mut world = World::new(&url1, &url2).await;
    let sizes = sizes();
    // The neighbours: as many rows as the largest moved tenant, over four.
    let biggest = sizes.iter().copied().max().unwrap_or(0);
    for _ in 0..NEIGHBOURS {
        world.tenant(biggest / NEIGHBOURS as u64).await;
    }
    let mut all = Vec::new();
    for &rows in &sizes {
        let only = std::env::var("SAAS_BENCH_MOVE_ONLY").unwrap_or_default();
        for kind in ["row → row (server 2)", "row → database", "row → schema"] {
            if !kind.contains(only.as_str()) {
                continue;
            }
            let m = measure(&mut world, kind, rows).await;
            eprintln!(
                "moving: {kind}, {rows} rows: fence {} (stall p99 {}), copy {:.0} rows/s vs COPY {:.0}",
                ms(m.report.fence),
                ms(percentile(&m.stalled, 99)),
                m.copy_rate,
                m.baseline_rate
            );
            all.push(m);
        }
    }
    world.cleanup().await;

    println!(
        "| move | tenant rows | method | fence | writes in the fence | stall p50 | stall p99 | \
         stall max | writes' p50 outside | copy rows/s | COPY rows/s | copy / COPY | \
         copy + catch-up / COPY | mover heap peak |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in &all {
        println!(
            "| {} | {} | {:?} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2}× | {} | {:.1} MiB |",
            m.kind,
            m.rows,
            m.report.method,
            ms(m.report.fence),
            m.stalled.len(),
            ms(percentile(&m.stalled, 50)),
            ms(percentile(&m.stalled, 99)),
            ms(m.stalled.last().copied().unwrap_or_default()),
            ms(m.outside_p50),
            m.copy_rate,
            m.baseline_rate,
            m.copy_rate / m.baseline_rate,
            m.copy_and_catch_up_rate.map_or_else(
                || "—".to_owned(),
                |r| format!("{:.2}×", r / m.baseline_rate)
            ),
            m.heap_peak as f64 / (1024.0 * 1024.0),
        );
    }
}
