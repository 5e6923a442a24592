//! Tenancy benchmarks. Run: `cargo bench -p saas-benches --bench tenancy`
//! (PostgreSQL from `SAAS_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`); `-- scoped` or
//! `-- migrations` runs one part. Writes `target/bench-reports/tenancy.md`.
//!
//! - scoped access vs the plain app-enforced query, per placement and mode,
//!   and TenantPools with twice as many busy tenants as its budget holds;
//! - migrating 1,000 schema tenants (`SAAS_BENCH_TENANTS` changes it) with
//!   an `ALTER TABLE`, vs the same statements run by hand in a loop;
//! - `past_budget`: TenantPools with 1,000 active row tenants
//!   (`SAAS_BENCH_ACTIVE_TENANTS`) over a 50-connection budget, Zipf
//!   traffic from 8 clients, p50/p99 against the hand-written query.

#![allow(clippy::unwrap_used)]

mod past_budget;

use saas_benches::{Comparison, PairedComparison, compare_paired};
use saas_core::{TenantContext, TenantId};
use saas_tenancy::Strategy;
use std::time::Instant;

use saas_tenancy::postgres::{MigrationOptions, PoolLimits, ScopeMode};
use saas_tenancy::testing::pg::{PgSandbox, tenant_migrations};
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool};

