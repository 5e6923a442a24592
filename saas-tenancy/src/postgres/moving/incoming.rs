//! The PostgreSQL side of a move *from* SQLite (see
//! `SqliteTenancy::move_tenant_to_postgres`): this mover's own target
//! machinery — preparing the target (`target.rs`), opening it at the
//! cut-over (`lockout.rs`), undoing it (`undo.rs`) — lent to the SQLite
//! driver, which keeps its phases and ledger.

use saas_core::TenantId;
use sqlx::PgConnection;

use super::plan;
use crate::error::TenancyError;
use crate::placement::Placement;
use crate::postgres::PgTenancy;

/// A tenant table of a move's PostgreSQL target.
#[derive(Debug, Clone)]
pub(crate) struct IncomingTable {
    /// The table's name (bare).
    pub(crate) name: String,
    /// `"schema"."table"`, quoted.
    pub(crate) qualified: String,
    /// The tenant column of a shared table (a row target); `None` in a
    /// schema or database target, whose tables are the tenant's alone.
    pub(crate) tenant_column: Option<String>,
    /// ` WHERE <tenant column> = '<tenant>'::uuid` on a shared table,
    /// empty otherwise: what every statement of the move on this table
    /// adds, so that on a row target it touches the tenant's rows only.
    pub(crate) filter: String,
}

impl PgTenancy {
    /// Refuses a target on a cluster `self` does not have.
    pub(crate) fn check_incoming_cluster(&self, to: &Placement) -> Result<(), TenancyError> {
        self.cluster(to.cluster()).map(|_| ())
    }

    /// Prepares `to` for the tenant's rows exactly as a move between
    /// PostgreSQL placements does (`prepare_target`): a schema or
    /// database provisioned with the tenant migrations and sealed from the
    /// runtime role until the cut-over, the tenant's leftover rows
    /// removed (on a row target: its rows only, other tenants' untouched).
    /// Idempotent, so a resumed move repeats it.
    pub(crate) async fn prepare_incoming(
        &self,
        tenant: TenantId,
        to: &Placement,
    ) -> Result<(), TenancyError> {
        if let Placement::Shared { .. } = to {
            // Before anything is fenced: the shared tables must be able
            // to take the tenant's rows in isolation (checked again at
            // the copy).
            let mut dst = plan::connect(self, to).await?;
            self.incoming_tables(&mut dst, to, tenant).await?;
        }
        // The SQLite source's tables are paired with these at the copy,
        // by their SQLite names: nothing to pair here.
        self.prepare_target(tenant, to, &[]).await
    }

    /// An admin connection to the database of `to` (the cluster's for a
    /// row or schema target, the tenant's own for a database target).
    pub(crate) async fn incoming_connection(
        &self,
        to: &Placement,
    ) -> Result<PgConnection, TenancyError> {
        plan::connect(self, to).await
    }

    /// The tenant tables of `to` as `dst` (see
    /// [`incoming_connection`](Self::incoming_connection)) sees them:
    /// the shared tables carrying a tenant column for a row target (each
    /// must force row-level security, or the move is refused), the
    /// schema's (or the database's `public`) tables otherwise.
    pub(crate) async fn incoming_tables(
        &self,
        dst: &mut PgConnection,
        to: &Placement,
        tenant: TenantId,
    ) -> Result<Vec<IncomingTable>, TenancyError> {
        let tables = self
            .target_tables(dst, plan::private_schema(to).as_deref())
            .await?;
        let shared = matches!(to, Placement::Shared { .. });
        let mut incoming = Vec::with_capacity(tables.len());
        for table in tables {
            // Fails closed: a shared table without a tenant column would
            // show the tenant's rows to every tenant (`plan::tables` only
            // lists shared tables that have one; checked again here).
            if shared && table.column.is_none() {
                return Err(TenancyError::InvalidInput(format!(
                    "the shared table {} has no tenant column: every tenant would see the \
                     moved rows; nothing was moved",
                    table.qualified()
                )));
            }
            if shared {
                // The database is what keeps row tenants apart on
                // PostgreSQL: a shared table without forced RLS would not.
                let (enabled, forced): (bool, bool) = sqlx::query_as(
                    "SELECT relrowsecurity, relforcerowsecurity FROM pg_class \
                     WHERE oid = $1::text::regclass",
                )
                .bind(table.qualified())
                .fetch_one(&mut *dst)
                .await?;
                if !(enabled && forced) {
                    return Err(TenancyError::InvalidInput(format!(
                        "the shared table {} does not force row-level security: declare it as \
                         a tenant table (PgTenancyBuilder::tenant_table) and run \
                         PgTenancy::setup before moving a row tenant into it; nothing was \
                         moved",
                        table.qualified()
                    )));
                }
            }
            incoming.push(IncomingTable {
                qualified: table.qualified(),
                filter: table.filter(tenant),
                tenant_column: table.column.clone(),
                name: table.name,
            });
        }
        Ok(incoming)
    }

    /// Opens the filled target to the runtime role just before the
    /// catalog names it, as the PostgreSQL mover's cut-over does: a
    /// schema's role or a database's `CONNECT` granted, a row target's
    /// lock-out policies of an earlier move away from it dropped.
    pub(crate) async fn open_incoming(
        &self,
        tenant: TenantId,
        to: &Placement,
    ) -> Result<(), TenancyError> {
        let mut dst = plan::connect(self, to).await?;
        let tables = self
            .target_tables(&mut dst, plan::private_schema(to).as_deref())
            .await?;
        drop(dst);
        super::lockout::restore(self, to, &tables, tenant).await
    }

    /// Undoes [`prepare_incoming`](Self::prepare_incoming) and the copy,
    /// as the PostgreSQL mover's abort does: the tenant's rows deleted
    /// from a row target's shared tables (other tenants' untouched), a
    /// schema (with its role) or database target dropped.
    pub(crate) async fn undo_incoming(
        &self,
        tenant: TenantId,
        to: &Placement,
    ) -> Result<(), TenancyError> {
        self.undo_target(tenant, to).await
    }
}
