//! Numbers in archives round-trip exactly: a `numeric(38,18)` with 38
//! significant digits and a bigint above 2^53 (neither fits an f64), from
//! a PostgreSQL row tenant to a schema tenant, and through a SQLite file
//! tenant (INTEGER and a decimal stored as TEXT) and back.

use saas_core::TenantContext;
use saas_tenancy::postgres::ScopeMode;
use saas_tenancy::testing::pg::PgSandbox;
use saas_tenancy::testing::sqlite::SqliteSandbox;
use saas_tenancy::{Strategy, TenantObjectName};
use sqlx::{AssertSqlSafe, Executor};

use crate::pg_env::sandbox;

const AMOUNT: &str = "12345678901234567890.123456789012345678";
/// 2^53 + 1: the first integer an f64 cannot hold.
const BIG: i64 = 9_007_199_254_740_993;

const ADD_COLUMNS: &str = "ADD COLUMN amount numeric(38,18), ADD COLUMN big bigint";

async fn pg_values(env: &PgSandbox, ctx: &TenantContext) -> Vec<(String, i64)> {
    let mut conn = env.tenancy.acquire(ctx).await.unwrap();
    sqlx::query_as("SELECT amount::text, big FROM notes ORDER BY id")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn big_numbers_survive_export_and_import_exactly() {
    let Some(mut env) = sandbox("numbers::exact", ScopeMode::Shared).await else {
        return;
    };
    env.admin
        .execute(AssertSqlSafe(format!("ALTER TABLE notes {ADD_COLUMNS}")))
        .await
        .unwrap();
    let source = env.tenant("source", Strategy::Shared).await.unwrap();
    let mut tx = env.tenancy.begin(&source).await.unwrap();
    sqlx::query(
        "INSERT INTO notes (tenant_id, body, amount, big) VALUES ($1, 'n', $2::numeric, $3)",
    )
    .bind(source.tenant_id())
    .bind(AMOUNT)
    .bind(BIG)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let expected = vec![("12345678901234567890.123456789012345678".to_owned(), BIG)];
    assert_eq!(pg_values(&env, &source).await, expected);

    // PostgreSQL row tenant → schema tenant.
    let archive = env.tenancy.export_tenant(source.tenant_id()).await.unwrap();
    let target = env.tenant("target", Strategy::Schema).await.unwrap();
    let schema = TenantObjectName::for_tenant(target.tenant_id()).quoted();
    env.admin
        .execute(AssertSqlSafe(format!(
            "ALTER TABLE {schema}.notes {ADD_COLUMNS}"
        )))
        .await
        .unwrap();
    env.tenancy.import_tenant(&target, &archive).await.unwrap();
    assert_eq!(pg_values(&env, &target).await, expected);

    // → a SQLite file tenant (INTEGER and TEXT columns) → exported again.
    let lite = SqliteSandbox::new().await.unwrap();
    let file = lite.tenant("file", Strategy::Database).await.unwrap();
    let mut conn = lite.tenancy.acquire(&file).await.unwrap();
    conn.execute("ALTER TABLE notes ADD COLUMN amount TEXT")
        .await
        .unwrap();
    conn.execute("ALTER TABLE notes ADD COLUMN big INTEGER")
        .await
        .unwrap();
    drop(conn);
    lite.tenancy.import_tenant(&file, &archive).await.unwrap();
    let mut conn = lite.tenancy.acquire(&file).await.unwrap();
    let stored: (String, String, i64) =
        sqlx::query_as("SELECT amount, typeof(amount), big FROM notes")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(stored, (AMOUNT.to_owned(), "text".to_owned(), BIG));
    drop(conn);
    let back = lite.tenancy.export_tenant(file.tenant_id()).await.unwrap();

    // → and into PostgreSQL again, still exact.
    let home = env.tenant("home", Strategy::Shared).await.unwrap();
    env.tenancy.import_tenant(&home, &back).await.unwrap();
    assert_eq!(pg_values(&env, &home).await, expected);
    lite.cleanup().await;
    env.cleanup().await;
}
