//! TenantPools past its budget under skewed traffic: many more active
//! row tenants than pools, Zipf-distributed, several concurrent clients —
//! latency percentiles against the hand-written query at the same
//! concurrency. Part `past_budget` of the tenancy benchmark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use saas_benches::Zipf;
use saas_core::TenantContext;
use saas_tenancy::Strategy;
use saas_tenancy::postgres::{PgTenancy, PoolLimits, ScopeMode};
use saas_tenancy::testing::pg::PgSandbox;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool};

/// Active tenants (`SAAS_BENCH_ACTIVE_TENANTS` changes it).
const TENANTS: usize = 1_000;
const CLIENTS: usize = 8;
/// Connections all tenant pools may hold: 25 pools of 2.
const BUDGET: u32 = 50;
const PER_TENANT: u32 = 2;
/// The Zipf exponent: the busiest tenant gets about a sixth of the traffic.
const ZIPF_S: f64 = 1.1;
/// Requests per client per phase; phases alternate baseline and scoped.
const REQUESTS: usize = 1_500;
const PHASES: usize = 3;

/// Latencies of every request of one side, all phases.
#[derive(Default)]
struct Latencies(Vec<Duration>);

impl Latencies {
    fn percentile(&mut self, q: usize) -> Duration {
        self.0.sort_unstable();
        let i = (self.0.len().saturating_sub(1)) * q / 100;
        self.0.get(i).copied().unwrap_or_default()
    }
}

/// Runs `CLIENTS` clients of `REQUESTS` requests each; every client draws
/// its tenants from its own Zipf sequence (the same for both sides).
async fn phase<F, Fut>(phase: usize, request: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let request = request.clone();
        clients.push(tokio::spawn(async move {
            let seed = (phase * CLIENTS + client) as u64 * 0x9E37_79B9_7F4A_7C15;
            let mut zipf = Zipf::new(active_tenants(), ZIPF_S, seed);
            let mut took = Vec::with_capacity(REQUESTS);
            for _ in 0..REQUESTS {
                let tenant = zipf.next();
                let start = Instant::now();
                request(tenant).await;
                took.push(start.elapsed());
            }
            took
        }));
    }
    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await.unwrap());
    }
    all
}

