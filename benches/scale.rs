//! The strategies compared at scale: for N tenants (default 10, 100 and
//! 1,000; `SAAS_SCALE_TENANTS=10,100,1000,10000` for the full run), row
//! and schema placements (database with `SAAS_SCALE_DATABASES=1`, up to
//! `SAAS_SCALE_MAX_DATABASES`, default 100), each scope mode, uniform and
//! Zipf(1.1) traffic, 1 / 8 / 32 concurrent clients (`SAAS_SCALE_CLIENTS`):
//! p50 / p99 latency and throughput against the hand-written query at the
//! same concurrency, server connections and client memory.
//!
//! Run: `cargo bench -p saas-benches --bench scale` (PostgreSQL from
//! `SAAS_TEST_POSTGRES_URL`). Writes `benches/reports/scale.md` and its
//! charts (`scale-*.svg`) next to it.
//!
//! Every request is `acquire` (or a plain pool's checkout) and
//! `SELECT count(*)` over the tenant's five notes. The baseline is the
//! same query filtered by hand (`WHERE tenant_id = $1`) on a table
//! without row-level security, through a plain pool of one connection per
//! client — what an application without tenancy would run. Phases of
//! baseline and scoped requests alternate (two each, after a warm-up of
//! both), of 2,400 requests over all clients (600 for database tenants,
//! whose requests past the budget connect). Schema fleets also time the
//! runtime role's first `SET ROLE` on a new connection, and after a
//! sign-up (see `Membership`).

#![allow(clippy::unwrap_used)]

mod scale_chart;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use saas_benches::Zipf;
use saas_core::TenantContext;
use saas_tenancy::Strategy;
use saas_tenancy::postgres::{PgTenancy, PoolLimits, ScopeMode};
use saas_tenancy::testing::pg::PgSandbox;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool};

/// The tenant-pool budget of TenantPools: 16 pools of 2.
const BUDGET: u32 = 32;
/// Connections of the shared runtime pool and of the baseline's pool: with
/// the budget, the admin and the sandbox's own, within PostgreSQL's
/// default 100 connections.
const POOL: u32 = 16;
const PER_TENANT: u32 = 2;
const ZIPF_S: f64 = 1.1;
/// Requests per phase, over all clients.
const PER_PHASE: usize = 2_400;
/// Requests per phase for database tenants: past the budget each request
/// may open a connection (tens of milliseconds), so fewer requests keep
/// the full grid within an hour.
const PER_PHASE_DATABASE: usize = 600;

fn list(var: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(var)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

/// How tenants are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Access {
    Uniform,
    Zipf,
}

/// One cell of the grid.
#[derive(Debug, Clone)]
pub(crate) struct Cell {
    pub(crate) strategy: &'static str,
    pub(crate) tenants: usize,
    pub(crate) mode: ScopeMode,
    pub(crate) access: Access,
    pub(crate) clients: usize,
    pub(crate) base_p50: Duration,
    pub(crate) base_p99: Duration,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) base_rps: f64,
    pub(crate) rps: f64,
    /// The most server connections the tenancy held during its phases.
    pub(crate) connections: u64,
    /// The process's resident memory after the scoped phases, MiB.
    pub(crate) rss_mib: f64,
}

impl Cell {
    pub(crate) fn ratio50(&self) -> f64 {
        self.p50.as_secs_f64() / self.base_p50.as_secs_f64().max(1e-9)
    }
    pub(crate) fn ratio99(&self) -> f64 {
        self.p99.as_secs_f64() / self.base_p99.as_secs_f64().max(1e-9)
    }
}

