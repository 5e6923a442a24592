//! The copy under the fence, SQLite to SQLite: the target file attached
//! to a connection on the source, then per table one
//! `INSERT INTO target … SELECT … FROM source` — SQLite streams it page by
//! page, so memory does not grow with the tenant — and the row counts of
//! both sides compared. Idempotent: the tenant's rows already in the
//! target (an earlier, interrupted copy) are removed first.

use std::collections::BTreeMap;

use saas_core::TenantId;
use sqlx::{AssertSqlSafe, Executor, SqliteConnection};

use super::super::guard::tenant_literal;
use super::super::transfer::{FileTable, quote};
use super::lockout::{in_tx, is_library_table};
use crate::error::TenancyError;

/// The schema name the target is attached as.
const TARGET: &str = "saas_move_target";

/// The tables of schema `schema` of `conn` (`main` or the attached
/// target), as `transfer::file_tables` reads them, without the library's.
pub(super) async fn schema_tables(
    conn: &mut SqliteConnection,
    schema: &str,
    tenant_columns: &[String],
) -> Result<Vec<FileTable>, TenancyError> {
    // `schema` is one of our two constants, never input.
    let rows: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT m.name, p.name FROM {schema}.sqlite_master m, pragma_table_info(m.name, '{schema}') p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
           AND m.name <> '_sqlx_migrations' ORDER BY m.name, p.cid"
    )))
    .fetch_all(&mut *conn)
    .await?;
    let mut tables: Vec<FileTable> = Vec::new();
    for (table, column) in rows {
        if is_library_table(&table) {
            continue;
        }
        if tables.last().is_none_or(|t| t.name != table) {
            tables.push(FileTable {
                name: table,
                columns: Vec::new(),
                tenant_column: None,
            });
        }
        if let Some(t) = tables.last_mut() {
            if t.tenant_column.is_none() && tenant_columns.contains(&column) {
                t.tenant_column = Some(column.clone());
            }
            t.columns.push((column, String::new()));
        }
    }
    Ok(tables)
}

/// One table to copy: the source table, the target table.
pub(super) struct Pair<'a> {
    pub(super) source: &'a FileTable,
    pub(super) target: &'a FileTable,
    /// The name reported (the one application SQL uses).
    pub(super) logical: String,
}

/// Attaches the file at `target` to `conn`.
pub(super) async fn attach(
    conn: &mut SqliteConnection,
    target: &std::path::Path,
) -> Result<(), TenancyError> {
    let path = target.to_str().ok_or_else(|| {
        TenancyError::InvalidInput(format!("the path {} is not UTF-8", target.display()))
    })?;
    sqlx::query(AssertSqlSafe(format!("ATTACH DATABASE ?1 AS {TARGET}")))
        .bind(path)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The attached target's tables.
pub(super) async fn target_tables(
    conn: &mut SqliteConnection,
    tenant_columns: &[String],
) -> Result<Vec<FileTable>, TenancyError> {
    schema_tables(conn, TARGET, tenant_columns).await
}

/// Copies `pairs` from the source (`main`, read with the tenant filter
/// when `shared_source`) to the attached target (the tenant column set to
/// the tenant where the source has none), after removing the tenant's
/// rows from the target; then compares the counts. Returns the rows per
/// table.
pub(super) async fn copy(
    conn: &mut SqliteConnection,
    pairs: &[Pair<'_>],
    tenant: TenantId,
) -> Result<BTreeMap<String, u64>, TenancyError> {
    let me = tenant_literal(tenant);
    let mut rows = BTreeMap::new();
    // Deferred: the source is read from a snapshot (the tenant is locked
    // out there), so its other tenants keep writing; the target's write
    // lock is taken by the first statement, a write.
    in_tx(conn, "BEGIN", async |conn: &mut SqliteConnection| {
        conn.execute("PRAGMA defer_foreign_keys = ON").await?;
        for pair in pairs {
            let target = format!("{TARGET}.{}", quote(&pair.target.name));
            let source = format!("main.{}", quote(&pair.source.name));
            let source_filter = match &pair.source.tenant_column {
                Some(c) => format!(" WHERE {} = {me}", quote(c)),
                None => String::new(),
            };
            let target_filter = match &pair.target.tenant_column {
                Some(c) => format!(" WHERE {} = {me}", quote(c)),
                None => String::new(),
            };
            conn.execute(AssertSqlSafe(format!(
                "DELETE FROM {target}{target_filter}"
            )))
            .await?;
            let mut into = Vec::new();
            let mut from = Vec::new();
            for (column, _) in &pair.target.columns {
                let q = quote(column);
                if pair.source.columns.iter().any(|(c, _)| c == column) {
                    into.push(q.clone());
                    from.push(q);
                } else if pair.target.tenant_column.as_deref() == Some(column.as_str()) {
                    into.push(q);
                    from.push(me.clone());
                }
            }
            for (column, _) in &pair.source.columns {
                let carried = pair.target.columns.iter().any(|(c, _)| c == column);
                if !carried && pair.source.tenant_column.as_deref() != Some(column.as_str()) {
                    return Err(TenancyError::InvalidInput(format!(
                        "the target table {} has no column {column} that the source table {} \
                         has: migrate both sides to the same version; nothing was moved",
                        pair.target.name, pair.source.name
                    )));
                }
            }
            conn.execute(AssertSqlSafe(format!(
                "INSERT INTO {target} ({}) SELECT {} FROM {source}{source_filter}",
                into.join(", "),
                from.join(", ")
            )))
            .await?;
            let copied = count(
                conn,
                format!("SELECT count(*) FROM {target}{target_filter}"),
            )
            .await?;
            let held = count(
                conn,
                format!("SELECT count(*) FROM {source}{source_filter}"),
            )
            .await?;
            if copied != held {
                return Err(TenancyError::Corrupt(format!(
                    "table {}: {held} rows at the source but {copied} at the target after the \
                     copy; the move stopped before its cut-over (abort_move leaves the source \
                     serving)",
                    pair.logical
                )));
            }
            rows.insert(pair.logical.clone(), copied);
        }
        Ok(())
    })
    .await?;
    Ok(rows)
}

async fn count(conn: &mut SqliteConnection, sql: String) -> Result<u64, TenancyError> {
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(&mut *conn)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Removes the tenant's rows from the attached target's tables (an abort
/// of a move into a shared file).
pub(super) async fn clear_target(
    conn: &mut SqliteConnection,
    tables: &[FileTable],
    tenant: TenantId,
) -> Result<(), TenancyError> {
    let me = tenant_literal(tenant);
    in_tx(conn, "BEGIN", async |conn: &mut SqliteConnection| {
        conn.execute("PRAGMA defer_foreign_keys = ON").await?;
        for table in tables {
            if let Some(c) = &table.tenant_column {
                conn.execute(AssertSqlSafe(format!(
                    "DELETE FROM {TARGET}.{} WHERE {} = {me}",
                    quote(&table.name),
                    quote(c)
                )))
                .await?;
            }
        }
        Ok(())
    })
    .await
}
