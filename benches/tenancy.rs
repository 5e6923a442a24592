//! Scoped access vs the plain app-enforced query, per placement and scope
//! mode. Run: `cargo bench -p saas-benches --bench tenancy` (PostgreSQL
//! from `SAAS_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//! Writes `target/bench-reports/tenancy.md`.

#![allow(clippy::unwrap_used)]

use saas_benches::{Comparison, compare};
use saas_core::TenantContext;
use saas_tenancy::Strategy;
use saas_tenancy::postgres::ScopeMode;
use saas_tenancy::testing::pg::PgSandbox;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool};

const ROUNDS: u32 = 5;
const PER_ROUND: u32 = 400;
const NOTES_PER_TENANT: i64 = 50;

struct Row {
    case: String,
    result: Comparison,
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
    let options: PgConnectOptions = url.parse().unwrap();
    PgPoolOptions::new()
        .max_connections(2)
        .connect_with(
            options
                .username(&sandbox.runtime_role)
                .options([("search_path", schema.as_str())]),
        )
        .await
        .unwrap()
}

async fn run_mode(url: &str, mode: ScopeMode, rows: &mut Vec<Row>) {
    let mut sandbox = PgSandbox::new(url, mode).await.unwrap();
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
    let tenant = row.tenant_id();

    for (label, ctx) in [
        ("database", &database),
        ("schema", &schema),
        ("row (RLS)", &row),
    ] {
        let single = compare(
            ROUNDS,
            PER_ROUND,
            || async {
                let rows: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT id, body FROM notes_plain WHERE tenant_id = $1 ORDER BY id LIMIT 10",
                )
                .bind(tenant)
                .fetch_all(&plain)
                .await
                .unwrap();
                assert_eq!(rows.len(), 10);
            },
            || async {
                let mut conn = sandbox.tenancy.acquire(ctx).await.unwrap();
                let rows: Vec<(i64, String)> =
                    sqlx::query_as("SELECT id, body FROM notes ORDER BY id LIMIT 10")
                        .fetch_all(&mut *conn)
                        .await
                        .unwrap();
                assert_eq!(rows.len(), 10);
            },
        )
        .await;
        rows.push(Row {
            case: format!("{mode:?} · {label} · acquire + 1 statement"),
            result: single,
            target: "≤ 1.15×",
        });

        let transaction = compare(
            ROUNDS,
            PER_ROUND / 2,
            || async {
                let mut tx = plain.begin().await.unwrap();
                three_statements(&mut tx, "notes_plain", Some(tenant)).await;
                tx.commit().await.unwrap();
            },
            || async {
                let mut tx = sandbox.tenancy.begin(ctx).await.unwrap();
                three_statements(&mut tx, "notes", None).await;
                tx.commit().await.unwrap();
            },
        )
        .await;
        rows.push(Row {
            case: format!("{mode:?} · {label} · begin + 3 statements + commit"),
            result: transaction,
            target: "≤ 1.10×",
        });
    }
    plain.close().await;
    sandbox.cleanup().await;
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

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` lists benchmarks; nothing to list here.
        return;
    }
    let url = std::env::var("SAAS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let mut rows = Vec::new();
    for mode in [ScopeMode::Shared, ScopeMode::TenantPools] {
        run_mode(&url, mode, &mut rows).await;
    }
    let mut report = String::from(
        "| case | baseline µs/op | scoped µs/op | ratio | target |\n|---|---:|---:|---:|---|\n",
    );
    for r in &rows {
        report.push_str(&format!(
            "| {} | {:.1} | {:.1} | {} | {} |\n",
            r.case,
            r.result.baseline.as_secs_f64() * 1e6,
            r.result.candidate.as_secs_f64() * 1e6,
            r.result.ratio_text(),
            r.target
        ));
    }
    println!("{report}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-reports");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tenancy.md"), report).unwrap();
}