fn percentile(sorted: &[Duration], q: usize) -> Duration {
    let i = sorted.len().saturating_sub(1) * q / 100;
    sorted.get(i).copied().unwrap_or_default()
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Runs `clients` clients over `per_phase` requests; returns every
/// latency and the phase's wall time.
async fn phase<F, Fut>(
    seed: u64,
    (clients, per_phase): (usize, usize),
    tenants: usize,
    access: Access,
    request: F,
) -> (Vec<Duration>, Duration)
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let each = (per_phase / clients).max(50);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let seed = (seed * 64 + client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let s = if access == Access::Zipf { ZIPF_S } else { 0.0 };
            let mut draw = Zipf::new(tenants, s, seed);
            let mut took = Vec::with_capacity(each);
            for _ in 0..each {
                let tenant = draw.next();
                let at = Instant::now();
                request(tenant).await;
                took.push(at.elapsed());
            }
            took
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    (all, start.elapsed())
}

/// Samples the server connections of the tenancy's runtime role (every
/// tenancy connection logs in as it; the baseline and the admin connect
/// as `postgres`) until stopped; the highest count seen.
fn sample_connections(
    admin: PgPool,
    role: String,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        let most = AtomicU64::new(0);
        while !flag.load(Ordering::Relaxed) {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' AND usename = $1",
            )
            .bind(&role)
            .fetch_one(&admin)
            .await
            .unwrap_or(0);
            most.fetch_max(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        most.load(Ordering::Relaxed)
    });
    (stop, task)
}

/// Waits (up to 10 s) until `role` holds at most a pool's worth of server
/// connections (a dropped tenancy's tenant pools close as they drop).
async fn wait_for_no_connections(admin: &PgPool, role: &str) {
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND usename = $1",
        )
        .bind(role)
        .fetch_one(admin)
        .await
        .unwrap_or(0);
        if n <= i64::from(POOL) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("scale: connections of the last cell still open after 10 s");
}

/// A fleet of `n` tenants of one strategy, five notes each, and the plain
/// copy the baseline reads.
struct Fleet {
    sandbox: PgSandbox,
    tenants: Arc<Vec<TenantContext>>,
    plain: PgPool,
    membership: Option<Membership>,
}

