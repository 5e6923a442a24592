//! Deleting tenants: the data is really gone, for every placement.

use saas_core::{TenantId, TenantStatus};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use super::{PgTenancy, TENANT_SETTING};
use crate::error::TenancyError;
use crate::placement::Placement;
use crate::record::TenantRecord;

/// How many passes a row delete makes when foreign keys between tenant
/// tables require an order (each pass deletes what it can).
const DELETE_PASSES: usize = 8;

impl PgTenancy {
    /// Deletes a tenant's data and marks it deleted.
    ///
    /// - row placements: every table of the cluster's shared schemas that
    ///   has a tenant column is found in the database (not a hand-kept
    ///   list) — the shared schemas being those on the admin connection's
    ///   `search_path` — and the tenant's rows are deleted in one
    ///   transaction;
    /// - schema placements: the schema (`CASCADE`) and its role are dropped;
    /// - database placements: the tenant pool is closed and the database
    ///   dropped (`WITH (FORCE)`).
    ///
    /// Idempotent and safe to retry after a crash (the tenant stays
    /// `deleting` until the data is gone), and serialised per tenant by an
    /// advisory lock, so two concurrent deletes cannot interleave.
    pub async fn delete_tenant(&self, id: TenantId) -> Result<TenantRecord, TenancyError> {
        let record = self
            .inner
            .catalog
            .get(id)
            .await?
            .ok_or_else(|| TenancyError::TenantNotFound(format!("with id {id}")))?;
        if record.status == TenantStatus::Deleted {
            return Ok(record);
        }
        let record = self.set_status(id, TenantStatus::Deleting).await?;
        let cluster = self.cluster(record.placement.cluster())?;
        // A connection of its own: the session lock dies with it, whatever
        // happens below.
        let mut lock = PgConnection::connect_with(&cluster.config.admin).await?;
        sqlx::query("SELECT pg_advisory_lock(hashtext('saas_tenancy.tenant.' || $1))")
            .bind(id.to_string())
            .execute(&mut lock)
            .await?;
        // A concurrent delete may have finished while this one waited for
        // the lock: then there is nothing left to do, and no hook to call
        // a second time.
        let current = match self.inner.catalog.get(id).await {
            Ok(current) => current,
            Err(e) => {
                let _ = lock.close().await;
                return Err(e);
            }
        };
        if let Some(done) = current.filter(|r| r.status == TenantStatus::Deleted) {
            let _ = lock.close().await;
            return Ok(done);
        }
        // Marked deleted before the lock is released, so a delete waiting
        // for it sees the work done.
        let result = match self.delete_data(&record).await {
            Ok(()) => {
                self.inner
                    .catalog
                    .set_status(id, TenantStatus::Deleted)
                    .await
            }
            Err(e) => Err(e),
        };
        let _ = lock.close().await;
        let record = result?;
        self.forget_record(id);
        self.inner
            .hooks
            .on_event(&crate::hooks::LifecycleEvent::Deleted(record.clone()))
            .await?;
        Ok(record)
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
