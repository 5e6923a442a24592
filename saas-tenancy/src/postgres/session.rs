//! What happens to a shared runtime connection between two users: every
//! connection of a cluster's runtime pool (row and schema tenants in
//! [`ScopeMode::Shared`](super::ScopeMode::Shared), and plain use of
//! [`runtime_pool`](super::PgTenancy::runtime_pool)) is reset as it goes
//! back to the pool, and closed instead when its state cannot be trusted.
//! Tenant pools ([`ScopeMode::TenantPools`](super::ScopeMode::TenantPools)
//! and database tenants) are left as sqlx leaves them: their connections
//! never serve another tenant.
//!
//! Why at release, in one round trip: a scoped handle derefs to the
//! connection, so host code can run any SQL on it — session-level `SET`,
//! `SET ROLE`, `PREPARE`/`DEALLOCATE`, `LISTEN`, advisory locks, held
//! cursors, temporary tables — and none of it may reach the next tenant.
//! The release already runs in a task of its own after the handle is
//! dropped (sqlx pings the connection there too), so the reset adds no
//! latency to the request that used the connection, nor to the next one
//! while the pool has another idle connection; when every connection is
//! busy, each stays out of the pool one round trip longer per use. In
//! exchange the pool skips sqlx's liveness ping at checkout for
//! connections that came back within the last second (the reset and the
//! release ping have just shown them alive): that ping was a round trip
//! on the request path. A connection found dead all the same (the server
//! restarted within that second) fails its first round trip — the scope
//! statement or `BEGIN`, before any of the host's SQL — and `begin` and
//! `acquire` then take another one (see `PgTenancy::begin_record`).
//!
//! Connections kept for their tenant (see `affinity`) skip this while
//! they stay with that tenant, and go through it when they leave.
//!
//! Measured against the alternatives (2026-12-04, this repository's
//! machine, pgbench, one client, each figure from two or three 3–5 s
//! runs): the reset's statements cost 10–30 µs of server time and the
//! prepared-statement census 30–55 µs (the higher figure inside a
//! transaction). `DISCARD ALL` was ruled out:
//! it drops the statements sqlx has cached, so every following statement
//! would be prepared again (one more round trip each). Resetting at
//! checkout instead would put those 40–85 µs and a round trip on every
//! request. Closing every connection that ran session-level SQL would
//! need to know which did, which only the server can tell — this asks it.

use std::time::Duration;

use sqlx::postgres::{PgConnection, PgPoolOptions, PgTransactionManager};
use sqlx::{AssertSqlSafe, Connection, Row};
use sqlx_core::transaction::TransactionManager;
use uuid::Uuid;

use crate::error::TenancyError;

/// Returns a session to the state it started in: cursors closed, role
/// and session authorization back to what the connection logged in with
/// (a tenant pool's role comes from its startup packet, and `RESET`
/// returns to it), every setting reset (search path, tenant setting,
/// time zone, transaction characteristics, custom settings), listeners,
/// temporary objects and sequence state dropped, session advisory locks
/// released. Then it reports what it cannot undo: `{nonce}` echoed (so a
/// reply left unread by a broken protocol exchange is never taken for
/// this one's), whether the statement began its own transaction (it did
/// not if host code left one open: the reset then ran inside it, and a
/// later `ROLLBACK` would undo it), and the prepared statements by origin.
///
/// Every name is schema-qualified and temporary objects are dropped
/// before the census reads the catalog, so nothing the session created
/// can stand in for what it reads.
fn reset_statement(nonce: Uuid) -> String {
    format!(
        "CLOSE ALL; RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL; UNLISTEN *; \
         DISCARD TEMP; DISCARD SEQUENCES; \
         SELECT '{nonce}'::pg_catalog.uuid, \
         pg_catalog.transaction_timestamp() = pg_catalog.statement_timestamp(), \
         pg_catalog.count(*) FILTER (WHERE s.from_sql), pg_catalog.count(*), \
         pg_catalog.pg_advisory_unlock_all() IS NULL \
         FROM pg_catalog.pg_prepared_statement() s"
    )
}

/// The release reset of a runtime connection in transaction-pooling mode
/// (see `pooling`): the same reset, with every prepared statement
/// deallocated instead of counted — its connection keeps no statement
/// cache, and behind a pooler the server connection it reaches is not
/// the one its last transaction ran on, whose statements say nothing of
/// this client. Directly on PostgreSQL it leaves the session as clean as
/// `DISCARD ALL` would; through PgBouncer, `server_reset_query` does that
/// for the server connection the transaction used.
fn pooled_reset_statement(nonce: Uuid) -> String {
    format!(
        "CLOSE ALL; RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL; UNLISTEN *; \
         DISCARD TEMP; DISCARD SEQUENCES; DEALLOCATE ALL; \
         SELECT '{nonce}'::pg_catalog.uuid, \
         pg_catalog.transaction_timestamp() = pg_catalog.statement_timestamp(), \
         0::int8, 0::int8, pg_catalog.pg_advisory_unlock_all() IS NULL"
    )
}

