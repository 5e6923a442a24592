use std::ops::{Deref, DerefMut};

use saas_core::TenantId;
use sqlx::{Connection, PgConnection, Postgres, Transaction};

use super::PgPoolLease;
use crate::error::TenancyError;
use crate::placement::Placement;

/// A transaction scoped to one tenant. Use it wherever sqlx takes an
/// executor: `sqlx::query(..).fetch_all(&mut *tx)`.
///
/// The scope (tenant setting, role, search path) is transaction-local:
/// it ends with [`commit`](TenantTx::commit), [`rollback`](TenantTx::rollback)
/// or drop (which rolls back — including when a future is cancelled or a
/// panic unwinds), so no tenant state survives on the pooled connection.
///
/// What the database enforces: on row placements, RLS policies admit only
/// this tenant's rows, for reads and writes; on schema placements the
/// transaction runs as the tenant's role with the tenant's schema first on
/// the search path, and other tenants' schemas are not accessible; on
/// database placements the connection reaches only the tenant's database.
/// What it does not: raw SQL through the handle that deliberately changes
/// the scope (`set_config('saas.tenant_id', …)`, `SET ROLE`, `RESET ROLE`)
/// is not prevented. Never build such statements from request data.
///
/// On a shared runtime connection, a schema tenant's transaction starts
/// and ends with sqlx's per-connection statement and type caches emptied
/// (see [`TenantConn`](super::TenantConn)); ending it costs one more
/// round trip when statements were prepared in it.
pub struct TenantTx {
    // Field order matters: the transaction is dropped (rolled back) before
    // the pool lease is released. `None` only once committed or dropped.
    tx: Option<Transaction<'static, Postgres>>,
    clear_caches: bool,
    tenant: TenantId,
    placement: Placement,
    _lease: Option<PgPoolLease>,
}

impl TenantTx {
    pub(super) fn new(
        tx: Transaction<'static, Postgres>,
        tenant: TenantId,
        placement: Placement,
        lease: Option<PgPoolLease>,
    ) -> Self {
        // Only a shared connection moves between schemas (see `TenantConn`).
        let clear_caches = lease.is_none() && matches!(placement, Placement::Schema { .. });
        Self {
            tx: Some(tx),
            clear_caches,
            tenant,
            placement,
            _lease: lease,
        }
    }

    /// The tenant this transaction is scoped to.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant
    }

    /// Where the tenant's data lives.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Empties sqlx's caches when the connection moves between schemas
    /// (no round trip when they are already empty).
    pub(super) async fn clear_caches_if_shared(&mut self) -> Result<(), sqlx::Error> {
        if self.clear_caches {
            self.tx_mut().clear_cached_statements().await?;
        }
        Ok(())
    }

    /// Commits; the scope ends with the transaction.
    pub async fn commit(mut self) -> Result<(), TenancyError> {
        self.clear_caches_if_shared().await?;
        if let Some(tx) = self.tx.take() {
            tx.commit().await?;
        }
        Ok(())
    }

    /// Rolls back; the scope ends with the transaction.
    pub async fn rollback(mut self) -> Result<(), TenancyError> {
        self.clear_caches_if_shared().await?;
        if let Some(tx) = self.tx.take() {
            tx.rollback().await?;
        }
        Ok(())
    }

    fn tx(&self) -> &PgConnection {
        // `tx` is only taken by `commit`, `rollback` and `drop`.
        match &self.tx {
            Some(tx) => tx,
            None => unreachable!("TenantTx used after it ended"),
        }
    }

    fn tx_mut(&mut self) -> &mut PgConnection {
        match &mut self.tx {
            Some(tx) => tx,
            None => unreachable!("TenantTx used after it ended"),
        }
    }
}

impl Drop for TenantTx {
    fn drop(&mut self) {
        let Some(mut tx) = self.tx.take() else {
            return;
        };
        if !self.clear_caches {
            // Dropping the transaction rolls it back.
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                // A failure here means a broken connection, which the pool
                // tests and closes on release.
                let _ = tx.clear_cached_statements().await;
                drop(tx);
            });
        }
    }
}

impl Deref for TenantTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.tx()
    }
}

impl DerefMut for TenantTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.tx_mut()
    }
}

impl std::fmt::Debug for TenantTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantTx")
            .field("tenant", &self.tenant)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}