const ROUNDS: u32 = 60;
const PER_ROUND: u32 = 50;
const NOTES_PER_TENANT: i64 = 50;
/// Connections of each tenant pool (TenantPools mode).
const POOL_SIZE: u32 = 2;
/// Connections of the baseline pool and of the shared runtime pool:
/// sqlx's default `max_connections`, so that the scoped side is compared
/// with a default-configured sqlx pool, both sides configured alike
/// (`SAAS_BENCH_SHARED_POOL` changes it, e.g. to 2: a pool that cycles
/// through fewer server backends keeps them warmer, on both sides).
fn shared_pool() -> u32 {
    std::env::var("SAAS_BENCH_SHARED_POOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(10)
}
/// The tenant-pool budget: room for `BUDGET / POOL_SIZE` busy tenants.
const BUDGET: u32 = 50;
/// Tenants taking turns in the Shared-mode case where no request follows
/// one of its own tenant.
const IN_TURN: usize = 8;
/// Rounds of the over-budget case, where every request opens a connection.
const OVER_BUDGET_ROUNDS: u32 = 10;

struct Row {
    case: String,
    result: PairedComparison,
    target: &'static str,
}

async fn seed(sandbox: &PgSandbox, ctx: &TenantContext) {
    let mut tx = sandbox.tenancy.begin(ctx).await.unwrap();
    sqlx::query(
        "INSERT INTO notes (tenant_id, body) SELECT $1, 'note ' || g FROM generate_series(1, $2) g",
    )
    .bind(ctx.tenant_id())
    .bind(NOTES_PER_TENANT)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// The baseline: an identical table without RLS, queried by hand with
/// `WHERE tenant_id = $1` through a plain pool configured like the scoped
/// one (same role, size and defaults).
async fn baseline_pool(url: &str, sandbox: &PgSandbox, filler: &TenantContext) -> PgPool {
    prepare_baseline(sandbox, filler).await;
    plain_pool(url, sandbox, true).await
}

/// The baseline's table: like `notes`, without RLS, with one tenant's notes.
async fn prepare_baseline(sandbox: &PgSandbox, filler: &TenantContext) {
    let schema = &sandbox.shared_schema;
    sandbox
        .admin
        .execute(AssertSqlSafe(format!(
            "CREATE TABLE notes_plain (LIKE notes INCLUDING ALL); \
             INSERT INTO notes_plain (tenant_id, body) \
             SELECT '{}', 'note ' || g FROM generate_series(1, {NOTES_PER_TENANT}) g; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON notes_plain TO \"{}\"; \
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA \"{schema}\" TO \"{}\"",
            filler.tenant_id(),
            sandbox.runtime_role,
            sandbox.runtime_role
        )))
        .await
        .unwrap();
}

/// A plain pool of the runtime role on the shared schema; `ping`: sqlx's
/// default liveness check at every checkout, or none.
async fn plain_pool(url: &str, sandbox: &PgSandbox, ping: bool) -> PgPool {
    let schema = &sandbox.shared_schema;
    let options: PgConnectOptions = url.parse().unwrap();
    PgPoolOptions::new()
        .max_connections(shared_pool())
        .test_before_acquire(ping)
        .connect_with(
            options
                .username(&sandbox.runtime_role)
                .options([("search_path", schema.as_str())]),
        )
        .await
        .unwrap()
}

async fn run_mode(url: &str, mode: ScopeMode, rows: &mut Vec<Row>) {
    // The runtime pool has `shared_pool()` connections, like the baseline;
    // each tenant pool POOL_SIZE.
    let limits = PoolLimits::new(BUDGET, POOL_SIZE);
    let mut sandbox = PgSandbox::with_runtime_pool(url, mode, limits, shared_pool())
        .await
        .unwrap();
    let row = sandbox.tenant("bench-row", Strategy::Shared).await.unwrap();
    let schema = sandbox
        .tenant("bench-schema", Strategy::Schema)
        .await
        .unwrap();
    let database = sandbox
        .tenant("bench-db", Strategy::Database)
        .await
        .unwrap();
    for ctx in [&row, &schema, &database] {
        seed(&sandbox, ctx).await;
    }
    let plain = baseline_pool(url, &sandbox, &row).await;
    let no_ping = plain_pool(url, &sandbox, false).await;
    let tenant = row.tenant_id();

    for (label, ctx) in [
        ("database", &database),
        ("schema", &schema),
        ("row (RLS)", &row),
    ] {
        let single = compare_paired(
            ROUNDS,
            PER_ROUND,
            || plain_single(&plain, tenant),
            || scoped_single(&sandbox, ctx),
        )
        .await;
        rows.push(Row {
            case: format!("{mode:?} · {label} · acquire + 1 statement"),
            result: single,
            target: match (mode, label) {
                (ScopeMode::Shared, "schema") => "≤ 1.30×",
                _ => "≤ 1.15×",
            },
        });
        if mode == ScopeMode::Shared {
            let against_no_ping = compare_paired(
                ROUNDS,
                PER_ROUND,
                || plain_single(&no_ping, tenant),
                || scoped_single(&sandbox, ctx),
            )
            .await;
            rows.push(Row {
                case: format!(
                    "{mode:?} · {label} · acquire + 1 statement, vs a pool without the liveness ping"
                ),
                result: against_no_ping,
                target: "(reported)",
            });
        }

        let transaction = compare_paired(
            ROUNDS,
            PER_ROUND / 2,
            || plain_transaction(&plain, tenant),
            || scoped_transaction(&sandbox, ctx),
        )
        .await;
        rows.push(Row {
            case: format!("{mode:?} · {label} · begin + 3 statements + commit"),
            result: transaction,
            target: "≤ 1.10×",
        });
    }
    if mode == ScopeMode::TenantPools {
        rows.push(over_budget(&mut sandbox, &plain, tenant).await);
    } else {
        rows.push(shared_in_turn(&mut sandbox, &plain, tenant).await);
    }
    plain.close().await;
    no_ping.close().await;
    sandbox.cleanup().await;
}

/// TenantPools past its budget: twice as many row tenants take turns as
/// the budget has pools for. Until 2026-12-05 every request evicted a
/// pool and connected anew (30–43×); now the tenants without a pool are
/// served on the shared runtime pool (all equally busy, none takes
/// another's pool).
async fn over_budget(sandbox: &mut PgSandbox, plain: &PgPool, tenant: TenantId) -> Row {
    let pools = (BUDGET / POOL_SIZE) as usize;
    let mut busy = Vec::new();
    for i in 0..2 * pools {
        busy.push(
            sandbox
                .tenant(&format!("busy-{i}"), Strategy::Shared)
                .await
                .unwrap(),
        );
    }
    let next = std::cell::Cell::new(0_usize);
    let result = compare_paired(
        OVER_BUDGET_ROUNDS,
        PER_ROUND,
        || async {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM notes_plain WHERE tenant_id = $1")
                    .bind(tenant)
                    .fetch_one(plain)
                    .await
                    .unwrap();
            assert!(n > 0);
        },
        || async {
            let i = next.get();
            next.set((i + 1) % busy.len());
            let mut conn = sandbox.tenancy.acquire(&busy[i]).await.unwrap();
            let _: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        },
    )
    .await;
    Row {
        case: format!(
            "TenantPools · row (RLS) · acquire + 1 statement, {} tenants in turn over a {pools}-pool budget",
            busy.len()
        ),
        result,
        target: "(none: shows the cost past the budget)",
    }
}

/// Shared mode with every request for another tenant than the one
/// before: no connection is ever reused by its own tenant, so each goes
/// back to the pool through the full reset (and a kept one is handed back
/// first) — the cost of the session reset itself.
async fn shared_in_turn(sandbox: &mut PgSandbox, plain: &PgPool, tenant: TenantId) -> Row {
    let mut turn = Vec::new();
    for i in 0..IN_TURN {
        let ctx = sandbox
            .tenant(&format!("turn-{i}"), Strategy::Shared)
            .await
            .unwrap();
        seed(sandbox, &ctx).await;
        turn.push(ctx);
    }
    let next = std::cell::Cell::new(0_usize);
    let result = compare_paired(
        ROUNDS,
        PER_ROUND / 2,
        || plain_transaction(plain, tenant),
        || {
            let i = next.get();
            next.set((i + 1) % turn.len());
            scoped_transaction(sandbox, &turn[i])
        },
    )
    .await;
    Row {
        case: format!(
            "Shared · row (RLS) · begin + 3 statements + commit, {IN_TURN} tenants in turn"
        ),
        result,
        target: "(none: shows the reset between tenants)",
    }
}

/// The baseline single statement: ten of the tenant's notes, filtered by hand.
async fn plain_single(plain: &PgPool, tenant: TenantId) {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, body FROM notes_plain WHERE tenant_id = $1 ORDER BY id LIMIT 10",
    )
    .bind(tenant)
    .fetch_all(plain)
    .await
    .unwrap();
    assert_eq!(rows.len(), 10);
}

/// The scoped single statement: the same, filtered by the scope.
async fn scoped_single(sandbox: &PgSandbox, ctx: &TenantContext) {
    let mut conn = sandbox.tenancy.acquire(ctx).await.unwrap();
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, body FROM notes ORDER BY id LIMIT 10")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert_eq!(rows.len(), 10);
}

/// The baseline transaction: three statements filtered by hand.
async fn plain_transaction(plain: &PgPool, tenant: TenantId) {
    let mut tx = plain.begin().await.unwrap();
    three_statements(&mut tx, "notes_plain", Some(tenant)).await;
    tx.commit().await.unwrap();
}

/// The scoped transaction: the same three statements, filtered by the scope.
async fn scoped_transaction(sandbox: &PgSandbox, ctx: &TenantContext) {
    let mut tx = sandbox.tenancy.begin(ctx).await.unwrap();
    three_statements(&mut tx, "notes", None).await;
    tx.commit().await.unwrap();
}

/// Read, update, read — filtered by hand on the baseline, by the scope on
/// the candidate.
async fn three_statements(
    conn: &mut sqlx::PgConnection,
    table: &str,
    tenant: Option<saas_core::TenantId>,
) {
    let filter = if tenant.is_some() {
        "WHERE tenant_id = $1"
    } else {
        ""
    };
    let and = if tenant.is_some() {
        "AND tenant_id = $1"
    } else {
        ""
    };
    let count = format!("SELECT count(*) FROM {table} {filter}");
    let touch = format!(
        "UPDATE {table} SET body = body WHERE id = (SELECT min(id) FROM {table} {filter}) {and}"
    );
    for sql in [&count, &touch, &count] {
        let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
        if let Some(t) = tenant {
            q = q.bind(t);
        }
        q.execute(&mut *conn).await.unwrap();
    }
}

/// Migrates N schema tenants with the library and by hand; returns a
/// markdown section.
async fn migrations(url: &str) -> String {
    let tenants: usize = std::env::var("SAAS_BENCH_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut sandbox = PgSandbox::new(url, ScopeMode::Shared).await.unwrap();
    let started = Instant::now();
    let mut schemas = Vec::new();
    for i in 0..tenants {
        let ctx = sandbox
            .tenant(&format!("m{i}"), Strategy::Schema)
            .await
            .unwrap();
        schemas.push(saas_tenancy::TenantObjectName::for_tenant(ctx.tenant_id()).quoted());
    }
    let provisioning = started.elapsed();

    // Baseline: the same ALTER TABLE, by hand, one schema after another.
    let started = Instant::now();
    for s in &schemas {
        sandbox
            .admin
            .execute(AssertSqlSafe(format!(
                "ALTER TABLE {s}.notes ADD COLUMN by_hand boolean"
            )))
            .await
            .unwrap();
    }
    let by_hand = started.elapsed();

    let mut v2 = tenant_migrations();
    v2.push(Migration::new(
        2,
        "pinned".into(),
        MigrationType::Simple,
        "ALTER TABLE notes ADD COLUMN pinned boolean NOT NULL DEFAULT false".into_sql_str(),
        false,
    ));
    let fleet = sandbox.tenancy_with_migrations(v2).unwrap();
    let started = Instant::now();
    let report = fleet
        .migrate_tenants(MigrationOptions::default().with_concurrency(4))
        .await
        .unwrap();
    let library = started.elapsed();
    assert_eq!(report.migrated.len(), tenants, "{:?}", report.failed);
    sandbox.cleanup().await;

    let ratio = Comparison {
        baseline: by_hand,
        candidate: library,
    };
    format!(
        "\n| fleet migration | seconds | ratio |\n|---|---:|---:|\n\
         | provisioning {tenants} schema tenants | {:.1} | |\n\
         | ALTER TABLE by hand, one schema after another | {:.1} | 1.000× |\n\
         | `migrate_tenants` (ledger, locks, grants, concurrency 4) | {:.1} | {} |\n",
        provisioning.as_secs_f64(),
        by_hand.as_secs_f64(),
        library.as_secs_f64(),
        ratio.ratio_text()
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        // `cargo test --benches` lists benchmarks; nothing to list here.
        return;
    }
    let only = |part: &str| {
        let parts = ["scoped", "migrations", "past_budget"];
        let chosen: Vec<&String> = args
            .iter()
            .filter(|a| parts.contains(&a.as_str()))
            .collect();
        chosen.is_empty() || chosen.iter().any(|a| *a == part)
    };
    let url = std::env::var("SAAS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let repeats: usize = std::env::var("SAAS_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut rows = Vec::new();
    if only("scoped") {
        // Each repeat opens fresh pools, so fresh server backends: which
        // core a backend lands on relative to the client moves a whole
        // run's ratio by ±20 % on two cores, more than anything measured
        // inside a run. The report takes the median over repeats.
        for _ in 0..repeats {
            for mode in [ScopeMode::Shared, ScopeMode::TenantPools] {
                run_mode(&url, mode, &mut rows).await;
            }
        }
    }
    let mut report = format!(
        "{repeats} runs, each on fresh pools; per run, the median over {ROUNDS} paired rounds. \
         Baseline and shared runtime pools of {} connections, tenant pools of {POOL_SIZE}.\n\n\
         | case | baseline µs/op | scoped µs/op | ratio, median of runs | runs' ratios, lowest–highest | target |\n\
         |---|---:|---:|---:|---:|---|\n",
        shared_pool()
    );
    let mut cases: Vec<&str> = Vec::new();
    for r in &rows {
        if !cases.contains(&r.case.as_str()) {
            cases.push(&r.case);
        }
    }
    for case in cases {
        let runs: Vec<&Row> = rows.iter().filter(|r| r.case == case).collect();
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let mut ratios: Vec<u128> = runs.iter().map(|r| r.result.ratio_at(50)).collect();
        ratios.sort_unstable();
        // Rounded to the nearest hundredth, never truncated: 1.159× is 1.16×.
        let milli = |m: u128| {
            let c = (m + 5) / 10;
            format!("{}.{:02}×", c / 100, c % 100)
        };
        report.push_str(&format!(
            "| {case} | {:.1} | {:.1} | {} | {}–{} | {} |\n",
            median(
                runs.iter()
                    .map(|r| r.result.baseline.as_secs_f64() * 1e6)
                    .collect()
            ),
            median(
                runs.iter()
                    .map(|r| r.result.candidate.as_secs_f64() * 1e6)
                    .collect()
            ),
            milli(ratios[ratios.len() / 2]),
            milli(ratios[0]),
            milli(ratios[ratios.len() - 1]),
            runs[0].target
        ));
    }
    if only("migrations") {
        report.push_str(&migrations(&url).await);
    }
    if only("past_budget") {
        // Concurrent clients, as a server runs them: a runtime of its own
        // with a worker per core.
        let url = url.clone();
        let section = std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(past_budget::past_budget(&url))
        });
        report.push_str(&section.join().unwrap());
    }
    println!("{report}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-reports");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tenancy.md"), report).unwrap();
}
