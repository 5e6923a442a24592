//! Status changes and deletion of PostgreSQL tenants (the data is really
//! gone, for every placement), each under the tenant's lock.

use saas_core::{TenantId, TenantStatus};
use sqlx::{AssertSqlSafe, Executor, PgConnection};

use super::fence::Cutter;
use super::{PgTenancy, TENANT_SETTING};
use crate::error::TenancyError;
use crate::hooks::LifecycleEvent;
use crate::placement::{Placement, SqlName};
use crate::record::TenantRecord;

/// How many passes a row delete makes when foreign keys between tenant
/// tables require an order (each pass deletes what it can).
const DELETE_PASSES: usize = 8;

impl PgTenancy {
    /// Suspends a tenant: new scoped handles are refused, the data is kept.
    /// See [`PgTenancy::set_status`].
    pub async fn suspend(&self, id: TenantId) -> Result<TenantRecord, TenancyError> {
        self.set_status(id, TenantStatus::Suspended).await
    }

    /// Resumes a suspended tenant. See [`PgTenancy::set_status`].
    pub async fn resume(&self, id: TenantId) -> Result<TenantRecord, TenancyError> {
        self.set_status(id, TenantStatus::Active).await
    }

    /// Suspends (`to` = suspended: scoped access refused, data kept) or
    /// resumes (`to` = active) a tenant in the catalog — the only two
    /// changes made here; any other `to` is [`TenancyError::InvalidInput`]
    /// (provisioning, deleting and deleted belong to [`provision`](Self::provision),
    /// [`retry_provisioning`](Self::retry_provisioning) and
    /// [`delete_tenant`](Self::delete_tenant), which do the work), and a
    /// tenant neither active nor suspended is
    /// [`TenancyError::InvalidTransition`]. It drops this instance's
    /// cached copy, so the change applies here
    /// at once (other processes see it within the record TTL); then calls
    /// the hooks with [`LifecycleEvent::StatusChanged`] if the status
    /// changed.
    ///
    /// Serialised per tenant with every other operation on it (the
    /// tenant's lock, see `tenant_lock.rs`): the status is read again
    /// under the lock, so a change after a concurrent delete is
    /// [`TenancyError::InvalidTransition`] from `deleted` and never brings
    /// the tenant back. Asking for the current status changes nothing and
    /// calls no hook. The hooks run after the lock is released.
    ///
    /// Suspending refuses *new* handles ([`begin`](Self::begin) and
    /// [`acquire`](Self::acquire) return [`TenancyError::TenantNotServable`]);
    /// a [`PgTenantTx`](super::PgTenantTx) or [`PgTenantConn`](super::PgTenantConn)
    /// already held keeps working until it is committed, rolled back or
    /// dropped — requests in flight finish. The tenant's data is kept and
    /// served again after resuming.
    pub async fn set_status(
        &self,
        id: TenantId,
        to: TenantStatus,
    ) -> Result<TenantRecord, TenancyError> {
        // Refused before the lock is taken.
        crate::catalog::suspend_or_resume_from(to)?;
        let (lock, before) = self.lock_tenant(id).await?;
        let result = crate::catalog::suspend_or_resume(&*self.inner.catalog, &before, to).await;
        self.forget_record(id);
        lock.release().await;
        let record = result?;
        if before.status != record.status {
            self.inner
                .hooks
                .on_event(&LifecycleEvent::StatusChanged {
                    record: record.clone(),
                    from: before.status,
                })
                .await?;
        }
        Ok(record)
    }

