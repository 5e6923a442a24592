//! Status changes and deletion of PostgreSQL tenants (the data is really
//! gone, for every placement), each under the tenant's lock.

use saas_core::{TenantId, TenantStatus};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use super::{PgTenancy, TENANT_SETTING};
use crate::error::TenancyError;
use crate::hooks::LifecycleEvent;
use crate::placement::Placement;
use crate::record::TenantRecord;

/// How many passes a row delete makes when foreign keys between tenant
/// tables require an order (each pass deletes what it can).
const DELETE_PASSES: usize = 8;

impl PgTenancy {
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
    /// a [`TenantTx`](super::TenantTx) or [`TenantConn`](super::TenantConn)
    /// already held keeps working until it is committed, rolled back or
    /// dropped — requests in flight finish. The tenant's data is kept and
    /// served again after resuming.
    pub async fn set_status(
        &self,
        id: TenantId,
        to: TenantStatus,
    ) -> Result<TenantRecord, TenancyError> {
        let other = crate::catalog::suspend_or_resume_from(to)?;
        let (lock, before) = self.lock_tenant(id).await?;
        let result = if before.status == to {
            Ok(before.clone())
        } else if before.status == other {
            self.inner.catalog.set_status(id, to).await
        } else {
            Err(TenancyError::InvalidTransition {
                tenant: id,
                from: before.status,
                to,
            })
        };
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
    /// - schema placements: the schema (`CASCADE`) and its role are dropped;
    /// - database placements: the tenant pool is closed and the database
    ///   dropped (`WITH (FORCE)`).
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
        let deleting = if before.status == TenantStatus::Deleting {
            before
        } else {
            let deleting = self
                .inner
                .catalog
                .set_status(id, TenantStatus::Deleting)
                .await;
            // Scoped access here is refused from now on.
            self.forget_record(id);
            let deleting = deleting?;
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
            .await;
        self.forget_record(id);
        let deleted = deleted?;
        events.push(LifecycleEvent::Deleted(deleted.clone()));
        Ok(deleted)
    }

    async fn delete_data(&self, record: &TenantRecord) -> Result<(), TenancyError> {
        let cluster = self.cluster(record.placement.cluster())?;
        match &record.placement {
            Placement::Shared { .. } => {
                let mut conn = cluster.admin.acquire().await?;
                delete_rows(&mut conn, record.id, &self.tenant_columns()).await
            }
            Placement::Schema { schema, .. } => {
                let s = schema.quoted();
                let mut tx = cluster.admin.begin().await?;
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
                tx.commit().await?;
                Ok(())
            }
            Placement::Database { database, .. } => {
                self.inner.registry.close(record.id).await;
                cluster
                    .admin
                    .execute(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        database.quoted()
                    )))
                    .await?;
                Ok(())
            }
        }
    }

    pub(super) fn tenant_columns(&self) -> Vec<String> {
        let mut columns: Vec<String> = self
            .inner
            .tables
            .iter()
            .map(|t| t.tenant_column.as_str().to_owned())
            .collect();
        if columns.is_empty() {
            columns.push("tenant_id".to_owned());
        }
        columns.sort();
        columns.dedup();
        columns
    }
}

/// Deletes `tenant`'s rows from every table of the search-path schemas
/// (tenant schemas excluded) that has one of `columns`, in one transaction. Tables are found
/// in the catalog of the database, so a table added later is covered.
async fn delete_rows(
    conn: &mut PgConnection,
    tenant: TenantId,
    columns: &[String],
) -> Result<(), TenancyError> {
    let mut tx = conn.begin().await?;
    // Owners are subject to forced RLS too: act as the tenant.
    sqlx::query("SELECT set_config($1, $2, true)")
        .bind(TENANT_SETTING)
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await?;
    // The same discovery export uses: search-path schemas, tenant schemas
    // excluded, tables that carry a tenant column.
    let tables: Vec<(String, String)> = super::transfer::list_tables(&mut tx, None, columns)
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
            tx.commit().await?;
            return Ok(());
        }
        pending = blocked;
    }
    Err(TenancyError::InvalidInput(format!(
        "rows of tenant {tenant} are still referenced after {DELETE_PASSES} passes; \
         check foreign keys that point from other tenants' rows"
    )))
}
