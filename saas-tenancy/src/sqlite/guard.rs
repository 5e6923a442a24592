//! Per-connection guards for SQLite tenant connections: `ATTACH` refused,
//! and shared tables shadowed by tenant-filtered views.

use saas_core::TenantId;
use sqlx::{AssertSqlSafe, Executor, Row, SqliteConnection};

use crate::error::TenancyError;
use crate::ident::SqlIdent;

/// Forbids `ATTACH` on this connection: `sqlite3_limit(db,
/// SQLITE_LIMIT_ATTACHED, 0)`. A tenant connection can then never open
/// another tenant's file, whatever SQL runs through it.
#[allow(unsafe_code)]
pub(super) async fn forbid_attach(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle();
    // SAFETY: `db` is the open sqlite3 handle of this connection, and the
    // lock held through `handle` keeps every other use of it out for the
    // duration of the call. sqlite3_limit only reads and writes the
    // connection's limit table; it cannot fail or free anything.
    unsafe {
        libsqlite3_sys::sqlite3_limit(db.as_ptr(), libsqlite3_sys::SQLITE_LIMIT_ATTACHED, 0);
    }
    Ok(())
}

/// The SQL literal of a tenant id as sqlx stores a `uuid` in SQLite (a
/// 16-byte blob): `X'<32 hex digits>'`, built from the id alone.
pub(super) fn tenant_literal(tenant: TenantId) -> String {
    format!("X'{}'", tenant.simple())
}

/// A declared table: the name SQL uses, the physical table, the tenant column.
pub(super) type ViewSpec = (SqlIdent, SqlIdent, SqlIdent);

/// Gives each shared table a temporary view of this tenant's rows under
/// the name application SQL uses, with `INSTEAD OF` triggers that keep
/// writes inside the tenant.
///
/// The rows live in the physical table (`notes_rows`); `notes` exists only
/// as this connection's view. Writes go through the triggers: a row
/// claiming another tenant is refused, a row without a tenant gets this
/// one. SQL naming the physical table bypasses the view — see the module
/// docs.
pub(super) async fn install_tenant_views(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    tables: &[ViewSpec],
) -> Result<(), TenancyError> {
    let me = tenant_literal(tenant);
    for (table, physical, tenant_column) in tables {
        let info = sqlx::query(AssertSqlSafe(format!(
            "SELECT name, pk FROM pragma_table_info('{}', 'main') ORDER BY cid",
            physical.as_str()
        )))
        .fetch_all(&mut *conn)
        .await?;
        let mut columns = Vec::new();
        let mut keys = Vec::new();
        for row in &info {
            let name: String = row.try_get(0)?;
            let pk: i64 = row.try_get(1)?;
            // Column names come from the database's own schema; quote them.
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            if pk > 0 {
                keys.push(quoted.clone());
            }
            columns.push((name, quoted));
        }
        let t = table.quoted();
        let p = physical.quoted();
        let c = tenant_column.quoted();
        if columns.is_empty() || !columns.iter().any(|(n, _)| n == tenant_column.as_str()) {
            return Err(TenancyError::InvalidInput(format!(
                "tenant table {physical} does not exist or lacks the column {tenant_column}"
            )));
        }
        if keys.is_empty() {
            return Err(TenancyError::InvalidInput(format!(
                "tenant table {physical} needs a primary key (including {tenant_column})"
            )));
        }
        let list = columns
            .iter()
            .map(|(_, q)| q.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let new_values = columns
            .iter()
            .map(|(n, q)| {
                if n == tenant_column.as_str() {
                    format!("COALESCE(NEW.{q}, {me})")
                } else {
                    format!("NEW.{q}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sets = columns
            .iter()
            .map(|(_, q)| format!("{q} = NEW.{q}"))
            .collect::<Vec<_>>()
            .join(", ");
        let same_row = keys
            .iter()
            .map(|k| format!("{k} = OLD.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let refuse = format!(
            "SELECT RAISE(ABORT, 'saas-tenancy: the row belongs to another tenant') \
             WHERE NEW.{c} IS NOT NULL AND NEW.{c} IS NOT {me};"
        );
        let statements = [
            format!("CREATE TEMP VIEW {t} AS SELECT * FROM {p} WHERE {c} = {me}"),
            format!(
                "CREATE TEMP TRIGGER \"saas_{0}_insert\" INSTEAD OF INSERT ON {t} BEGIN {refuse} \
                 INSERT INTO {p} ({list}) VALUES ({new_values}); END",
                table.as_str()
            ),
            format!(
                "CREATE TEMP TRIGGER \"saas_{0}_update\" INSTEAD OF UPDATE ON {t} BEGIN {refuse} \
                 UPDATE {p} SET {sets} WHERE {same_row} AND {c} = {me}; END",
                table.as_str()
            ),
            format!(
                "CREATE TEMP TRIGGER \"saas_{0}_delete\" INSTEAD OF DELETE ON {t} BEGIN \
                 DELETE FROM {p} WHERE {same_row} AND {c} = {me}; END",
                table.as_str()
            ),
        ];
        for statement in statements {
            conn.execute(AssertSqlSafe(statement)).await?;
        }
    }
    Ok(())
}
