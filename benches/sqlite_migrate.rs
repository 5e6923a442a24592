//! SQLite fleet-migration benchmark. Run:
//! `cargo bench -p saas-benches --bench sqlite_migrate` (no services).
//! Writes `target/bench-reports/sqlite_migrate.md`.
//!
//! Migrates 200 tenant files (`SAAS_BENCH_SQLITE_TENANTS` changes it) with
//! one `ALTER TABLE` through `migrate_tenants` at concurrency 1 and 4, vs the
//! same statement run by hand, one file after another, in the same run.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use saas_benches::Comparison;
use saas_core::TenantId;
use saas_tenancy::migration::MigrationOptions;
use saas_tenancy::testing::sqlite::{SqliteSandbox, sqlite_migrations};
use saas_tenancy::{Strategy, TenantObjectName};
use sqlx::migrate::{Migration, MigrationType};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Executor, SqlSafeStr, SqliteConnection};

fn add_column(version: i64, sql: &'static str) -> Migration {
    Migration::new(
        version,
        format!("v{version}").into(),
        MigrationType::Simple,
        sql.into_sql_str(),
        false,
    )
}

/// The same ALTER TABLE, by hand: open each file, alter, close.
async fn by_hand(sandbox: &SqliteSandbox, tenants: &[TenantId]) -> Duration {
    let started = Instant::now();
    for id in tenants {
        let file = sandbox
            .dir
            .join(format!("{}.sqlite", TenantObjectName::for_tenant(*id)));
        let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(file))
            .await
            .unwrap();
        conn.execute("ALTER TABLE notes ADD COLUMN by_hand INTEGER")
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    started.elapsed()
}

async fn library(
    sandbox: &SqliteSandbox,
    migrations: Vec<Migration>,
    concurrency: usize,
    tenants: usize,
) -> Duration {
    let fleet = sandbox.tenancy_with_migrations(migrations).unwrap();
    let started = Instant::now();
    let report = fleet
        .migrate_tenants(
            MigrationOptions::default()
                .with_canaries(1)
                .with_concurrency(concurrency),
        )
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(report.migrated.len(), tenants, "{:?}", report.failed);
    took
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tenants: usize = std::env::var("SAAS_BENCH_SQLITE_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let sandbox = SqliteSandbox::new().await.unwrap();
    let started = Instant::now();
    let mut ids = Vec::with_capacity(tenants);
    for i in 0..tenants {
        let ctx = sandbox
            .tenant(&format!("b{i}"), Strategy::Database)
            .await
            .unwrap();
        ids.push(ctx.tenant_id());
    }
    let provisioning = started.elapsed();

    let baseline = by_hand(&sandbox, &ids).await;
    let mut v2 = sqlite_migrations();
    v2.push(add_column(2, "ALTER TABLE notes ADD COLUMN pinned INTEGER"));
    let one = library(&sandbox, v2.clone(), 1, tenants).await;
    let mut v3 = v2;
    v3.push(add_column(
        3,
        "ALTER TABLE notes ADD COLUMN archived INTEGER",
    ));
    let four = library(&sandbox, v3, 4, tenants).await;
    sandbox.cleanup().await;

    let ratio = |candidate| {
        Comparison {
            baseline,
            candidate,
        }
        .ratio_text()
    };
    let report = format!(
        "| SQLite fleet migration, {tenants} tenant files | seconds | ratio |\n|---|---:|---:|\n\
         | provisioning | {:.2} | |\n\
         | ALTER TABLE by hand, one file after another | {:.2} | 1.000× |\n\
         | `migrate_tenants` (lock, transaction, ledger), concurrency 1 | {:.2} | {} |\n\
         | `migrate_tenants` (lock, transaction, ledger), concurrency 4 | {:.2} | {} |\n",
        provisioning.as_secs_f64(),
        baseline.as_secs_f64(),
        one.as_secs_f64(),
        ratio(one),
        four.as_secs_f64(),
        ratio(four),
    );
    println!("{report}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-reports");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sqlite_migrate.md"), report).unwrap();
}
