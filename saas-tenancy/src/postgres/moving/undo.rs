//! Undoing a move before its cut-over, and removing its source after it
//! (a kept source's purge is in `retention.rs`).

use saas_core::TenantId;
use sqlx::{AssertSqlSafe, Executor, PgConnection};

use super::ledger::{self, MoveRow};
use super::plan::{self, Table};
use super::{MovePhase, capture, copy, lockout, replicate};
use crate::error::TenancyError;
use crate::placement::Placement;
use crate::postgres::PgTenancy;

impl PgTenancy {
    /// Undoes the tenant's unfinished move, if it has not cut over: the
    /// replication objects are dropped (subscription, slots,
    /// publication), the target's storage removed (its schema or database;
    /// the tenant's rows from a row target's shared tables), the source's
    /// lock-out lifted and the tenant marked active again — it is served
    /// from its source, whose data the move never changed.
    ///
    /// ```no_run
    /// # async fn run(tenancy: saas_tenancy::postgres::PgTenancy, id: saas_core::TenantId)
    /// #     -> Result<(), saas_tenancy::TenancyError> {
    /// if tenancy.open_move(id).await?.is_some() {
    ///     tenancy.abort_move(id).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`TenancyError::InvalidInput`] when the tenant has no unfinished
    /// move, or its move has cut over already (finish it with
    /// [`resume_move`](Self::resume_move), then move the tenant back).
    pub async fn abort_move(&self, tenant: TenantId) -> Result<(), TenancyError> {
        let pool = self.ledger_pool()?;
        ledger::migrate(pool).await?;
        if let Some(row) = ledger::open_for(pool, tenant)
            .await?
            .filter(|r| r.to_sqlite)
        {
            return Err(super::api::to_sqlite(&row));
        }
        let (lock, _) = self.lock_tenant(tenant).await?;
        let result = match ledger::open_for(pool, tenant).await {
            Ok(Some(row)) if row.to_sqlite => Err(super::api::to_sqlite(&row)),
            Ok(Some(row)) => self.abort_row(pool, row).await,
            Ok(None) => Err(super::api::no_open_move(tenant)),
            Err(e) => Err(e),
        };
        lock.release().await;
        result
    }

    async fn abort_row(&self, pool: &sqlx::PgPool, mut row: MoveRow) -> Result<(), TenancyError> {
        if row.phase >= MovePhase::CutOver {
            return Err(TenancyError::InvalidInput(format!(
                "the move {} of tenant {} has cut over: the tenant is served from its target; \
                 finish it with resume_move, then move the tenant back",
                row.id, row.tenant
            )));
        }
        let name = replicate::name(row.id);
        let mut src = plan::connect(self, &row.from).await?;
        let source = self.source_tables(&mut src, &row.from).await?;
        // The target: its replication, then its storage.
        let subscription = match plan::connect(self, &row.to).await {
            Ok(mut dst) => {
                let oid = replicate::drop_subscription(&mut dst, &name).await?;
                if let (Some(staging), Some(own)) = (&row.staging, plan::private_schema(&row.to)) {
                    replicate::rename_schema(&mut dst, staging, &own).await?;
                }
                oid
            }
            // A target database never created (or already dropped).
            Err(_) if matches!(row.to, Placement::Database { .. }) => None,
            Err(e) => return Err(e),
        };
        replicate::drop_source_objects(&mut src, &name, subscription).await?;
        capture::remove(&mut src, row.id, &source).await?;
        self.undo_target(row.tenant, &row.to).await?;
        // The source serves again.
        lockout::restore(self, &row.from, &source, row.tenant).await?;
        ledger::unfence(pool, row.tenant, self.inner.clock.now()).await?;
        self.forget_record(row.tenant);
        row.phase = MovePhase::Aborted;
        ledger::record(pool, &row, self.inner.clock.now()).await
    }

    /// Removes what a move put on its target before the cut-over: the
    /// tenant's rows from a row target's shared tables (other tenants'
    /// rows untouched), a schema target with its role, a database target.
    /// Also the undo of a move from SQLite (see `incoming.rs`).
    pub(super) async fn undo_target(
        &self,
        tenant: TenantId,
        to: &Placement,
    ) -> Result<(), TenancyError> {
        if let Placement::Shared { .. } = to {
            let mut dst = plan::connect(self, to).await?;
            let tables = self.target_tables(&mut dst, None).await?;
            super::copy::clear(&mut dst, &tables, tenant).await?;
        }
        self.remove_storage(to).await
    }

    /// After the cut-over: drops what is left of the replication and,
    /// unless the move keeps it, the source's data. A row source's
    /// lock-out policies stay (a process that missed the cut-over could
    /// otherwise write there again); moving the tenant back drops them.
    pub(super) async fn clean_up(
        &self,
        src: &mut PgConnection,
        row: &MoveRow,
        source: &[Table],
    ) -> Result<(), TenancyError> {
        let name = replicate::name(row.id);
        let mut dst = plan::connect(self, &row.to).await?;
        let subscription = replicate::drop_subscription(&mut dst, &name).await?;
        replicate::drop_source_objects(src, &name, subscription).await?;
        capture::remove(src, row.id, source).await?;
        if !row.keep_source {
            self.purge_source(src, row, source).await?;
        }
        Ok(())
    }

    /// Removes a move's source data: the tenant's rows from the shared
    /// tables (`src` is the source database), its schema and role, or its
    /// database.
    pub(super) async fn purge_source(
        &self,
        src: &mut PgConnection,
        row: &MoveRow,
        source: &[Table],
    ) -> Result<(), TenancyError> {
        match &row.from {
            Placement::Shared { .. } => {
                // As the owner (the lock-out policies are the runtime
                // role's); the tenant is locked out of these rows, so a
                // purge stopped halfway shows nothing and is run again.
                for table in source {
                    copy::delete_in_batches(src, table, row.tenant).await?;
                }
                Ok(())
            }
            placement => self.remove_storage(placement).await,
        }
    }

    /// Drops a schema (and its role) or a database of the tenant; nothing
    /// for a row placement.
    pub(super) async fn remove_storage(&self, placement: &Placement) -> Result<(), TenancyError> {
        let cluster = self.cluster(placement.cluster())?;
        match placement {
            Placement::Schema { schema, .. } => {
                let mut tx = cluster.admin.begin().await?;
                crate::postgres::lifecycle::drop_schema(&mut tx, schema).await?;
                tx.commit().await?;
            }
            Placement::Database { database, .. } => {
                cluster
                    .admin
                    .execute(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        database.quoted()
                    )))
                    .await?;
            }
            Placement::Shared { .. } => {}
        }
        Ok(())
    }
}
