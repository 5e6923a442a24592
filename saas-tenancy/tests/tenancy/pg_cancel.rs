//! Cancellation at every point where scoped `acquire` and `begin` wait
//! (ScopeMode::Shared): the future is dropped after its k-th suspension,
//! for every k until it completes, and sweeps repeat until cancellations
//! have landed after the checkout — while the scope statement (`acquire`)
//! or `BEGIN` with the scope (`begin`) was on its way. After each
//! cancellation every connection of the runtime pool must carry no
//! tenant, no role, no search path and no open transaction.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use saas_core::TenantContext;
use saas_tenancy::postgres::ScopeMode;
use saas_tenancy::testing::pg::PgSandbox;
use saas_tenancy::{Strategy, TenancyError};

use crate::pg_env::sandbox;

/// Resolves to `None` (dropping the inner future) once the inner future
/// has been suspended `suspensions` times, or to its output.
struct CancelAfter<F: Future> {
    inner: Pin<Box<F>>,
    suspensions: usize,
}

impl<F: Future> Future for CancelAfter<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.inner.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending if self.suspensions == 0 => Poll::Ready(None),
            Poll::Pending => {
                self.suspensions -= 1;
                Poll::Pending
            }
        }
    }
}

/// Whether `conn` is inside a transaction block: a transaction-local
/// setting outlives its statement only there.
pub(crate) async fn in_transaction(conn: &mut sqlx::PgConnection) -> bool {
    sqlx::query("SELECT set_config('saas_test.probe', 'open', true)")
        .execute(&mut *conn)
        .await
        .unwrap();
    let probe: Option<String> =
        sqlx::query_scalar("SELECT NULLIF(current_setting('saas_test.probe', true), '')")
            .fetch_one(conn)
            .await
            .unwrap();
    probe.is_some()
}

/// Whether `e` says the server had ended the connection's backend.
fn is_terminated(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().as_deref() == Some("57P01"),
        sqlx::Error::Io(_) => true,
        _ => false,
    }
}

/// Every connection the runtime pool holds (it has 2) is clean. A
/// connection the server terminated (a test that ends every backend) is
/// handed out unpinged if it came back under a second ago and fails its
/// first query, as `runtime_pool` documents for plain use: it is closed,
/// and the next one taken.
pub(crate) async fn runtime_pool_is_clean(env: &PgSandbox, what: &str) {
    let pool = env.tenancy.runtime_pool(&env.cluster).unwrap();
    let mut held = Vec::new();
    let mut dead = 0;
    while held.len() < 2 {
        let mut conn = pool.acquire().await.unwrap();
        let probe: Result<(Option<String>, String, String), _> = sqlx::query_as(
            "SELECT NULLIF(current_setting('saas.tenant_id', true), ''), \
             current_user::text, current_setting('search_path')",
        )
        .fetch_one(&mut *conn)
        .await;
        let (tenant, user, search_path) = match probe {
            Err(e) if dead < 2 && is_terminated(&e) => {
                dead += 1;
                conn.detach();
                continue;
            }
            other => other.unwrap(),
        };
        let in_tx = in_transaction(&mut conn).await;
        assert_eq!(tenant, None, "{what}: tenant setting left");
        assert_eq!(user, env.runtime_role, "{what}: role left");
        assert!(
            search_path.contains(&env.shared_schema),
            "{what}: {search_path}"
        );
        assert!(!in_tx, "{what}: a transaction was left open");
        held.push(conn);
    }
}

