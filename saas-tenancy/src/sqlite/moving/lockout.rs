//! The durable lock-out of a moving tenant's source, seen by every
//! connection of every process at its next statement (a schema change or
//! a committed row — SQLite has no `NOTIFY`, and a connection opened
//! before the move keeps its file open even if it is renamed or deleted):
//!
//! - **shared file**: a row in `saas_tenant_fences` (a library table
//!   whose column is *not* a tenant column, so it is neither exported nor
//!   deleted with a tenant) and, on every table with a tenant column,
//!   `BEFORE INSERT/UPDATE/DELETE` triggers that refuse the rows of a
//!   fenced tenant. They are real triggers of the file, so they hold for
//!   SQL through the tenant views and for SQL naming the physical table.
//!   The fence row stays after the cut-over (the source rows are purged
//!   with `purging` set inside the purge's own transaction), so a stale
//!   connection can never write there again; moving the tenant back
//!   removes it.
//! - **tenant file**: unconditional triggers on each of its tables — the
//!   file is the tenant's alone. A purged source file is deleted; one
//!   kept stays read-only.
//!
//! Both are committed in one `BEGIN IMMEDIATE` transaction, which waits
//! (busy timeout) for a transaction holding the file's write lock to end:
//! everything committed before the lock-out is copied, nothing after it
//! is accepted. A deferred transaction that read before it cannot upgrade
//! its stale snapshot and fails at its first write.

use sqlx::{AssertSqlSafe, Executor, SqliteConnection};

use super::super::guard::tenant_literal;
use super::super::transfer::{FileTable, quote};
use crate::error::TenancyError;
use saas_core::TenantId;

/// The fence table of a shared file.
pub(super) const FENCES: &str = "CREATE TABLE IF NOT EXISTS saas_tenant_fences (\
    fenced_tenant BLOB PRIMARY KEY NOT NULL, move_id TEXT NOT NULL, \
    purging INTEGER NOT NULL DEFAULT 0)";

/// What a refused write says.
const REFUSED: &str = "saas-tenancy: the tenant has moved (or is moving) away from this \
    placement; nothing was written here — open a new scoped handle";

fn trigger(table: &str, op: &str) -> String {
    quote(&format!("saas_fence_{table}_{op}"))
}

/// Whether `table` is one of the library's own tables of a shared file.
pub(super) fn is_library_table(name: &str) -> bool {
    name == "saas_tenant_fences"
}

/// Locks the tenant out of the shared file `conn` is on: the fence
/// triggers on `tables` (created once, kept) and the tenant's fence row.
pub(super) async fn lock_out_shared(
    conn: &mut SqliteConnection,
    tables: &[FileTable],
    tenant: TenantId,
    move_id: uuid::Uuid,
) -> Result<(), TenancyError> {
    in_write_tx(conn, async |conn: &mut SqliteConnection| {
        conn.execute(FENCES).await?;
        let fenced = "SELECT fenced_tenant FROM saas_tenant_fences";
        for table in tables {
            let Some(column) = &table.tenant_column else {
                continue;
            };
            let (t, c) = (quote(&table.name), quote(column));
            let statements = [
                format!(
                    "CREATE TRIGGER IF NOT EXISTS {} BEFORE INSERT ON {t} \
                     WHEN NEW.{c} IN ({fenced}) BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END",
                    trigger(&table.name, "insert")
                ),
                format!(
                    "CREATE TRIGGER IF NOT EXISTS {} BEFORE UPDATE ON {t} \
                     WHEN OLD.{c} IN ({fenced}) OR NEW.{c} IN ({fenced}) \
                     BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END",
                    trigger(&table.name, "update")
                ),
                format!(
                    "CREATE TRIGGER IF NOT EXISTS {} BEFORE DELETE ON {t} \
                     WHEN OLD.{c} IN ({fenced} WHERE purging = 0) \
                     BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END",
                    trigger(&table.name, "delete")
                ),
            ];
            for statement in statements {
                conn.execute(AssertSqlSafe(statement)).await?;
            }
        }
        sqlx::query(
            "INSERT INTO saas_tenant_fences (fenced_tenant, move_id, purging) VALUES (?1, ?2, 0) \
             ON CONFLICT (fenced_tenant) DO UPDATE SET move_id = excluded.move_id, purging = 0",
        )
        .bind(tenant)
        .bind(move_id.to_string())
        .execute(&mut *conn)
        .await?;
        Ok(())
    })
    .await
}

