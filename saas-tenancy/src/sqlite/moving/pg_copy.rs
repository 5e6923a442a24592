//! Streaming a SQLite tenant's tables into a PostgreSQL target (a
//! schema, a tenant database, or the shared tables of row tenants): each
//! table's rows sent as `COPY … FROM STDIN` text in bounded chunks, the
//! counts compared, the owned sequences advanced. On a row target every
//! statement carries the tenant filter, so other tenants' rows are never
//! read, deleted or counted.

use std::time::Duration;

use futures_util::TryStreamExt;
use saas_core::TenantId;
use sqlx::{AssertSqlSafe, Executor, PgConnection, Row, SqliteConnection, TypeInfo, ValueRef};

use crate::error::TenancyError;
use crate::postgres::IncomingTable;
use crate::sqlite::transfer::{FileTable, quote};

/// Bytes of `COPY` data buffered before they are sent.
const CHUNK_BYTES: usize = 256 * 1024;

/// A target table's columns, in order: (name, type name).
pub(super) async fn pg_columns(
    dst: &mut PgConnection,
    table: &IncomingTable,
) -> Result<Vec<(String, String)>, TenancyError> {
    Ok(sqlx::query_as(
        "SELECT a.attname::text, t.typname::text \
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
         WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 \
           AND NOT a.attisdropped AND a.attgenerated = '' \
         ORDER BY a.attnum",
    )
    .bind(&table.qualified)
    .fetch_all(&mut *dst)
    .await?)
}

fn pg_quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One SQLite table and the PostgreSQL table it goes to.
pub(super) struct TableCopy<'a> {
    /// The target table.
    pub(super) target: &'a IncomingTable,
    /// The target table's columns (name, type name).
    pub(super) columns: &'a [(String, String)],
    pub(super) table: &'a FileTable,
}

/// Copies one table's rows of the tenant, returns how many, after
/// checking the target holds exactly that many.
pub(super) async fn copy_table(
    src: &mut SqliteConnection,
    dst: &mut PgConnection,
    job: &TableCopy<'_>,
    tenant: TenantId,
    tenant_columns: &[String],
) -> Result<u64, TenancyError> {
    let TableCopy {
        target,
        columns,
        table,
    } = *job;
    let qualified = &target.qualified;
    for (column, _) in &table.columns {
        let carried = columns.iter().any(|(c, _)| c == column);
        if !carried && table.tenant_column.as_deref() != Some(column.as_str()) {
            return Err(TenancyError::InvalidInput(format!(
                "the table {qualified} has no column {column} that the SQLite table {} has: \
                 migrate both sides to the same version; nothing was moved",
                table.name
            )));
        }
    }
    // Target columns fed: those the source has, plus a tenant column the
    // source lacks (filled with the tenant). A shared table's tenant
    // column always gets the tenant, whatever the source holds there:
    // the rows land in the tenant's share and nobody else's.
    let mut fed: Vec<(&str, &str, Option<usize>)> = Vec::new();
    for (column, kind) in columns {
        if target.tenant_column.as_deref() == Some(column.as_str()) {
            fed.push((column, kind, None));
        } else if let Some(i) = table.columns.iter().position(|(c, _)| c == column) {
            fed.push((column, kind, Some(i)));
        } else if tenant_columns.iter().any(|c| c == column) {
            fed.push((column, kind, None));
        }
    }
    // A repeat after a crash starts clean: the tenant's rows only (all
    // rows of a schema or database target, which are the tenant's).
    dst.execute(AssertSqlSafe(format!(
        "DELETE FROM {qualified}{}",
        target.filter
    )))
    .await?;
    let list: Vec<String> = fed.iter().map(|(c, _, _)| pg_quote(c)).collect();
    let select: Vec<String> = fed
        .iter()
        .filter_map(|(_, _, i)| i.map(|i| quote(&table.columns[i].0)))
        .collect();
    let filter = match &table.tenant_column {
        Some(c) => format!(
            " WHERE {} = {}",
            quote(c),
            crate::sqlite::guard::tenant_literal(tenant)
        ),
        None => String::new(),
    };
    let read = if select.is_empty() {
        format!("SELECT NULL FROM {}{filter}", quote(&table.name))
    } else {
        format!(
            "SELECT {} FROM {}{filter}",
            select.join(", "),
            quote(&table.name)
        )
    };
    let tenant_text = tenant.as_uuid().hyphenated().to_string();
    let mut sink = dst
        .copy_in_raw(&format!(
            "COPY {qualified} ({}) FROM STDIN",
            list.join(", ")
        ))
        .await?;
    let mut buffer = Vec::with_capacity(CHUNK_BYTES + 4096);
    let mut sent = 0u64;
    let streamed = async {
        let mut rows = sqlx::query(AssertSqlSafe(read)).fetch(&mut *src);
        while let Some(row) = rows.try_next().await? {
            let mut at = 0;
            for (n, (_, kind, index)) in fed.iter().enumerate() {
                if n > 0 {
                    buffer.push(b'\t');
                }
                match index {
                    None => buffer.extend_from_slice(tenant_text.as_bytes()),
                    Some(_) => {
                        encode(&row, at, kind, &mut buffer)?;
                        at += 1;
                    }
                }
            }
            buffer.push(b'\n');
            sent += 1;
            if buffer.len() >= CHUNK_BYTES {
                sink.send(std::mem::take(&mut buffer)).await?;
            }
        }
        Ok::<(), TenancyError>(())
    }
    .await;
    if let Err(e) = streamed {
        let _ = sink.abort(e.to_string()).await;
        return Err(e);
    }
    if !buffer.is_empty() {
        sink.send(buffer).await?;
    }
    let copied = sink.finish().await?;
    let held: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {qualified}{}",
        target.filter
    )))
    .fetch_one(&mut *dst)
    .await?;
    if copied != sent || u64::try_from(held).unwrap_or(0) != sent {
        return Err(TenancyError::Corrupt(format!(
            "table {}: {sent} rows read from SQLite, {copied} copied, {held} in \
             PostgreSQL; the move stopped before its cut-over (abort_move_to_postgres leaves \
             the source serving)",
            target.name
        )));
    }
    Ok(sent)
}

