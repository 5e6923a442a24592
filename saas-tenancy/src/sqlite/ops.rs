//! Day-two operations on SQLite: tenant files and tenant deletion (fleet
//! migrations are in `migrate.rs`).

use std::path::PathBuf;

use saas_core::{TenantId, TenantStatus};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, Connection, Executor, Row, SqliteConnection};

use super::SqliteTenancy;
use super::guard::tenant_literal;
use crate::error::TenancyError;
use crate::hooks::LifecycleEvent;
use crate::placement::Placement;
use crate::record::TenantRecord;

impl SqliteTenancy {
    /// The file of a database tenant.
    pub(super) fn tenant_file(
        &self,
        record: &TenantRecord,
    ) -> Result<Option<PathBuf>, TenancyError> {
        crate::catalog::check_placement(record)?;
        match &record.placement {
            Placement::Database { cluster, database } => Ok(Some(
                self.cluster(cluster)?
                    .tenant_dir
                    .join(format!("{database}.sqlite")),
            )),
            _ => Ok(None),
        }
    }

    /// Deletes a tenant's data, marks it deleted and calls the hooks with
    /// [`LifecycleEvent::Deleted`]: for row tenants the rows of every table
    /// of the shared file that has a declared tenant column (found in the
    /// file, not a hand-kept list), in one `BEGIN IMMEDIATE` transaction;
    /// for database tenants the pool is closed and the file (with its WAL)
    /// removed. Idempotent and safe to retry after a crash (the tenant
    /// stays `deleting` until the data is gone), and serialised per tenant
    /// with the other operations.
    ///
    /// **Deletion is final: the tenant is fenced first.** It is marked
    /// `deleting`, so new handles (`acquire`, `begin`, `begin_immediate`)
    /// are refused with [`TenancyError::TenantNotServable`] from then on.
    /// Handles already open in this process keep working: the deletion
    /// waits for them to be committed, rolled back or dropped, up to the
    /// [`deletion_grace`](super::SqliteTenancyBuilder::deletion_grace)
    /// period (default 5 s), and what they wrote is deleted with the
    /// tenant. A handle cannot be cut, so if some are still open after the
    /// grace the delete fails with [`TenancyError::TenantInUse`]: nothing
    /// was deleted, the tenant stays `deleting` (refused to new handles),
    /// and calling `delete_tenant` again once they have ended completes it.
    ///
    /// Not covered: handles held by *another process* sharing the files
    /// are not waited for (the fence is in-process; that process refuses
    /// new handles at once, since SQLite handles read the catalog each
    /// time, but one it already holds can write into a shared file after
    /// the rows were deleted).
    #[tracing::instrument(name = "tenancy.delete", skip_all, fields(tenant_id = %id, backend = "sqlite"))]
    pub async fn delete_tenant(&self, id: TenantId) -> Result<TenantRecord, TenancyError> {
        let (_guard, record) = self.lock_tenant(id).await?;
        if record.status == TenantStatus::Deleted {
            return Ok(record);
        }
        let record = if record.status == TenantStatus::Deleting {
            record
        } else {
            self.inner
                .catalog
                .set_status(id, TenantStatus::Deleting)
                .await?
        };
        // Held until the tenant is marked deleted: no handle in between.
        let Some(_closed) = self
            .inner
            .backend
            .gates
            .close(id, self.inner.deletion_grace)
            .await
        else {
            return Err(TenancyError::TenantInUse {
                tenant: id,
                detail: format!(
                    "scoped handles opened before the deletion were still open after the \
                     {:?} grace period; commit, roll back or drop them (or raise \
                     deletion_grace)",
                    self.inner.deletion_grace
                ),
            });
        };
        match &record.placement {
            Placement::Shared { cluster } => {
                let options = SqliteConnectOptions::new()
                    .filename(&self.cluster(cluster)?.shared_file)
                    .create_if_missing(false)
                    .busy_timeout(std::time::Duration::from_secs(5));
                let mut conn = SqliteConnection::connect_with(&options).await?;
                self.delete_rows(&mut conn, id).await?;
                conn.close().await?;
            }
            Placement::Database { .. } => {
                self.inner.registry.close(id).await;
                if let Some(file) = self.tenant_file(&record)? {
                    for suffix in ["", "-wal", "-shm"] {
                        let path = PathBuf::from(format!("{}{suffix}", file.display()));
                        match std::fs::remove_file(&path) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => {
                                return Err(TenancyError::InvalidInput(format!(
                                    "cannot remove {}: {e}",
                                    path.display()
                                )));
                            }
                        }
                    }
                }
            }
            Placement::Schema { .. } => {}
        }
        let record = self
            .inner
            .catalog
            .set_status(id, TenantStatus::Deleted)
            .await?;
        self.inner
            .hooks
            .on_event(&LifecycleEvent::Deleted(record.clone()))
            .await?;
        Ok(record)
    }

    async fn delete_rows(
        &self,
        conn: &mut SqliteConnection,
        id: TenantId,
    ) -> Result<(), TenancyError> {
        let columns = self.inner.tenant_columns();
        conn.execute("BEGIN IMMEDIATE").await?;
        let result = async {
            let tables = sqlx::query(
                "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
            )
            .fetch_all(&mut *conn)
            .await?;
            let me = tenant_literal(id);
            let mut pending = Vec::new();
            for row in tables {
                let table: String = row.try_get(0)?;
                let column: String = row.try_get(1)?;
                if !columns.contains(&column) {
                    continue;
                }
                // Names from the file's own schema, quoted.
                pending.push(format!(
                    "DELETE FROM \"{}\" WHERE \"{}\" = {me}",
                    table.replace('"', "\"\""),
                    column.replace('"', "\"\"")
                ));
            }
            delete_in_passes(&mut *conn, pending, id).await
        }
        .await;
        let result = match result {
            Ok(()) => conn.execute("COMMIT").await.map(drop).map_err(Into::into),
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Also after a failed COMMIT (a deferred foreign key), which
            // leaves the transaction open.
            let _ = conn.execute("ROLLBACK").await;
        }
        result
    }
}

