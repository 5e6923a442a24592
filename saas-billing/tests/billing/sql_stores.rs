//! The PostgreSQL and SQLite stores: the conformance suites, migrations,
//! the database-level guards, and a billing scenario that must produce
//! the same invoices as the in-memory stores.
//!
//! PostgreSQL tests need `SAAS_TEST_POSTGRES_URL` (each uses a schema of
//! its own, dropped afterwards); SQLite tests always run, each on a
//! temporary database file of its own, deleted afterwards.

use std::str::FromStr;
use std::time::Duration;

use saas_billing::store::postgres::PgBillingStores;
use saas_billing::store::sqlite::SqliteBillingStores;
use saas_billing::testing::Cleanup;
use saas_test_support::{Service, service_url, unique_name};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Executor, PgPool};

/// A pool on a fresh schema (its `search_path`), and the cleanup dropping
/// it. `None` when PostgreSQL is not configured.
pub(crate) async fn pg_pool(test: &str) -> Option<(PgPool, Cleanup)> {
    let url = service_url(Service::Postgres, test)?;
    let schema = unique_name("billing_test");
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
    let closing = pool.clone();
    let cleanup = Cleanup::new(async move {
        closing.close().await;
        let _ = admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA \"{schema}\" CASCADE"
            )))
            .await;
        admin.close().await;
    });
    Some((pool, cleanup))
}

/// Migrated PostgreSQL stores on a fresh schema.
pub(crate) async fn pg_stores(test: &str) -> Option<(PgBillingStores, Cleanup)> {
    let (pool, cleanup) = pg_pool(test).await?;
    let stores = PgBillingStores::new(pool);
    stores.migrate().await.unwrap();
    Some((stores, cleanup))
}

/// Migrated SQLite stores on a temporary WAL database file.
pub(crate) async fn sqlite_stores() -> (SqliteBillingStores, Cleanup) {
    let (stores, cleanup) = unmigrated_sqlite_stores().await;
    stores.migrate().await.unwrap();
    (stores, cleanup)
}

/// SQLite stores on a temporary WAL database file with no tables yet.
pub(crate) async fn unmigrated_sqlite_stores() -> (SqliteBillingStores, Cleanup) {
    let path = std::env::temp_dir().join(format!("{}.db", unique_name("saas_billing")));
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    let closing = pool.clone();
    let cleanup = Cleanup::new(async move {
        closing.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    });
    (SqliteBillingStores::new(pool), cleanup)
}

macro_rules! conformance {
    ($db:ident, $make:expr) => {
        mod $db {
            mod subscriptions {

                use saas_billing::SubscriptionStore;
                use saas_billing::testing::Cleanup;

                async fn store() -> Option<(std::sync::Arc<dyn SubscriptionStore>, Cleanup)> {
                    let (stores, cleanup) = $make?;
                    Some((std::sync::Arc::new(stores.subscriptions()), cleanup))
                }
                saas_billing::subscription_store_conformance!(store);
            }

            mod usage {

                use saas_billing::UsageStore;
                use saas_billing::testing::Cleanup;

                async fn store() -> Option<(std::sync::Arc<dyn UsageStore>, Cleanup)> {
                    let (stores, cleanup) = $make?;
                    Some((std::sync::Arc::new(stores.usage()), cleanup))
                }
                saas_billing::usage_store_conformance!(store);
            }

            mod invoices {

                use saas_billing::InvoiceStore;
                use saas_billing::testing::Cleanup;

                async fn store() -> Option<(std::sync::Arc<dyn InvoiceStore>, Cleanup)> {
                    let (stores, cleanup) = $make?;
                    Some((std::sync::Arc::new(stores.invoices()), cleanup))
                }
                saas_billing::invoice_store_conformance!(store);
            }

            mod coupons {

                use saas_billing::CouponStore;
                use saas_billing::testing::Cleanup;

                async fn store() -> Option<(std::sync::Arc<dyn CouponStore>, Cleanup)> {
                    let (stores, cleanup) = $make?;
                    Some((std::sync::Arc::new(stores.coupons()), cleanup))
                }
                saas_billing::coupon_store_conformance!(store);
            }
        }
    };
}

conformance!(
    postgres,
    crate::sql_stores::pg_stores("saas-billing postgres store conformance").await
);
conformance!(
    sqlite,
    Some::<(_, _)>(crate::sql_stores::sqlite_stores().await)
);

#[tokio::test]
async fn postgres_migrate_is_idempotent_under_concurrency() {
    let Some((pool, cleanup)) = pg_pool("postgres_migrate_is_idempotent_under_concurrency").await
    else {
        return;
    };
    let stores = PgBillingStores::new(pool);
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let stores = stores.clone();
            tokio::spawn(async move { stores.migrate().await })
        })
        .collect();
    for run in runs {
        run.await.unwrap().unwrap();
    }
    stores.migrate().await.unwrap();
    cleanup.run().await;
}

#[tokio::test]
async fn sqlite_migrate_is_idempotent() {
    let (stores, cleanup) = sqlite_stores().await;
    stores.migrate().await.unwrap();
    stores.migrate().await.unwrap();
    cleanup.run().await;
}

/// Invoice numbering under load: 8 concurrent finalizers × 500 invoices
/// of one issuer get exactly the numbers 1..=4,000, with no gap and no
/// duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_numbers_4000_invoices_from_8_finalizers_without_gaps() {
    let Some((stores, cleanup)) =
        pg_stores("postgres_numbers_4000_invoices_from_8_finalizers_without_gaps").await
    else {
        return;
    };
    saas_billing::testing::numbering::concurrent_numbering(
        std::sync::Arc::new(stores.invoices()),
        8,
        500,
    )
    .await;
    cleanup.run().await;
}

/// As on PostgreSQL, on a SQLite file in WAL mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_numbers_4000_invoices_from_8_finalizers_without_gaps() {
    let (stores, cleanup) = sqlite_stores().await;
    saas_billing::testing::numbering::concurrent_numbering(
        std::sync::Arc::new(stores.invoices()),
        8,
        500,
    )
    .await;
    cleanup.run().await;
}