/// Why a released connection is closed instead of going back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Distrust {
    /// The reset's own reply did not come back as sent: the protocol
    /// exchange is out of step (e.g. after a refused `COPY … TO STDOUT`).
    OutOfStep,
    /// Host code left a transaction open: the reset ran inside it.
    TransactionLeftOpen,
    /// sqlx believes a transaction is still open (a `sqlx::Transaction`
    /// leaked with `mem::forget`): the next `begin` would make a savepoint.
    DepthLeftOver,
    /// Statements were prepared with SQL `PREPARE` (one could have taken
    /// the name of a statement sqlx has cached and run for the next user).
    PreparedBySql,
    /// Statements sqlx has cached were deallocated behind its back.
    CacheOutOfStep,
}

impl Distrust {
    fn as_str(self) -> &'static str {
        match self {
            Self::OutOfStep => "the protocol exchange is out of step",
            Self::TransactionLeftOpen => "a transaction was left open",
            Self::DepthLeftOver => "sqlx's transaction depth was left above zero",
            Self::PreparedBySql => "statements were prepared with SQL PREPARE",
            Self::CacheOutOfStep => "statements sqlx cached were deallocated",
        }
    }
}

/// Resets `conn` (see [`reset_statement`]); `Ok(None)` when it may serve
/// the next user, `Ok(Some(why))` when it must be closed.
pub(crate) async fn reset(
    conn: &mut PgConnection,
    pooled: bool,
) -> Result<Option<Distrust>, sqlx::Error> {
    if PgTransactionManager::get_transaction_depth(conn) != 0 {
        return Ok(Some(Distrust::DepthLeftOver));
    }
    let cached = i64::try_from(conn.cached_statements_size()).unwrap_or(i64::MAX);
    let nonce = Uuid::new_v4();
    // `raw_sql`: the simple query protocol, one round trip, nothing
    // prepared (the census must count only what was there before).
    let statement = match pooled {
        true => pooled_reset_statement(nonce),
        false => reset_statement(nonce),
    };
    let rows = sqlx::raw_sql(AssertSqlSafe(statement))
        .fetch_all(&mut *conn)
        .await?;
    let [row] = rows.as_slice() else {
        return Ok(Some(Distrust::OutOfStep));
    };
    let echoed: Uuid = row.try_get(0)?;
    if echoed != nonce {
        return Ok(Some(Distrust::OutOfStep));
    }
    let (own_transaction, by_sql, prepared): (bool, i64, i64) =
        (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
    Ok(if !own_transaction {
        Some(Distrust::TransactionLeftOpen)
    } else if by_sql > 0 {
        Some(Distrust::PreparedBySql)
    } else if prepared != cached {
        Some(Distrust::CacheOutOfStep)
    } else {
        None
    })
}

/// How long a connection may sit idle and still be handed out without a
/// liveness ping (it was reset and pinged as it came back).
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// Options of a shared runtime pool of `size` connections: reset on
/// release (closed when the reset fails or distrusts them); checkouts ping
/// only connections idle for [`TRUSTED_IDLE`] or longer, and
/// `begin`/`acquire` skip a connection found dead. `pooled`: the
/// transaction-pooling reset (see [`pooled_reset_statement`]).
pub(crate) fn runtime_pool_options(size: u32, pooled: bool) -> PgPoolOptions {
    let options = PgPoolOptions::new()
        .max_connections(size)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= TRUSTED_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        });
    options.after_release(move |conn, _| {
        Box::pin(async move {
            match reset(conn, pooled).await {
                Ok(None) => Ok(true),
                Ok(Some(why)) => {
                    // Host code did something unusual on a scoped handle.
                    tracing::warn!(reason = why.as_str(), "closing a released connection");
                    Ok(false)
                }
                // sqlx logs it and closes the connection without a goodbye.
                Err(error) => Err(error),
            }
        })
    })
}

/// Whether `error` says the connection was already dead when a checkout
/// used it (its first round trip failed at the transport, or the server
/// had terminated its backend): nothing of the request ran, so another
/// connection may be tried.
pub(crate) fn is_dead_connection(error: &TenancyError) -> bool {
    match error {
        TenancyError::Database(sqlx::Error::Io(_)) => true,
        TenancyError::Database(sqlx::Error::Database(e)) => {
            // admin_shutdown, crash_shutdown
            matches!(e.code().as_deref(), Some("57P01" | "57P02"))
        }
        _ => false,
    }
}