async fn fleet(url: &str, strategy: Strategy, n: usize) -> Fleet {
    let limits = PoolLimits::new(BUDGET, PER_TENANT);
    let mut sandbox = PgSandbox::with_runtime_pool(url, ScopeMode::Shared, limits, POOL)
        .await
        .unwrap();
    let started = Instant::now();
    let mut tenants = Vec::with_capacity(n);
    // Every tenant first, then their notes: on PostgreSQL 15 each schema
    // tenant's `GRANT` makes every backend rebuild its list of the runtime
    // role's memberships at its next `SET ROLE` (see `membership_cost`),
    // so seeding each tenant right after its sign-up would pay that
    // rebuild once per tenant — what stopped the first 10,000-tenant run.
    for i in 0..n {
        tenants.push(sandbox.tenant(&format!("s{i}"), strategy).await.unwrap());
    }
    let provisioned = started.elapsed();
    for ctx in &tenants {
        let mut tx = sandbox.tenancy.begin(ctx).await.unwrap();
        sqlx::query("INSERT INTO notes (tenant_id, body) SELECT $1, 'note ' || g FROM generate_series(1, 5) g")
            .bind(ctx.tenant_id())
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    // The seeding tenancy's connections are not the measured ones.
    if let Ok(pool) = sandbox.tenancy.runtime_pool(&sandbox.cluster) {
        pool.close().await;
    }
    eprintln!(
        "scale: {n} {strategy:?} tenants provisioned in {:.1} s, seeded in {:.1} s",
        provisioned.as_secs_f64(),
        (started.elapsed() - provisioned).as_secs_f64()
    );
    sandbox
        .admin
        .execute(AssertSqlSafe(
            "CREATE TABLE notes_plain (tenant_id uuid NOT NULL, id bigserial, body text NOT NULL, \
             PRIMARY KEY (tenant_id, id))",
        ))
        .await
        .unwrap();
    for chunk in tenants.chunks(1_000) {
        let ids: Vec<uuid::Uuid> = chunk.iter().map(|t| *t.tenant_id().as_uuid()).collect();
        sqlx::query(
            "INSERT INTO notes_plain (tenant_id, body) \
             SELECT t, 'note ' || g FROM unnest($1::uuid[]) t, generate_series(1, 5) g",
        )
        .bind(ids)
        .execute(&sandbox.admin)
        .await
        .unwrap();
    }
    let options: PgConnectOptions = url.parse().unwrap();
    let plain = PgPoolOptions::new()
        .max_connections(POOL)
        .connect_with(options.options([("search_path", sandbox.shared_schema.as_str())]))
        .await
        .unwrap();
    let membership = match strategy {
        Strategy::Schema => Some(membership_cost(url, &mut sandbox, n).await),
        _ => None,
    };
    Fleet {
        sandbox,
        tenants: Arc::new(tenants),
        plain,
        membership,
    }
}

/// What PostgreSQL's role membership costs a fleet of schema tenants:
/// each tenant has a role the runtime role is a member of (so that it can
/// `SET ROLE`), and a backend builds the list of the runtime role's
/// memberships the first time it checks one — on a new connection, and
/// again after any `CREATE ROLE` or `GRANT` anywhere on the server.
#[derive(Debug, Clone)]
pub(crate) struct Membership {
    pub(crate) tenants: usize,
    pub(crate) memberships: i64,
    /// The first `SET ROLE` on a new connection of the runtime role.
    pub(crate) first: Duration,
    /// The next one on that connection.
    pub(crate) warm: Duration,
    /// The next one after another tenant signed up (its `GRANT`).
    pub(crate) after_signup: Duration,
}

async fn membership_cost(url: &str, sandbox: &mut PgSandbox, n: usize) -> Membership {
    use sqlx::Connection;
    let (memberships, role): (i64, String) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid),                 (SELECT quote_ident(t.rolname) FROM pg_auth_members m \
                 JOIN pg_roles t ON t.oid = m.roleid WHERE m.member = r.oid LIMIT 1)          FROM pg_roles r WHERE r.rolname = $1",
    )
    .bind(&sandbox.runtime_role)
    .fetch_one(&sandbox.admin)
    .await
    .unwrap();
    let options: PgConnectOptions = url.parse().unwrap();
    let mut conn = sqlx::PgConnection::connect_with(&options.username(&sandbox.runtime_role))
        .await
        .unwrap();
    let set_role = format!("SET ROLE {role}");
    let timed = async |conn: &mut sqlx::PgConnection| {
        conn.execute("RESET ROLE").await.unwrap();
        let at = Instant::now();
        conn.execute(AssertSqlSafe(set_role.clone())).await.unwrap();
        at.elapsed()
    };
    let first = timed(&mut conn).await;
    let warm = timed(&mut conn).await;
    sandbox
        .tenant("signed-up-late", Strategy::Schema)
        .await
        .unwrap();
    let after_signup = timed(&mut conn).await;
    conn.close().await.unwrap();
    let m = Membership {
        tenants: n,
        memberships,
        first,
        warm,
        after_signup,
    };
    eprintln!("scale: {m:?}");
    m
}

