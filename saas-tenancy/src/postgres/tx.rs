use std::ops::{Deref, DerefMut};

use saas_core::TenantId;
use sqlx::{PgConnection, Postgres, Transaction};

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
pub struct TenantTx {
    // Field order matters: the transaction is dropped (rolled back) before
    // the pool lease is released.
    tx: Transaction<'static, Postgres>,
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
        Self {
            tx,
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

    /// Commits; the scope ends with the transaction.
    pub async fn commit(self) -> Result<(), TenancyError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Rolls back; the scope ends with the transaction.
    pub async fn rollback(self) -> Result<(), TenancyError> {
        self.tx.rollback().await?;
        Ok(())
    }
}

impl Deref for TenantTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for TenantTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
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