/// Lifts the tenant's fence in a shared file (an abort, or the target
/// of a move back).
pub(super) async fn lift_shared(
    conn: &mut SqliteConnection,
    tenant: TenantId,
) -> Result<(), TenancyError> {
    conn.execute(FENCES).await?;
    sqlx::query("DELETE FROM saas_tenant_fences WHERE fenced_tenant = ?1")
        .bind(tenant)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Locks every table of the tenant file `conn` is on.
pub(super) async fn lock_out_file(
    conn: &mut SqliteConnection,
    tables: &[FileTable],
) -> Result<(), TenancyError> {
    in_write_tx(conn, async |conn: &mut SqliteConnection| {
        for table in tables {
            let t = quote(&table.name);
            for op in ["insert", "update", "delete"] {
                let statement = format!(
                    "CREATE TRIGGER IF NOT EXISTS {} BEFORE {} ON {t} \
                     BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END",
                    trigger(&table.name, op),
                    op.to_uppercase()
                );
                conn.execute(AssertSqlSafe(statement)).await?;
            }
        }
        Ok(())
    })
    .await
}

/// Whether the tenant file `conn` is on is locked out (a kept source).
pub(super) async fn file_locked_out(conn: &mut SqliteConnection) -> Result<bool, TenancyError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' \
         AND name LIKE 'saas\\_fence\\_%' ESCAPE '\\'",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(n > 0)
}

/// Lifts the lock-out of a tenant file (an abort).
pub(super) async fn lift_file(
    conn: &mut SqliteConnection,
    tables: &[FileTable],
) -> Result<(), TenancyError> {
    in_write_tx(conn, async |conn: &mut SqliteConnection| {
        for table in tables {
            for op in ["insert", "update", "delete"] {
                let statement = format!("DROP TRIGGER IF EXISTS {}", trigger(&table.name, op));
                conn.execute(AssertSqlSafe(statement)).await?;
            }
        }
        Ok(())
    })
    .await
}

/// Deletes the tenant's rows from a locked-out shared file: the fence row
/// is set `purging` for this transaction only, so no other connection
/// ever sees the tenant unfenced.
pub(super) async fn purge_shared(
    conn: &mut SqliteConnection,
    tables: &[FileTable],
    tenant: TenantId,
) -> Result<(), TenancyError> {
    let me = tenant_literal(tenant);
    in_write_tx(conn, async |conn: &mut SqliteConnection| {
        // Children and parents go in one transaction, in any order.
        conn.execute("PRAGMA defer_foreign_keys = ON").await?;
        conn.execute(AssertSqlSafe(format!(
            "UPDATE saas_tenant_fences SET purging = 1 WHERE fenced_tenant = {me}"
        )))
        .await?;
        for table in tables {
            if let Some(c) = &table.tenant_column {
                conn.execute(AssertSqlSafe(format!(
                    "DELETE FROM {} WHERE {} = {me}",
                    quote(&table.name),
                    quote(c)
                )))
                .await?;
            }
        }
        conn.execute(AssertSqlSafe(format!(
            "UPDATE saas_tenant_fences SET purging = 0 WHERE fenced_tenant = {me}"
        )))
        .await?;
        Ok(())
    })
    .await
}

/// Runs `work` in a `BEGIN IMMEDIATE` transaction (the file's write lock
/// from the start), rolled back on error.
pub(super) async fn in_write_tx<F>(conn: &mut SqliteConnection, work: F) -> Result<(), TenancyError>
where
    F: AsyncFnOnce(&mut SqliteConnection) -> Result<(), TenancyError>,
{
    in_tx(conn, "BEGIN IMMEDIATE", work).await
}

/// Runs `work` in a transaction begun with `begin` (one of our two
/// constants), rolled back on error.
pub(super) async fn in_tx<F>(
    conn: &mut SqliteConnection,
    begin: &'static str,
    work: F,
) -> Result<(), TenancyError>
where
    F: AsyncFnOnce(&mut SqliteConnection) -> Result<(), TenancyError>,
{
    conn.execute(begin).await?;
    let result = match work(&mut *conn).await {
        Ok(()) => conn.execute("COMMIT").await.map(drop).map_err(Into::into),
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = conn.execute("ROLLBACK").await;
    }
    result
}