/// Writes SQLite value `i` of `row` as `COPY` text for a column of type
/// `kind`.
fn encode(
    row: &sqlx::sqlite::SqliteRow,
    i: usize,
    kind: &str,
    out: &mut Vec<u8>,
) -> Result<(), TenancyError> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        out.extend_from_slice(b"\\N");
        return Ok(());
    }
    let storage = raw.type_info().name().to_owned();
    match storage.as_str() {
        "INTEGER" => {
            out.extend_from_slice(row.try_get_unchecked::<i64, _>(i)?.to_string().as_bytes())
        }
        "REAL" => {
            let real = row.try_get_unchecked::<f64, _>(i)?;
            let text = if real.is_nan() {
                "NaN".to_owned()
            } else if real.is_infinite() {
                if real > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
            } else {
                real.to_string()
            };
            out.extend_from_slice(text.as_bytes());
        }
        "BLOB" => {
            let bytes = row.try_get_unchecked::<Vec<u8>, _>(i)?;
            if kind == "uuid" {
                let id = uuid::Uuid::from_slice(&bytes).map_err(|_| {
                    TenancyError::InvalidInput(format!(
                        "a {}-byte blob cannot go into a uuid column",
                        bytes.len()
                    ))
                })?;
                out.extend_from_slice(id.hyphenated().to_string().as_bytes());
            } else {
                // bytea hex, its backslash escaped for COPY text.
                out.extend_from_slice(b"\\\\x");
                for b in bytes {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
            }
        }
        _ => {
            let text = row.try_get_unchecked::<String, _>(i)?;
            for c in text.bytes() {
                match c {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    c => out.push(c),
                }
            }
        }
    }
    Ok(())
}

/// Advances every sequence owned by a column of `tables` past the
/// tenant's largest key there, never backwards: on a row target the
/// sequence also serves other tenants, whose inserts are held off
/// (`SHARE ROW EXCLUSIVE` on the table, waiting at most `lock_wait` for
/// their open transactions) while it is read and set, so no value they
/// drew is handed out again. The lock lasts until the copy's transaction
/// commits, right after.
pub(super) async fn advance_sequences(
    dst: &mut PgConnection,
    tables: &[IncomingTable],
    lock_wait: Duration,
) -> Result<(), TenancyError> {
    for table in tables {
        let owned: Vec<(String, String)> = sqlx::query_as(
            "SELECT a.attname::text, pg_get_serial_sequence($1, a.attname) \
             FROM pg_attribute a WHERE a.attrelid = $1::text::regclass \
               AND a.attnum > 0 AND NOT a.attisdropped \
               AND pg_get_serial_sequence($1, a.attname) IS NOT NULL",
        )
        .bind(&table.qualified)
        .fetch_all(&mut *dst)
        .await?;
        if owned.is_empty() {
            continue;
        }
        if table.tenant_column.is_some() {
            sqlx::query("SELECT set_config('lock_timeout', $1, true)")
                .bind(format!("{}ms", lock_wait.as_millis().max(1)))
                .execute(&mut *dst)
                .await?;
            dst.execute(AssertSqlSafe(format!(
                "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
                table.qualified
            )))
            .await?;
        }
        for (column, sequence) in owned {
            // The sequence's name comes from pg_get_serial_sequence,
            // quoted by PostgreSQL. `>=`: a sequence never drawn from
            // (`is_called` false) would hand out `last_value` itself.
            let sql = format!(
                "SELECT setval($1::regclass, m) FROM (SELECT max({})::bigint AS m FROM {}{}) s \
                 WHERE m IS NOT NULL AND m >= (SELECT last_value FROM {sequence})",
                pg_quote(&column),
                table.qualified,
                table.filter
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(&sequence)
                .execute(&mut *dst)
                .await?;
        }
    }
    Ok(())
}