fn active_tenants() -> usize {
    std::env::var("SAAS_BENCH_ACTIVE_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TENANTS)
}

/// What one mode measured.
struct Measured {
    base: Latencies,
    cand: Latencies,
    fallbacks: u64,
    promotions: u64,
    evictions: u64,
}

/// The same load in `mode`: `n` row tenants, Zipf traffic, both sides.
async fn measure(url: &str, mode: ScopeMode, n: usize) -> Measured {
    let limits = PoolLimits::new(BUDGET, PER_TENANT);
    let mut sandbox = PgSandbox::with_runtime_pool(url, mode, limits, CLIENTS as u32)
        .await
        .unwrap();
    let mut tenants = Vec::with_capacity(n);
    for i in 0..n {
        tenants.push(
            sandbox
                .tenant(&format!("z{i}"), Strategy::Shared)
                .await
                .unwrap(),
        );
    }
    let schema = &sandbox.shared_schema;
    let role = &sandbox.runtime_role;
    // Five notes per tenant, in the scoped table and in a plain copy.
    sandbox
        .admin
        .execute(AssertSqlSafe(format!(
            "INSERT INTO notes (tenant_id, body) \
             SELECT id, 'note ' || g FROM saas_tenants, generate_series(1, 5) g \
             WHERE status = 'active'; \
             CREATE TABLE notes_plain (LIKE notes INCLUDING ALL); \
             INSERT INTO notes_plain SELECT * FROM notes; \
             GRANT SELECT ON notes_plain TO \"{role}\""
        )))
        .await
        .unwrap();
    let options: PgConnectOptions = url.parse().unwrap();
    let plain: PgPool = PgPoolOptions::new()
        .max_connections(CLIENTS as u32)
        .connect_with(
            options
                .username(role)
                .options([("search_path", schema.as_str())]),
        )
        .await
        .unwrap();
    let tenancy: Arc<PgTenancy> = Arc::new(sandbox.tenancy.clone());
    let tenants: Arc<Vec<TenantContext>> = Arc::new(tenants);

    let baseline = {
        let (plain, tenants) = (plain.clone(), Arc::clone(&tenants));
        move |i: usize| {
            let (plain, tenant) = (plain.clone(), tenants[i].tenant_id());
            async move {
                let n: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM notes_plain WHERE tenant_id = $1")
                        .bind(tenant)
                        .fetch_one(&plain)
                        .await
                        .unwrap();
                assert_eq!(n, 5);
            }
        }
    };
    let scoped = {
        let (tenancy, tenants) = (Arc::clone(&tenancy), Arc::clone(&tenants));
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
    // Warm-up: pools open, hot tenants promoted, plans cached.
    phase(1_000, baseline.clone()).await;
    phase(1_000, scoped.clone()).await;
    let before = tenancy.pool_stats().await;
    let (mut base, mut cand) = (Latencies::default(), Latencies::default());
    for p in 0..PHASES {
        if p % 2 == 0 {
            base.0.extend(phase(p, baseline.clone()).await);
            cand.0.extend(phase(p, scoped.clone()).await);
        } else {
            cand.0.extend(phase(p, scoped.clone()).await);
            base.0.extend(phase(p, baseline.clone()).await);
        }
    }
    let after = tenancy.pool_stats().await;
    plain.close().await;
    drop(tenancy);
    sandbox.cleanup().await;
    Measured {
        base,
        cand,
        fallbacks: after.fallbacks - before.fallbacks,
        promotions: after.promotions - before.promotions,
        evictions: after.evictions - before.evictions,
    }
}

/// The report's section: p50 and p99 of both sides and their ratios, in
/// TenantPools (the target) and in Shared mode (every request on the
/// shared pool) for reference.
pub(crate) async fn past_budget(url: &str) -> String {
    let n = active_tenants();
    let mut pools = measure(url, ScopeMode::TenantPools, n).await;
    let mut shared = measure(url, ScopeMode::Shared, n).await;

    let ratio = |c: Duration, b: Duration| c.as_secs_f64() / b.as_secs_f64().max(1e-9);
    let verdict = |r: f64, target: f64| if r <= target { "met" } else { "missed" };
    let line = |name: &str, m: &mut Measured, q: usize, target: Option<f64>| {
        let (b, c) = (m.base.percentile(q), m.cand.percentile(q));
        let r = ratio(c, b);
        let target = target.map_or_else(
            || "(reference)".to_owned(),
            |t| format!("≤ {t}× ({})", verdict(r, t)),
        );
        format!(
            "| {name} | p{q} | {:.0} | {:.0} | {r:.2}× | {target} |\n",
            b.as_secs_f64() * 1e6,
            c.as_secs_f64() * 1e6,
        )
    };
    let table = [
        line("TenantPools", &mut pools, 50, Some(1.2)),
        line("TenantPools", &mut pools, 99, Some(2.0)),
        line("Shared", &mut shared, 50, None),
        line("Shared", &mut shared, 99, None),
    ]
    .concat();
    format!(
        "\n## TenantPools past the budget\n\n\
         {n} active row tenants, Zipf s = {ZIPF_S}; budget {BUDGET} ({} pools of {PER_TENANT}); \
         {CLIENTS} clients × {REQUESTS} requests × {PHASES} phases per side (alternating), \
         `acquire` + `SELECT count(*)`; baseline: the same query filtered by hand on a plain \
         pool of {CLIENTS} (the shared runtime pool has {CLIENTS} too). TenantPools, during the \
         measured phases: {} requests served on the shared runtime pool, {} pools replaced \
         for busier tenants, {} evictions.\n\n\
         | mode | percentile | baseline µs | scoped µs | ratio | target |\n\
         |---|---|---:|---:|---:|---|\n{table}",
        BUDGET / PER_TENANT,
        pools.fallbacks,
        pools.promotions,
        pools.evictions,
    )
}