/// Runs the deletes in passes: one whose rows are still referenced by
/// another tenant table (a foreign key, checked at the end of each
/// statement) is rolled back to its savepoint and retried after the
/// others, so tables are emptied children first whatever order they were
/// created in. A pass that deletes nothing means the rows are referenced
/// from outside the tenant's data: an error, and the caller rolls back.
async fn delete_in_passes(
    conn: &mut SqliteConnection,
    mut pending: Vec<String>,
    id: TenantId,
) -> Result<(), TenancyError> {
    while !pending.is_empty() {
        let mut blocked = Vec::new();
        for sql in &pending {
            conn.execute("SAVEPOINT saas_delete").await?;
            match conn.execute(AssertSqlSafe(sql.clone())).await {
                Ok(_) => {
                    conn.execute("RELEASE SAVEPOINT saas_delete").await?;
                }
                Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                    conn.execute("ROLLBACK TO SAVEPOINT saas_delete").await?;
                    conn.execute("RELEASE SAVEPOINT saas_delete").await?;
                    blocked.push(sql.clone());
                }
                Err(e) => return Err(e.into()),
            }
        }
        if blocked.len() == pending.len() {
            return Err(TenancyError::InvalidInput(format!(
                "tenant {id}'s rows are still referenced by rows a foreign key protects \
                 (another tenant's, or a table without a tenant column); nothing was \
                 deleted — remove those references, then delete again"
            )));
        }
        pending = blocked;
    }
    Ok(())
}

/// The highest applied migration of a tenant file (0 before the first).
pub(super) async fn file_version(conn: &mut SqliteConnection) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>("SELECT max(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(conn)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}