/// Every (mode, access, clients) cell over one fleet.
async fn cells(fleet: &Fleet, label: &'static str, clients: &[usize], out: &mut Vec<Cell>) {
    let n = fleet.tenants.len();
    let per_phase = match label {
        "database" => PER_PHASE_DATABASE,
        _ => PER_PHASE,
    };
    for mode in [ScopeMode::Shared, ScopeMode::TenantPools] {
        // One tenancy per mode, its pools kept from cell to cell (each
        // cell warms up first); closed before the next mode's.
        let tenancy: Arc<PgTenancy> = Arc::new(
            fleet
                .sandbox
                .tenancy_with(|b| {
                    b.scope_mode(mode)
                        .pool_limits(PoolLimits::new(BUDGET, PER_TENANT))
                })
                .unwrap(),
        );
        for access in [Access::Uniform, Access::Zipf] {
            for &c in clients {
                let baseline = {
                    let (plain, tenants) = (fleet.plain.clone(), Arc::clone(&fleet.tenants));
                    move |i: usize| {
                        let (plain, tenant) = (plain.clone(), tenants[i].tenant_id());
                        async move {
                            let n: i64 = sqlx::query_scalar(
                                "SELECT count(*) FROM notes_plain WHERE tenant_id = $1",
                            )
                            .bind(tenant)
                            .fetch_one(&plain)
                            .await
                            .unwrap();
                            assert_eq!(n, 5);
                        }
                    }
                };
                let scoped = {
                    let (tenancy, tenants) = (Arc::clone(&tenancy), Arc::clone(&fleet.tenants));
                    move |i: usize| {
                        let (tenancy, tenants) = (Arc::clone(&tenancy), Arc::clone(&tenants));
                        async move {
                            let mut conn = tenancy.acquire(&tenants[i]).await.unwrap();
                            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
                                .fetch_one(&mut *conn)
                                .await
                                .unwrap();
                            assert_eq!(n, 5);
                        }
                    }
                };
                phase(99, (c, per_phase), n, access, baseline.clone()).await;
                phase(99, (c, per_phase), n, access, scoped.clone()).await;
                let (stop, sampler) = sample_connections(
                    fleet.sandbox.admin.clone(),
                    fleet.sandbox.runtime_role.clone(),
                );
                let (mut base, mut cand) = (Vec::new(), Vec::new());
                let (mut base_time, mut cand_time) = (Duration::ZERO, Duration::ZERO);
                for p in 0..4u64 {
                    if (p % 2 == 0) == (p < 2) {
                        let (l, t) = phase(p, (c, per_phase), n, access, baseline.clone()).await;
                        base.extend(l);
                        base_time += t;
                    } else {
                        let (l, t) = phase(p, (c, per_phase), n, access, scoped.clone()).await;
                        cand.extend(l);
                        cand_time += t;
                    }
                }
                stop.store(true, Ordering::Relaxed);
                let connections = sampler.await.unwrap();
                let rss = rss_mib();
                base.sort_unstable();
                cand.sort_unstable();
                let cell = Cell {
                    strategy: label,
                    tenants: n,
                    mode,
                    access,
                    clients: c,
                    base_p50: percentile(&base, 50),
                    base_p99: percentile(&base, 99),
                    p50: percentile(&cand, 50),
                    p99: percentile(&cand, 99),
                    base_rps: base.len() as f64 / base_time.as_secs_f64(),
                    rps: cand.len() as f64 / cand_time.as_secs_f64(),
                    connections,
                    rss_mib: rss,
                };
                eprintln!(
                    "scale: {label} n={n} {mode:?} {access:?} c={c}: p50 {:.2}× p99 {:.2}×",
                    cell.ratio50(),
                    cell.ratio99()
                );
                out.push(cell);
            }
        }
        tenancy.release_kept_connections();
        if let Ok(pool) = tenancy.runtime_pool(&fleet.sandbox.cluster) {
            pool.close().await;
        }
        drop(tenancy);
        wait_for_no_connections(&fleet.sandbox.admin, &fleet.sandbox.runtime_role).await;
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {mem:.0} GiB; load average at the end {}",
        load.trim()
    )
}