/// Waits until every runtime connection is back in the pool or closed
/// (their return, with its reset, runs in a spawned task), so that a
/// checkout does not wait.
pub(crate) async fn settle(env: &PgSandbox) {
    // Connections kept for their tenant count as out of the pool.
    env.tenancy.release_kept_connections();
    let pool = env.tenancy.runtime_pool(&env.cluster).unwrap();
    for _ in 0..1000 {
        if pool.num_idle() as u32 == pool.size() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("the runtime pool's connections did not come back");
}

/// Cancels `start` after each of its suspensions in turn, checking the
/// pool after each; returns how many cancellations landed after the
/// checkout (a runtime connection was out of the pool at that moment).
async fn cancel_everywhere<T, F, Fut>(env: &PgSandbox, what: &str, start: F) -> usize
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, TenancyError>>,
{
    let pool = env.tenancy.runtime_pool(&env.cluster).unwrap();
    let mut after_checkout = 0;
    for k in 0..200 {
        settle(env).await;
        let mut run = Box::pin(CancelAfter {
            inner: Box::pin(start()),
            suspensions: k,
        });
        match run.as_mut().await {
            None => {
                // The inner future is still alive here: is its connection out?
                if (pool.num_idle() as u32) < pool.size() {
                    after_checkout += 1;
                }
                drop(run);
                runtime_pool_is_clean(env, &format!("{what}, cancelled at {k}")).await;
            }
            Some(done) => {
                drop(run);
                drop(done.unwrap());
                runtime_pool_is_clean(env, &format!("{what}, completed")).await;
                return after_checkout;
            }
        }
    }
    panic!("{what} did not complete within 200 suspensions");
}

/// Sweeps until a cancellation has landed after the checkout, with the
/// scope (or `BEGIN` with the scope) on its way, for both handles. Where a
/// suspension falls varies with I/O timing, so a sweep may not hit that
/// window; about half do, and 20 sweeps that all miss fail the test.
async fn scoped(env: &PgSandbox, ctx: &TenantContext, what: &str) {
    let (mut acquire, mut begin) = (0, 0);
    for _ in 0..20 {
        acquire +=
            cancel_everywhere(env, &format!("{what} acquire"), || env.tenancy.acquire(ctx)).await;
        begin += cancel_everywhere(env, &format!("{what} begin"), || env.tenancy.begin(ctx)).await;
        if acquire > 0 && begin > 0 {
            return;
        }
    }
    panic!("{what}: no cancellation after the checkout ({acquire} / {begin})");
}

#[tokio::test]
async fn cancelled_at_every_suspension_leaves_the_runtime_pool_clean() {
    let Some(mut env) = sandbox("pg_cancel::every_point", ScopeMode::Shared).await else {
        return;
    };
    let row = env.tenant("cancel-row", Strategy::Shared).await.unwrap();
    let schema = env.tenant("cancel-schema", Strategy::Schema).await.unwrap();
    // Warm: both runtime connections open and the records cached, so the
    // suspensions are the checkout's and the scope's round trips.
    runtime_pool_is_clean(&env, "warm").await;
    drop(env.tenancy.begin(&row).await.unwrap());
    drop(env.tenancy.begin(&schema).await.unwrap());
    scoped(&env, &row, "row").await;
    scoped(&env, &schema, "schema").await;
    env.cleanup().await;
}

/// `PgTenantTx` drives sqlx's transaction manager itself: a nested `begin`
/// on it is still a savepoint, whose rollback keeps the outer work.
#[tokio::test]
async fn a_nested_begin_on_a_tenant_transaction_is_a_savepoint() {
    let Some(mut env) = sandbox("pg_cancel::savepoint", ScopeMode::Shared).await else {
        return;
    };
    for strategy in [Strategy::Shared, Strategy::Schema, Strategy::Database] {
        let ctx = env
            .tenant(&format!("nested-{strategy}"), strategy)
            .await
            .unwrap();
        let mut tx = env.tenancy.begin(&ctx).await.unwrap();
        for (body, keep) in [("outer", true), ("inner", false)] {
            let mut inner = sqlx::Connection::begin(&mut *tx).await.unwrap();
            sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, $2)")
                .bind(ctx.tenant_id())
                .bind(body)
                .execute(&mut *inner)
                .await
                .unwrap();
            if keep {
                inner.commit().await.unwrap();
            } else {
                inner.rollback().await.unwrap();
            }
        }
        tx.commit().await.unwrap();
        let mut conn = env.tenancy.acquire(&ctx).await.unwrap();
        let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(bodies, ["outer"], "{strategy}");
    }
    env.cleanup().await;
}
