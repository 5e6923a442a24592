//! Databases for tests: a fresh PostgreSQL schema or SQLite database per
//! test, removed afterwards.

use std::str::FromStr;

use saas_tenancy::testing::Cleanup;
use saas_test_support::{Service, service_url, unique_name};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Executor, PgPool, SqlitePool};

/// A pool whose `search_path` is a schema of its own, and the cleanup that
/// drops the schema. `None` when PostgreSQL is not configured.
pub(crate) async fn pg_schema_pool(test: &str) -> Option<(PgPool, String, Cleanup)> {
    let url = service_url(Service::Postgres, test)?;
    let schema = unique_name("saas_test");
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .await
        .unwrap();
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap();
    let drop_schema = schema.clone();
    let cleanup = Cleanup::new(async move {
        let _ = admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA \"{drop_schema}\" CASCADE"
            )))
            .await;
        admin.close().await;
    });
    Some((pool, schema, cleanup))
}

/// A shared-cache in-memory SQLite database that lives as long as its pool.
pub(crate) async fn sqlite_memory_pool() -> SqlitePool {
    let name = unique_name("mem");
    let options =
        SqliteConnectOptions::from_str(&format!("sqlite:file:{name}?mode=memory&cache=shared"))
            .unwrap();
    SqlitePoolOptions::new()
        .max_connections(4)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await
        .unwrap()
}

/// The runtime a leak-harness test drives its tenants on: the harness is
/// synchronous (proptest) and runs each case's tenants concurrently.
pub(crate) fn harness_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
