use std::ops::{Deref, DerefMut};
use std::time::Instant;

use saas_core::TenantId;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgTransactionManager;
use sqlx::{Connection, PgConnection, Postgres, SqlStr};
use sqlx_core::transaction::TransactionManager;

use super::PgPoolLease;
use super::affinity::Affinity;
use crate::error::TenancyError;
use crate::placement::Placement;

/// A transaction scoped to one tenant. Use it wherever sqlx takes an
/// executor: `sqlx::query(..).fetch_all(&mut *tx)`.
///
/// The scope (tenant setting, role, search path) is transaction-local:
/// it ends with [`commit`](PgTenantTx::commit), [`rollback`](PgTenantTx::rollback)
/// or drop (which rolls back — including when a future is cancelled or a
/// panic unwinds). Whatever raw SQL did to a shared runtime connection's
/// session besides — session-level `SET`, `SET ROLE`, `PREPARE`,
/// `LISTEN`, advisory locks, held cursors, temporary tables — is reset
/// when the connection goes back to its pool, or the connection is closed
/// (see [`PgTenantConn`](super::PgTenantConn) for the list, for tenant
/// pools, and for tenant affinity: a committed transaction's shared
/// connection may first be kept for the same tenant's next handle; a
/// rolled-back one never is): no tenant's state reaches another tenant.
///
/// What the database enforces: on row placements, RLS policies admit only
/// this tenant's rows, for reads and writes; on schema placements the
/// transaction runs as the tenant's role with the tenant's schema first on
/// the search path, and other tenants' schemas are not accessible; on
/// database placements the connection reaches only the tenant's database.
/// What it does not: raw SQL through the handle that deliberately changes
/// the scope while the handle is held (`set_config('saas.tenant_id', …)`,
/// `SET ROLE <another tenant>`, `RESET ROLE`) is not prevented — the
/// runtime role can reach every row and schema tenant by design. Never
/// build such statements from request data; see the crate's threat model
/// for what each placement guarantees against SQL injection.
///
/// On a shared runtime connection from the pool, a schema tenant's
/// transaction starts with sqlx's per-connection statement and type caches
/// emptied (see [`PgTenantConn`](super::PgTenantConn)); they are emptied again
/// before the connection goes back to the pool (one more round trip when
/// statements were prepared in it: in `rollback`, or off the request path
/// when a committed connection is not kept); a connection kept for the
/// tenant keeps them.
///
/// Deletion: on a shared runtime connection the handle holds its
/// tenant's handle lock shared until it ends (taken in the `BEGIN` round
/// trip, see [`handle_lock_key`](super::handle_lock_key)); on a tenant
/// pool its connection carries the tenant in its `application_name`.
/// [`PgTenancy::delete_tenant`](super::PgTenancy::delete_tenant) waits up
/// to its grace period for the handle to end, then terminates its
/// session: what it wrote goes with the tenant.
///
/// Failing closed: a connection is closed instead of going back to its
/// pool when the caches could not be emptied (an error, or a drop outside
/// a Tokio runtime) or when the handle was dropped while `BEGIN` and the
/// scope were still in flight (the server's state is then unknown).
pub struct PgTenantTx {
    // Field order matters: the connection is handed back (or closed)
    // before the pool lease is released. `None` only once ended.
    conn: Option<PoolConnection<Postgres>>,
    state: State,
    clear_caches: bool,
    tenant: TenantId,
    placement: Placement,
    // Held until the connection has gone back; `None` on a shared
    // runtime connection.
    lease: Option<PgPoolLease>,
    // Where a committed shared connection may be kept for the tenant,
    // and when it last left the pool (see `affinity`).
    affinity: Option<(Affinity, Instant)>,
    // Behind a transaction pooler, a transaction dropped open closes its
    // connection instead of queuing a `ROLLBACK` (see `Drop`).
    pooled: bool,
}

/// Where the transaction is, for what dropping it must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `BEGIN` (with the scope) was sent and has not been confirmed: a
    /// cancellation here leaves the server-side state unknown.
    Beginning,
    /// In the transaction: dropping rolls it back.
    Open,
    /// Committed or rolled back, with the caches already emptied.
    Ended,
    /// Committed on a shared connection that may be kept for the tenant
    /// (caches not emptied: keeping or handing back sees to them).
    Committed,
}

