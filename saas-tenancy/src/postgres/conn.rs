use std::ops::{Deref, DerefMut};
use std::time::Instant;

use saas_core::TenantId;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, Postgres};

use super::PgPoolLease;
use super::affinity::Affinity;
use crate::placement::Placement;

/// A connection scoped to one tenant, for single statements that each
/// commit on their own. Use it wherever sqlx takes an executor:
/// `sqlx::query(..).fetch_all(&mut *conn)`.
///
/// With [`ScopeMode::Shared`](super::ScopeMode::Shared) the scope is a
/// session setting put on a shared runtime connection at checkout. With
/// [`ScopeMode::TenantPools`](super::ScopeMode::TenantPools) and for
/// database placements the connection belongs to the tenant's own pool,
/// whose connections carry the scope from their startup packet, and never
/// serves another tenant.
///
/// **What the next user of the connection meets**: a shared runtime
/// connection goes back to its pool through a reset — on drop, including
/// cancellation and panics — that closes cursors, returns role and
/// session authorization to the login's, resets every setting (search
/// path, tenant setting, time zone, transaction characteristics),
/// unlistens, releases session advisory locks and drops temporary objects
/// and sequence state. It is closed instead when that cannot make it
/// trustworthy: a transaction left open through raw SQL (the server rolls
/// it back as the connection closes), statements prepared with SQL
/// `PREPARE` or statements sqlx cached deallocated behind its back, a
/// protocol exchange out of step (a refused `COPY … TO STDOUT` through
/// sqlx's raw copy API), or any error. So whatever raw SQL did to the
/// session, the next tenant starts clean. With tenant affinity (on by
/// default, see [`PgTenancyBuilder::connection_affinity`](super::PgTenancyBuilder::connection_affinity))
/// the connection is first kept for this tenant, for at most a short
/// window, and the tenant's next handle takes it again: it only sets its
/// scope and otherwise meets the session as this handle left it —
/// settings, temporary objects, a transaction raw SQL left open — as on
/// the tenant's own pool; never another tenant. A connection of a tenant's own
/// pool goes back as it is, like any sqlx pooled connection: it never
/// serves another tenant, so what raw SQL leaves on it (a transaction
/// begun and never ended included) meets only the same tenant's later
/// requests — use [`begin`](super::PgTenancy::begin) for transactions.
///
/// sqlx caches prepared statements and custom type OIDs per connection,
/// the types by bare name: a shared runtime connection scoped to a schema
/// tenant starts and ends with those caches emptied, so one tenant's
/// `mood` enum is never bound or read as another tenant's `mood`.
///
/// The same caveat as [`PgTenantTx`](super::PgTenantTx) applies to raw SQL
/// that deliberately changes the scope *while the handle is held*.
///
/// Deletion: on a shared runtime connection the handle holds its
/// tenant's handle lock shared for the session (taken with the scope,
/// released by the reset; see [`handle_lock_key`](super::handle_lock_key)),
/// so [`PgTenancy::delete_tenant`](super::PgTenancy::delete_tenant) waits
/// up to its grace period for the handle to be dropped, then terminates
/// its session. Raw SQL that releases advisory locks
/// (`pg_advisory_unlock_all()`) or changes `application_name` hides the
/// handle from a deletion.
pub struct PgTenantConn {
    conn: Option<PoolConnection<Postgres>>,
    shared: bool,
    clear_caches: bool,
    tenant: TenantId,
    placement: Placement,
    // Where a shared connection may be kept for the tenant, and when it
    // last left the pool (see `affinity`).
    affinity: Option<(Affinity, Instant)>,
    // Dropped after `conn` has gone back to the tenant pool.
    _lease: Option<PgPoolLease>,
}

impl PgTenantConn {
    pub(super) fn new(
        conn: PoolConnection<Postgres>,
        shared: bool,
        tenant: TenantId,
        placement: Placement,
        lease: Option<PgPoolLease>,
        affinity: Option<(Affinity, Instant)>,
    ) -> Self {
        // Only a shared connection moves between schemas, whose same-named
        // types would clash in sqlx's caches.
        let clear_caches = shared && matches!(placement, Placement::Schema { .. });
        Self {
            conn: Some(conn),
            shared,
            clear_caches,
            tenant,
            placement,
            affinity,
            _lease: lease,
        }
    }

    /// The tenant this connection is scoped to.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant
    }

    /// Whether the connection serves other tenants too (a shared runtime
    /// connection, reset as it goes back), or only this tenant (its own
    /// pool, returned as it is).
    pub fn on_shared_connection(&self) -> bool {
        self.shared
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

    /// Gives the connection up after its scope could not be set: never
    /// kept for the tenant; closed when it was a kept one (`close`: its
    /// state is unknown), else returned through the pool's full reset.
    pub(super) fn abandon(mut self, close: bool) {
        self.affinity = None;
        if close && let Some(conn) = self.conn.as_mut() {
            conn.close_on_drop();
        }
    }

    fn conn(&self) -> &PgConnection {
        // `conn` is only taken in `drop`.
        match &self.conn {
            Some(c) => c,
            None => unreachable!("PgTenantConn used after drop"),
        }
    }

    fn conn_mut(&mut self) -> &mut PgConnection {
        match &mut self.conn {
            Some(c) => c,
            None => unreachable!("PgTenantConn used after drop"),
        }
    }
}

impl Drop for PgTenantConn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if let Some((affinity, left_pool)) = self.affinity.take() {
            // Kept for the tenant, or handed back through the reset.
            affinity.keep(conn, self.tenant, self.placement.clone(), left_pool);
            return;
        }
        // The scope and whatever else raw SQL left on the session are
        // reset by the pool on release (see `session`); only sqlx's own
        // caches, which the server knows nothing of, are emptied here.
        if self.clear_caches {
            release_with_caches_emptied(conn);
        }
    }
}

/// Hands a shared connection that served a schema tenant back to its pool
/// only with sqlx's caches emptied (same-named types in two schemas clash
/// there); one whose caches cannot be emptied (no runtime to do it, or an
/// error) is closed instead. Used by `PgTenantConn` and `PgTenantTx` on drop.
pub(super) fn release_with_caches_emptied(mut conn: PoolConnection<Postgres>) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(async move {
                if conn.clear_cached_statements().await.is_err() {
                    conn.close_on_drop();
                }
            });
        }
        Err(_) => conn.close_on_drop(),
    }
}

impl Deref for PgTenantConn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn()
    }
}

impl DerefMut for PgTenantConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn_mut()
    }
}

impl std::fmt::Debug for PgTenantConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTenantConn")
            .field("tenant", &self.tenant)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}