fn report(cells: &[Cell], memberships: &[Membership], date: &str, server: &str) -> String {
    let mut text = format!(
        "# Tenancy at scale\n\n\
         Measured {date} on {}; {server}. Written by `cargo bench -p saas-benches --bench scale` \
         (see the header of `benches/scale.rs` for what is measured and how to change the grid).\n\n\
         Request: `acquire` + `SELECT count(*)` of the tenant's five notes. Baseline: the same \
         query filtered by hand on a plain pool, same concurrency; per cell a warm-up phase \
         per side, then two phases per side alternating, of {PER_PHASE} requests over all \
         clients ({PER_PHASE_DATABASE} for database tenants). TenantPools: budget {BUDGET} \
         connections ({} pools of {PER_TENANT}); the shared runtime pool and the baseline's pool \
         have {POOL} connections each (so 32 clients queue for them on both sides). Connections: the most server connections the \
         tenancy held while measured. Memory: the benchmark process's resident set after the \
         cell.\n\n\
         ![p50 ratio](scale-p50.svg) ![p99 ratio](scale-p99.svg) ![connections](scale-connections.svg)\n\n\
         | strategy | tenants | mode | access | clients | base p50 µs | p50 µs | p50 × | base p99 µs | p99 µs | p99 × | base req/s | req/s | server conns | RSS MiB |\n\
         |---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        machine(),
        BUDGET / PER_TENANT
    );
    for c in cells {
        text.push_str(&format!(
            "| {} | {} | {:?} | {:?} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {} | {:.0} |\n",
            c.strategy,
            c.tenants,
            c.mode,
            c.access,
            c.clients,
            c.base_p50.as_secs_f64() * 1e6,
            c.p50.as_secs_f64() * 1e6,
            c.ratio50(),
            c.base_p99.as_secs_f64() * 1e6,
            c.p99.as_secs_f64() * 1e6,
            c.ratio99(),
            c.base_rps,
            c.rps,
            c.connections,
            c.rss_mib,
        ));
    }
    if !memberships.is_empty() {
        text.push_str(
            "\n## Schema tenants: the cost of role membership\n\n\
             Each schema tenant has a role the runtime role is a member of, so that a \
             connection can `SET ROLE` to it. PostgreSQL builds a backend's list of the \
             runtime role's memberships the first time it checks one, and builds it again \
             after any `CREATE ROLE` or `GRANT` on the server (a sign-up). Timed with one \
             connection of the runtime role once the fleet is provisioned: its first `SET ROLE`, \
             the next one, and the next one after one more tenant signed up.\n\n\
             | tenants | memberships | first `SET ROLE`, new connection ms | next ms | after a sign-up ms |\n\
             |---:|---:|---:|---:|---:|\n",
        );
        for m in memberships {
            text.push_str(&format!(
                "| {} | {} | {:.2} | {:.2} | {:.2} |\n",
                m.tenants,
                m.memberships,
                m.first.as_secs_f64() * 1e3,
                m.warm.as_secs_f64() * 1e3,
                m.after_signup.as_secs_f64() * 1e3,
            ));
        }
    }
    text
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let url = std::env::var("SAAS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let sizes = list("SAAS_SCALE_TENANTS", &[10, 100, 1_000]);
    let clients = list("SAAS_SCALE_CLIENTS", &[1, 8, 32]);
    let max_clients = clients.iter().copied().max().unwrap_or(8);
    let databases = std::env::var("SAAS_SCALE_DATABASES").is_ok_and(|v| v == "1");
    let max_databases = list("SAAS_SCALE_MAX_DATABASES", &[100])[0];
    let mut cells_out = Vec::new();
    let mut memberships = Vec::new();
    for &n in &sizes {
        let mut strategies = vec![("row", Strategy::Shared), ("schema", Strategy::Schema)];
        if databases && n <= max_databases {
            strategies.push(("database", Strategy::Database));
        }
        for (label, strategy) in strategies {
            let fleet = fleet(&url, strategy, n).await;
            cells(&fleet, label, &clients, &mut cells_out).await;
            memberships.extend(fleet.membership.clone());
            fleet.plain.close().await;
            fleet.sandbox.cleanup().await;
        }
    }
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let server: String =
        sqlx::query_scalar("SELECT 'PostgreSQL ' || current_setting('server_version')")
            .fetch_one(&admin)
            .await
            .unwrap();
    let date: String = sqlx::query_scalar("SELECT to_char(now(), 'YYYY-MM-DD')")
        .fetch_one(&admin)
        .await
        .unwrap();
    let text = report(&cells_out, &memberships, &date, &server);
    println!("{text}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reports");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("scale.md"), text).unwrap();
    scale_chart::write_all(
        &dir,
        &cells_out,
        if clients.contains(&8) { 8 } else { max_clients },
    );
}