    /// Deletes a tenant's data and marks it deleted.
    ///
    /// - row placements: every table of the cluster's shared schemas that
    ///   has a tenant column is found in the database (not a hand-kept
    ///   list; the library's own tables, such as the migration ledger,
    ///   excepted) — the shared schemas being those on the admin
    ///   connection's `search_path` — and the tenant's rows are deleted in
    ///   one transaction;
    /// - schema placements: the schema (`CASCADE`) and its role are dropped,
    ///   in one transaction;
    /// - database placements: the database is dropped (`WITH (FORCE)`).
    ///
    /// **Deletion is final: the tenant is fenced first.** It is marked
    /// `deleting`, so new handles are refused with
    /// [`TenancyError::TenantNotServable`] — in this process at once
    /// (including requests that were already waiting for a connection),
    /// in other processes once their cached record expires
    /// ([`record_ttl`](super::PgTenancyBuilder::record_ttl)). Handles
    /// already open ([`PgTenantTx`](super::PgTenantTx),
    /// [`PgTenantConn`](super::PgTenantConn), from any process) get up to the
    /// [`deletion_grace`](super::PgTenancyBuilder::deletion_grace) period
    /// (default 5 s) to end — what they wrote meanwhile is deleted with the
    /// tenant — and are then **cut**: their sessions are terminated
    /// (`pg_terminate_backend`), so their next statement or commit fails
    /// and nothing more they send is written. A tenant-pool connection of
    /// another process that is idle between statements is cut without
    /// waiting (it cannot be told from one parked in its pool). The data is
    /// deleted while the tenant's handle lock is held exclusively (see
    /// [`handle_lock_key`](super::handle_lock_key)), so nothing can start
    /// on it meanwhile; no handle is left to deadlock with a schema's
    /// `DROP`.
    ///
    /// Not covered: a process whose cached record still says `active`
    /// (up to its `record_ttl` after the tenant was marked `deleting`) can
    /// open a handle after the deletion finished; on a schema or database
    /// placement it fails (the role, schema or database is gone), on a row
    /// placement it could write rows again. Keep `record_ttl` short, or
    /// suspend the tenant and wait that long before deleting it. Raw SQL
    /// through a held handle that releases its advisory locks or changes
    /// its `application_name` hides it from the deletion.
    ///
    /// Privileges: cutting needs the cluster's admin role to be a member of
    /// `pg_signal_backend` (or of the runtime role); seeing which
    /// tenant-pool connections of other roles are busy needs
    /// `pg_read_all_stats` (without it they are waited for as if busy).
    /// Without the first, a delete that has handles to cut fails with
    /// [`TenancyError::InsufficientPrivilege`], naming the grant; a delete
    /// that cannot take the handle lock even after cutting fails with
    /// [`TenancyError::TenantInUse`]. Either way nothing was deleted, the
    /// tenant stays `deleting` (refused to new handles) and calling
    /// `delete_tenant` again completes it.
    ///
    /// Serialised per tenant with every other operation on it (the
    /// tenant's lock): the record is read under the lock, a tenant already
    /// deleted is returned as is — so of two concurrent deletes, both
    /// return the deleted record and the deletion runs once — otherwise it
    /// is marked `deleting`, its data deleted and it is marked `deleted`,
    /// all before the lock is released. Safe to retry after a crash (the
    /// tenant stays `deleting` until the data is gone). The hooks
    /// ([`LifecycleEvent::StatusChanged`] to `deleting`, then
    /// [`LifecycleEvent::Deleted`]) run after the lock is released.
    #[tracing::instrument(name = "tenancy.delete", skip_all, fields(tenant_id = %id, backend = "postgres"))]
    pub async fn delete_tenant(&self, id: TenantId) -> Result<TenantRecord, TenancyError> {
        let (lock, record) = self.lock_tenant(id).await?;
        let mut events = Vec::new();
        let result = if record.status == TenantStatus::Deleted {
            Ok(record)
        } else {
            self.delete_locked(record, &mut events).await
        };
        lock.release().await;
        // Each step that happened is reported, even if a later one failed.
        for event in &events {
            self.inner.hooks.on_event(event).await?;
        }
        result
    }

    /// The deletion proper, under the tenant's lock; `events` collects the
    /// hooks' events of the steps done.
    async fn delete_locked(
        &self,
        before: TenantRecord,
        events: &mut Vec<LifecycleEvent>,
    ) -> Result<TenantRecord, TenancyError> {
        let id = before.id;
        // From here until the deletion ends, this process reads the
        // tenant's record from the catalog on every request, and requests
        // that read it before check it again (see `checkout`).
        let _fence = Fence::raise(self, id);
        let deleting = if before.status == TenantStatus::Deleting {
            before
        } else {
            let deleting = self
                .inner
                .catalog
                .set_status(id, TenantStatus::Deleting)
                .await?;
            // Again now that `deleting` is stored: a request that read the
            // fence count after it was raised but the record before this
            // write saw `active`, and must check it again too.
            _fence.bump();
            events.push(LifecycleEvent::StatusChanged {
                record: deleting.clone(),
                from: before.status,
            });
            deleting
        };
        self.delete_data(&deleting).await?;
        let deleted = self
            .inner
            .catalog
            .set_status(id, TenantStatus::Deleted)
            .await?;
        events.push(LifecycleEvent::Deleted(deleted.clone()));
        Ok(deleted)
    }

