//! Provisioning benchmark. Run:
//! `cargo bench -p saas-benches --bench provisioning`
//! (PostgreSQL from `SAAS_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`; the bench works in a
//! database of its own on that server, dropped at the end). Writes
//! `target/bench-reports/provisioning.md`.
//!
//! For each strategy, tenants are provisioned one after another through
//! `PgTenancy::provision` (catalog record, tenant lock, storage, tenant
//! migrations, activation); reported per tenant: p50, p99 and mean time,
//! and disk (the database's growth, or the tenant database's size, over
//! the tenant count). Schema tenants twice: provisioned from scratch, then
//! as many again from spare schemas made ahead with
//! `PgTenancy::prepare_spare_schemas` (that preparation timed on its own:
//! it runs off the sign-up path). Then the fleet of schema (and database)
//! tenants is migrated to a second version with `migrate_tenants`.
//!
//! Sizes: `SAAS_BENCH_PROVISION_TENANTS` row and schema tenants (default
//! 300, a few minutes in all; 10000 for the full figure),
//! `SAAS_BENCH_PROVISION_DATABASES` database tenants (default 10: each
//! `CREATE DATABASE` copies a template and checkpoints).

#![allow(clippy::unwrap_used)]

use std::str::FromStr;
use std::time::{Duration, Instant};

use saas_tenancy::Strategy;
use saas_tenancy::postgres::{MigrationOptions, ScopeMode};
use saas_tenancy::testing::pg::{PgSandbox, tenant_migrations};
use sqlx::migrate::{Migration, MigrationType};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, SqlSafeStr};

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Per-tenant figures of one strategy.
struct Provisioned {
    strategy: &'static str,
    tenants: usize,
    times: Vec<Duration>,
    disk_bytes: i64,
}

impl Provisioned {
    fn row(&self) -> String {
        let mut sorted = self.times.clone();
        sorted.sort_unstable();
        let at = |p: usize| sorted[(sorted.len() * p / 100).min(sorted.len() - 1)];
        let total: Duration = sorted.iter().sum();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.1} |\n",
            self.strategy,
            self.tenants,
            ms(at(50)),
            ms(at(99)),
            ms(total / self.tenants.max(1) as u32),
            self.disk_bytes as f64 / self.tenants.max(1) as f64 / 1024.0
        )
    }
}

async fn database_size(conn: &mut PgConnection, name: &str) -> i64 {
    sqlx::query_scalar("SELECT pg_database_size($1)")
        .bind(name)
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Provisions `count` tenants of `strategy` one after another.
async fn provision(
    sandbox: &mut PgSandbox,
    server: &mut PgConnection,
    bench_db: &str,
    strategy: Strategy,
    (label, prefix): (&'static str, &str),
    count: usize,
) -> Provisioned {
    let before = database_size(server, bench_db).await;
    let mut times = Vec::with_capacity(count);
    let mut databases = Vec::new();
    for i in 0..count {
        let slug = format!("{prefix}{i}");
        let started = Instant::now();
        let ctx = sandbox.tenant(&slug, strategy).await.unwrap();
        times.push(started.elapsed());
        if strategy == Strategy::Database {
            databases.push(saas_tenancy::TenantObjectName::for_tenant(ctx.tenant_id()));
        }
    }
    // Row and schema tenants grow the bench database (catalog rows,
    // system catalogs, the schema's tables); a database tenant is its
    // own database.
    let mut disk = database_size(server, bench_db).await - before;
    for name in &databases {
        disk += database_size(server, name.as_str()).await;
    }
    Provisioned {
        strategy: label,
        tenants: count,
        times,
        disk_bytes: disk,
    }
}

/// Migrates every schema and database tenant of `sandbox` to version 2.
async fn fleet_migration(sandbox: &PgSandbox, tenants: usize) -> String {
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
    let took = started.elapsed();
    assert_eq!(report.migrated.len(), tenants, "{:?}", report.failed);
    format!(
        "\n| fleet migration (`migrate_tenants`, concurrency 4) | tenants | seconds | ms per tenant |\n\
         |---|---:|---:|---:|\n| schema and database tenants to v2 | {tenants} | {:.2} | {:.2} |\n",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e3 / tenants.max(1) as f64
    )
}

/// `url` with its database replaced by `database` (query kept).
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{database}{query}")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let url = std::env::var("SAAS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let tenants = env_count("SAAS_BENCH_PROVISION_TENANTS", 300);
    let databases = env_count("SAAS_BENCH_PROVISION_DATABASES", 10);

    // A database of the bench's own, so that its growth is the tenants'.
    let server_options = PgConnectOptions::from_str(&url).unwrap();
    let mut server = PgConnection::connect_with(&server_options).await.unwrap();
    let bench_db = format!("saas_bench_provision_{}", std::process::id());
    server
        .execute(AssertSqlSafe(format!("CREATE DATABASE \"{bench_db}\"")))
        .await
        .unwrap();
    let mut sandbox = PgSandbox::new(&with_database(&url, &bench_db), ScopeMode::Shared)
        .await
        .unwrap();

    let mut report = String::from(
        "Tenants provisioned one after another with `PgTenancy::provision`.\n\n\
         | strategy | tenants | p50 ms | p99 ms | mean ms | disk KiB per tenant |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    let mut spares = String::new();
    let mut prepared_bytes = 0;
    for (strategy, label, count) in [
        (Strategy::Shared, ("row", "r"), tenants),
        (Strategy::Schema, ("schema", "s"), tenants),
        (Strategy::Schema, ("schema, from a spare", "p"), tenants),
        (Strategy::Database, ("database", "d"), databases),
    ] {
        if label.1 == "p" {
            let before = database_size(&mut server, &bench_db).await;
            let started = Instant::now();
            let made = sandbox
                .tenancy
                .prepare_spare_schemas(&sandbox.cluster, count)
                .await
                .unwrap();
            let took = started.elapsed();
            assert_eq!(made.created, count);
            spares = format!(
                "\nSpare schemas made ahead (`prepare_spare_schemas`, off the sign-up path): \
                 {count} in {:.1} s, {:.2} ms each.\n",
                took.as_secs_f64(),
                took.as_secs_f64() * 1e3 / count.max(1) as f64
            );
            eprint!("{spares}");
            // The spares' disk is the claiming tenants'.
            prepared_bytes = database_size(&mut server, &bench_db).await - before;
        }
        let mut figures =
            provision(&mut sandbox, &mut server, &bench_db, strategy, label, count).await;
        figures.disk_bytes += std::mem::take(&mut prepared_bytes);
        eprintln!("{}", figures.row().trim_end());
        report.push_str(&figures.row());
    }
    report.push_str(&spares);
    report.push_str(&fleet_migration(&sandbox, 2 * tenants + databases).await);

    sandbox.cleanup().await;
    server
        .execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{bench_db}\" WITH (FORCE)"
        )))
        .await
        .unwrap();
    println!("{report}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-reports");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("provisioning.md"), report).unwrap();
}
