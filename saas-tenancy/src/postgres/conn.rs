use std::ops::{Deref, DerefMut};

use saas_core::TenantId;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgTransactionManager;
use sqlx::{Connection, Executor, PgConnection, Postgres, SqlSafeStr};
use sqlx_core::transaction::TransactionManager;

use super::PgPoolLease;
use crate::placement::Placement;

/// A connection scoped to one tenant, for single statements that each
/// commit on their own. Use it wherever sqlx takes an executor:
/// `sqlx::query(..).fetch_all(&mut *conn)`.
///
/// With [`ScopeMode::Shared`](super::ScopeMode::Shared) the scope is a
/// session setting put on a shared runtime connection at checkout and
/// removed before the connection can serve anyone else — on drop,
/// including cancellation and panics: a transaction left open through raw
/// SQL is rolled back, the role and every setting are reset and temporary
/// tables are dropped, in one round trip; a connection whose reset fails
/// is closed, not reused. With
/// [`ScopeMode::TenantPools`](super::ScopeMode::TenantPools) and for
/// database placements the connection belongs to the tenant's own pool
/// and never serves another tenant; it goes back as it is, like any sqlx
/// pooled connection, so a transaction started on it with raw SQL and
/// never ended would be met by the tenant's next request — use
/// [`begin`](super::PgTenancy::begin) for transactions.
///
/// sqlx caches prepared statements and custom type OIDs per connection,
/// the types by bare name: a shared runtime connection scoped to a schema
/// tenant starts and ends with those caches emptied, so one tenant's
/// `mood` enum is never bound or read as another tenant's `mood`.
///
/// The same caveat as [`TenantTx`](super::TenantTx) applies to raw SQL
/// that deliberately changes the scope.
pub struct TenantConn {
    conn: Option<PoolConnection<Postgres>>,
    needs_reset: bool,
    clear_caches: bool,
    tenant: TenantId,
    placement: Placement,
    // Dropped after `conn` has gone back to the tenant pool.
    _lease: Option<PgPoolLease>,
}

impl TenantConn {
    pub(super) fn new(
        conn: PoolConnection<Postgres>,
        needs_reset: bool,
        tenant: TenantId,
        placement: Placement,
        lease: Option<PgPoolLease>,
    ) -> Self {
        // Only a shared connection moves between schemas, whose same-named
        // types would clash in sqlx's caches.
        let clear_caches = needs_reset && matches!(placement, Placement::Schema { .. });
        Self {
            conn: Some(conn),
            needs_reset,
            clear_caches,
            tenant,
            placement,
            _lease: lease,
        }
    }

    /// The tenant this connection is scoped to.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant
    }

    /// Where the tenant's data lives.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Empties sqlx's statement and type caches when the connection moves
    /// between schemas (no round trip when they are already empty).
    pub(super) async fn clear_caches_if_shared(&mut self) -> Result<(), sqlx::Error> {
        if self.clear_caches {
            self.conn_mut().clear_cached_statements().await?;
        }
        Ok(())
    }

    fn conn(&self) -> &PgConnection {
        // `conn` is only taken in `drop`.
        match &self.conn {
            Some(c) => c,
            None => unreachable!("TenantConn used after drop"),
        }
    }

    fn conn_mut(&mut self) -> &mut PgConnection {
        match &mut self.conn {
            Some(c) => c,
            None => unreachable!("TenantConn used after drop"),
        }
    }
}

impl Drop for TenantConn {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if !self.needs_reset {
            return;
        }
        let clear_caches = self.clear_caches;
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let mut reset = reset_session(&mut conn).await;
                    if reset.is_ok() && clear_caches {
                        reset = conn.clear_cached_statements().await;
                    }
                    if reset.is_err() {
                        // Never hand a connection with unknown state back.
                        conn.close_on_drop();
                    }
                });
            }
            Err(_) => conn.close_on_drop(),
        }
    }
}

/// Resets a shared connection, in one round trip unless the caller left a
/// transaction open through raw SQL (`BEGIN` and an early return). Then
/// the reset would run inside that transaction and a later `ROLLBACK`
/// would bring the tenant's scope back, so the transaction is rolled back
/// and the reset sent again.
///
/// How it knows without a round trip of its own: the reset goes through
/// sqlx's custom-statement `begin`, which reports
/// [`BeginFailed`](sqlx::Error::BeginFailed) when the server is outside a
/// transaction once the statement has run — the normal case — and
/// succeeds when it is inside one. (A `ROLLBACK` in front of every reset
/// would cost a server-side warning, written to the server log, on every
/// release.)
async fn reset_session(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let reset = || super::sql::RESET_SESSION.into_sql_str();
    match PgTransactionManager::begin(conn, Some(reset())).await {
        Err(sqlx::Error::BeginFailed) => Ok(()),
        Ok(()) => {
            PgTransactionManager::rollback(conn).await?;
            conn.execute(reset()).await.map(drop)
        }
        // A failed transaction refuses the reset until it is rolled back.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(IN_FAILED_TRANSACTION) => {
            conn.execute("ROLLBACK").await?;
            conn.execute(reset()).await.map(drop)
        }
        Err(other) => Err(other),
    }
}

/// SQLSTATE `in_failed_sql_transaction`.
const IN_FAILED_TRANSACTION: &str = "25P02";

impl Deref for TenantConn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn()
    }
}

impl DerefMut for TenantConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn_mut()
    }
}

impl std::fmt::Debug for TenantConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConn")
            .field("tenant", &self.tenant)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}