impl PgTenantTx {
    /// Begins a transaction on `conn` (with `statement` instead of `BEGIN`
    /// when given). The handle owns the connection before `BEGIN` is sent,
    /// so a cancellation at any point is handled by its `Drop`.
    // Each argument is a separate part of the handle's state, set once.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn begin(
        conn: PoolConnection<Postgres>,
        statement: Option<SqlStr>,
        tenant: TenantId,
        placement: Placement,
        // Held until the connection has gone back; `None` on a shared
        // runtime connection.
        lease: Option<PgPoolLease>,
        // On a shared connection: where it may be kept, and whether it
        // was kept for this tenant already (its caches are the tenant's).
        affinity: Option<(Affinity, Instant)>,
        reused: bool,
        pooled: bool,
    ) -> Result<Self, TenancyError> {
        // Only a shared connection moves between schemas (see `PgTenantConn`).
        let clear_caches = lease.is_none() && matches!(placement, Placement::Schema { .. });
        let mut tx = Self {
            conn: Some(conn),
            state: State::Beginning,
            clear_caches,
            tenant,
            placement,
            lease,
            affinity,
            pooled,
        };
        PgTransactionManager::begin(tx.conn_mut(), statement).await?;
        // sqlx's transaction manager keeps its transaction depth, so a
        // nested `begin` on the handle makes a savepoint as with `Transaction`.
        tx.state = State::Open;
        if !reused {
            tx.clear_caches_if_shared().await?;
        }
        Ok(tx)
    }

    /// The tenant this transaction is scoped to.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant
    }

    /// Whether the connection serves other tenants too (see
    /// [`PgTenantConn::on_shared_connection`](super::PgTenantConn::on_shared_connection)).
    pub fn on_shared_connection(&self) -> bool {
        self.lease.is_none()
    }

    /// Where the tenant's data lives.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Empties sqlx's caches when the connection moves between schemas
    /// (no round trip when they are already empty).
    async fn clear_caches_if_shared(&mut self) -> Result<(), sqlx::Error> {
        if self.clear_caches {
            self.conn_mut().clear_cached_statements().await?;
        }
        Ok(())
    }

    /// Commits; the scope ends with the transaction.
    pub async fn commit(mut self) -> Result<(), TenancyError> {
        // On any error `self` is dropped still `Open`: rolled back, and
        // the connection is closed unless its caches can be emptied.
        if self.affinity.is_some() {
            // Kept for the tenant, caches and all, or handed back with
            // them emptied (see `Drop`).
            PgTransactionManager::commit(self.conn_mut()).await?;
            self.state = State::Committed;
            return Ok(());
        }
        self.clear_caches_if_shared().await?;
        PgTransactionManager::commit(self.conn_mut()).await?;
        self.state = State::Ended;
        Ok(())
    }

    /// Rolls back; the scope ends with the transaction.
    pub async fn rollback(mut self) -> Result<(), TenancyError> {
        self.clear_caches_if_shared().await?;
        PgTransactionManager::rollback(self.conn_mut()).await?;
        self.state = State::Ended;
        Ok(())
    }

    fn conn(&self) -> &PgConnection {
        // `conn` is only taken by `drop`.
        match &self.conn {
            Some(c) => c,
            None => unreachable!("PgTenantTx used after drop"),
        }
    }

    fn conn_mut(&mut self) -> &mut PgConnection {
        match &mut self.conn {
            Some(c) => c,
            None => unreachable!("PgTenantTx used after drop"),
        }
    }
}

impl Drop for PgTenantTx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        match self.state {
            State::Ended => return,
            State::Committed => {
                if let Some((affinity, left_pool)) = self.affinity.take() {
                    affinity.keep(conn, self.tenant, self.placement.clone(), left_pool);
                } else if self.clear_caches {
                    super::conn::release_with_caches_emptied(conn);
                }
                return;
            }
            // The server may or may not be in the transaction, with the
            // tenant's scope: never hand such a connection back.
            State::Beginning => {
                conn.close_on_drop();
                return;
            }
            // Behind a transaction pooler: raw SQL may have left the
            // exchange out of step (a refused raw `COPY`), which PgBouncer
            // turns into replies lost or misread; closing hands the server
            // connection back to PgBouncer, which rolls it back.
            State::Open if self.pooled => {
                conn.close_on_drop();
                return;
            }
            // Queued; the pool sends it (and checks the connection) on
            // release, or the task below sends it first.
            State::Open => PgTransactionManager::start_rollback(&mut conn),
        }
        if self.clear_caches {
            super::conn::release_with_caches_emptied(conn);
        }
    }
}

impl Deref for PgTenantTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn()
    }
}

impl DerefMut for PgTenantTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn_mut()
    }
}

impl std::fmt::Debug for PgTenantTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTenantTx")
            .field("tenant", &self.tenant)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}