    /// Waits for and cuts the tenant's handles (see `fence.rs`), then
    /// deletes its data.
    async fn delete_data(&self, record: &TenantRecord) -> Result<(), TenancyError> {
        let cluster = self.cluster(record.placement.cluster())?;
        let cutter = Cutter::new(
            record.id,
            self.inner.deletion_grace,
            cluster.config.admin.get_username(),
        );
        // This process's connections kept for the tenant hold no handle
        // but may hold its handle lock (a kept session handle's): handed
        // back through the reset, which releases it.
        if let Some(affinity) = &cluster.affinity {
            affinity.release_tenant(record.id);
        }
        // This process's tenant pool (tenant pools, database placements):
        // closed at once, its checked-out connections waited for.
        self.inner
            .registry
            .close_within(record.id, cutter.remaining())
            .await;
        let admin = &cluster.admin;
        if let Placement::Database { database, .. } = &record.placement {
            cutter.wait_for_pool_sessions(admin).await?;
            cutter.cut_pool_sessions(admin).await?;
            admin
                .execute(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    database.quoted()
                )))
                .await?;
            return Ok(());
        }
        let mut tx = admin.begin().await?;
        cutter.hold_handle_lock(&mut tx, admin).await?;
        match &record.placement {
            Placement::Schema { schema, .. } => drop_schema(&mut tx, schema).await?,
            _ => delete_rows(&mut tx, record.id, &self.inner.tenant_columns()).await?,
        }
        // Requests queued for the handle lock meanwhile would go ahead
        // as soon as it is released: end them first.
        cutter.cut_lock_sessions(&mut tx, false).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Drops a schema tenant's schema (`CASCADE`) and role, in the
/// transaction open on `tx`.
pub(super) async fn drop_schema(
    tx: &mut PgConnection,
    schema: &impl SqlName,
) -> Result<(), TenancyError> {
    let s = schema.quoted();
    tx.execute(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {s} CASCADE")))
        .await?;
    let role_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(schema.as_str())
            .fetch_one(&mut *tx)
            .await?;
    if role_exists {
        tx.execute(AssertSqlSafe(format!("DROP OWNED BY {s}")))
            .await?;
        tx.execute(AssertSqlSafe(format!("DROP ROLE {s}"))).await?;
    }
    Ok(())
}

/// Deletes `tenant`'s rows from every table of the search-path schemas
/// (tenant schemas excluded) that has one of `columns`, in the transaction
/// open on `tx`. Tables are found in the catalog of the database, so a
/// table added later is covered.
async fn delete_rows(
    tx: &mut PgConnection,
    tenant: TenantId,
    columns: &[String],
) -> Result<(), TenancyError> {
    // Owners are subject to forced RLS too: act as the tenant.
    sqlx::query("SELECT set_config($1, $2, true)")
        .bind(TENANT_SETTING)
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await?;
    // The same discovery export uses: search-path schemas, tenant schemas
    // excluded, tables that carry a tenant column.
    let tables: Vec<(String, String)> = super::transfer::list_tables(&mut *tx, None, columns)
        .await?
        .into_iter()
        .filter_map(|(_, qualified, column)| {
            column.map(|c| (qualified, super::transfer::quote(&c)))
        })
        .collect();
    let mut pending = tables;
    for _ in 0..DELETE_PASSES {
        let mut blocked = Vec::new();
        for (table, column) in pending {
            // Both names come from PostgreSQL's catalog, quoted by it.
            let sql = format!("DELETE FROM {table} WHERE {column} = $1");
            tx.execute("SAVEPOINT saas_delete").await?;
            match sqlx::query(AssertSqlSafe(sql))
                .bind(tenant)
                .execute(&mut *tx)
                .await
            {
                Ok(_) => {
                    tx.execute("RELEASE SAVEPOINT saas_delete").await?;
                }
                Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                    tx.execute("ROLLBACK TO SAVEPOINT saas_delete").await?;
                    blocked.push((table, column));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if blocked.is_empty() {
            return Ok(());
        }
        pending = blocked;
    }
    Err(TenancyError::InvalidInput(format!(
        "rows of tenant {tenant} are still referenced after {DELETE_PASSES} passes; \
         check foreign keys that point from other tenants' rows"
    )))
}

/// A deletion's fence in this process: while it stands, the tenant's
/// record is never served from the cache (nor cached), and requests that
/// read it before it was raised check it again. Lowered on drop — also
/// when the deletion fails or its future is dropped.
struct Fence<'a> {
    tenancy: &'a PgTenancy,
    tenant: TenantId,
}

impl<'a> Fence<'a> {
    fn raise(tenancy: &'a PgTenancy, tenant: TenantId) -> Self {
        tenancy.inner.backend.records.fence(tenant);
        tenancy
            .inner
            .backend
            .fences
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self { tenancy, tenant }
    }

    /// Makes every request that read the fence count until now check the
    /// tenant's record again before it gets a handle.
    fn bump(&self) {
        self.tenancy
            .inner
            .backend
            .fences
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Drop for Fence<'_> {
    fn drop(&mut self) {
        self.tenancy.inner.backend.records.unfence(self.tenant);
    }
}
