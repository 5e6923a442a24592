//! Raw SQL through a scoped handle on a shared runtime connection
//! (ScopeMode::Shared) that leaves state behind besides the scope: a
//! transaction left open, and temporary tables filled with a tenant's
//! rows. Neither may reach the next tenant's code or plain use of the
//! runtime pool.

use saas_core::TenantContext;
use saas_tenancy::Strategy;
use saas_tenancy::postgres::ScopeMode;
use saas_tenancy::testing::pg::PgSandbox;
use sqlx::{Connection, Executor};

use crate::pg_cancel::{runtime_pool_is_clean, settle};
use crate::pg_env::sandbox;

/// Runs a plain `BEGIN` … `ROLLBACK` on both runtime connections, as host
/// code using the pool directly would.
async fn plain_rollback_on_every_connection(env: &PgSandbox) {
    let pool = env.tenancy.runtime_pool(&env.cluster).unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = pool.acquire().await.unwrap();
        let tx = conn.begin().await.unwrap();
        tx.rollback().await.unwrap();
        held.push(conn);
    }
}

async fn count_notes(env: &PgSandbox, ctx: &TenantContext) -> i64 {
    let mut conn = env.tenancy.acquire(ctx).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

/// A handler that starts a transaction by hand on a scoped connection and
/// returns early: the reset on release must not run inside that
/// transaction, where a later `ROLLBACK` would undo it and bring the
/// tenant's setting, role and search path back onto a shared connection.
#[tokio::test]
async fn a_transaction_left_open_on_a_scoped_connection_ends_at_release() {
    let Some(mut env) = sandbox("pg_leftovers::open_transaction", ScopeMode::Shared).await else {
        return;
    };
    let row = env.tenant("open-row", Strategy::Shared).await.unwrap();
    let schema = env.tenant("open-schema", Strategy::Schema).await.unwrap();
    // Both runtime connections open, so that `settle` can wait for both.
    runtime_pool_is_clean(&env, "warm").await;
    // Left open after a write, right after `BEGIN`, and failed.
    let cases = [
        (&row, "row", "a write"),
        (&row, "row", "nothing"),
        (&row, "row", "an error"),
        (&schema, "schema", "a write"),
        (&schema, "schema", "nothing"),
        (&schema, "schema", "an error"),
    ];
    for (ctx, placement, after) in cases {
        let what = format!("{placement}, BEGIN and {after}");
        let what = what.as_str();
        let mut conn = env.tenancy.acquire(ctx).await.unwrap();
        conn.execute("BEGIN").await.unwrap();
        match after {
            "a write" => {
                sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, 'never committed')")
                    .bind(ctx.tenant_id())
                    .execute(&mut *conn)
                    .await
                    .unwrap();
            }
            "an error" => assert!(conn.execute("SELECT 1/0").await.is_err()),
            _ => {}
        }
        drop(conn);
        settle(&env).await;
        runtime_pool_is_clean(&env, &format!("{what}: raw BEGIN left open")).await;
        plain_rollback_on_every_connection(&env).await;
        settle(&env).await;
        runtime_pool_is_clean(&env, &format!("{what}: a later plain ROLLBACK")).await;
        assert_eq!(count_notes(&env, ctx).await, 0, "{what}: committed anyway");
    }
    env.cleanup().await;
}

/// Host code that stages rows in a temporary table without `ON COMMIT
/// DROP` (`CREATE TEMP TABLE IF NOT EXISTS staging …`): the next tenant
/// served by the same shared connection runs the same code and must find
/// its own, empty table, not the previous tenant's rows.
#[tokio::test]
async fn temporary_tables_never_reach_the_next_tenant() {
    let Some(mut env) = sandbox("pg_leftovers::temporary_tables", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("temp-a", Strategy::Shared).await.unwrap();
    let b = env.tenant("temp-b", Strategy::Shared).await.unwrap();
    let s = env.tenant("temp-s", Strategy::Schema).await.unwrap();
    let mut tx = env.tenancy.begin(&a).await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, 'a secret')")
        .bind(a.tenant_id())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let stage = "CREATE TEMP TABLE IF NOT EXISTS staging AS SELECT body FROM notes";

    for (via, reader, what) in [
        ("connection", &b, "row tenant"),
        ("transaction", &b, "row tenant"),
        ("connection", &s, "schema tenant"),
        ("transaction", &s, "schema tenant"),
    ] {
        // Tenant A stages its rows on both runtime connections (two
        // handles held at once, the pool has two connections).
        if via == "connection" {
            let mut held = Vec::new();
            for _ in 0..2 {
                let mut conn = env.tenancy.acquire(&a).await.unwrap();
                conn.execute(stage).await.unwrap();
                held.push(conn);
            }
        } else {
            let mut held = Vec::new();
            for _ in 0..2 {
                let mut tx = env.tenancy.begin(&a).await.unwrap();
                tx.execute(stage).await.unwrap();
                held.push(tx);
            }
            for tx in held {
                tx.commit().await.unwrap();
            }
        }
        settle(&env).await;
        if via == "connection" {
            // Released connections come back without the table.
            let pool = env.tenancy.runtime_pool(&env.cluster).unwrap();
            let mut held = Vec::new();
            for _ in 0..2 {
                let mut conn = pool.acquire().await.unwrap();
                let left: Option<String> =
                    sqlx::query_scalar("SELECT to_regclass('pg_temp.staging')::text")
                        .fetch_one(&mut *conn)
                        .await
                        .unwrap();
                assert_eq!(left, None, "a temporary table outlived its connection");
                held.push(conn);
            }
        }
        // The other tenant runs the same code on both connections, through
        // both kinds of handle.
        let mut conns = Vec::new();
        let mut txs = Vec::new();
        conns.push(env.tenancy.acquire(reader).await.unwrap());
        txs.push(env.tenancy.begin(reader).await.unwrap());
        for conn in conns.iter_mut() {
            conn.execute(stage).await.unwrap();
            let seen: Vec<String> = sqlx::query_scalar("SELECT body FROM staging")
                .fetch_all(&mut **conn)
                .await
                .unwrap();
            assert!(seen.is_empty(), "{what} read A's {via} staging: {seen:?}");
        }
        for tx in txs.iter_mut() {
            tx.execute(stage).await.unwrap();
            let seen: Vec<String> = sqlx::query_scalar("SELECT body FROM staging")
                .fetch_all(&mut **tx)
                .await
                .unwrap();
            assert!(seen.is_empty(), "{what} read A's {via} staging: {seen:?}");
        }
        drop(conns);
        drop(txs);
        settle(&env).await;
    }
    env.cleanup().await;
}
