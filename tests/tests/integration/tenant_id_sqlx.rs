//! `TenantId` as a sqlx type, on a real database.

use saas_core::TenantId;
use saas_test_support::{Service, require_service};
use sqlx::Connection;

#[tokio::test]
async fn tenant_id_round_trips_through_sqlite() {
    let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (id BLOB NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    let id = TenantId::new();
    sqlx::query("INSERT INTO t (id) VALUES (?)")
        .bind(id)
        .execute(&mut conn)
        .await
        .unwrap();
    let back: TenantId = sqlx::query_scalar("SELECT id FROM t")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(back, id);

    // A nil UUID in storage is refused on decode, never turned into a tenant.
    sqlx::query("DELETE FROM t")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t (id) VALUES (?)")
        .bind(uuid::Uuid::nil())
        .execute(&mut conn)
        .await
        .unwrap();
    let nil = sqlx::query_scalar::<_, TenantId>("SELECT id FROM t")
        .fetch_one(&mut conn)
        .await;
    assert!(nil.is_err());
}

#[tokio::test]
async fn tenant_id_round_trips_through_postgres() {
    let url = require_service!(Service::Postgres);
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let id = TenantId::new();
    let back: TenantId = sqlx::query_scalar("SELECT $1::uuid")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(back, id);
}
