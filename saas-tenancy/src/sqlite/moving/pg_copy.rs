//! Streaming a SQLite tenant's tables into a PostgreSQL schema: the
//! schema's tables read from the catalog, each table's rows sent as
//! `COPY … FROM STDIN` text in bounded chunks, the counts compared, the
//! owned sequences advanced.

use std::collections::BTreeMap;

use futures_util::TryStreamExt;
use saas_core::TenantId;
use sqlx::{AssertSqlSafe, Executor, PgConnection, Row, SqliteConnection, TypeInfo, ValueRef};

use crate::error::TenancyError;
use crate::placement::TenantObjectName;
use crate::sqlite::transfer::{FileTable, quote};

/// Bytes of `COPY` data buffered before they are sent.
const CHUNK_BYTES: usize = 256 * 1024;

/// The schema's tables: name → columns (name, type name).
pub(super) async fn pg_tables(
    dst: &mut PgConnection,
    schema: &str,
) -> Result<BTreeMap<String, Vec<(String, String)>>, TenancyError> {
    let rows = sqlx::query(
        "SELECT c.relname::text, a.attname::text, t.typname::text \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid JOIN pg_type t ON t.oid = a.atttypid \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND a.attnum > 0 \
           AND NOT a.attisdropped AND a.attgenerated = '' AND c.relname <> '_sqlx_migrations' \
         ORDER BY c.relname, a.attnum",
    )
    .bind(schema)
    .fetch_all(&mut *dst)
    .await?;
    let mut tables: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for row in rows {
        tables
            .entry(row.try_get(0)?)
            .or_default()
            .push((row.try_get(1)?, row.try_get(2)?));
    }
    Ok(tables)
}

fn pg_quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One SQLite table and the PostgreSQL table it goes to.
pub(super) struct TableCopy<'a> {
    pub(super) schema: &'a TenantObjectName,
    /// The table's name in the schema.
    pub(super) logical: &'a str,
    /// The schema table's columns (name, type name).
    pub(super) target: &'a [(String, String)],
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
        schema,
        logical,
        target,
        table,
    } = *job;
    let qualified = format!("{}.{}", schema.quoted(), pg_quote(logical));
    for (column, _) in &table.columns {
        let carried = target.iter().any(|(c, _)| c == column);
        if !carried && table.tenant_column.as_deref() != Some(column.as_str()) {
            return Err(TenancyError::InvalidInput(format!(
                "the table {qualified} has no column {column} that the SQLite table {} has: \
                 migrate both sides to the same version; nothing was moved",
                table.name
            )));
        }
    }
    // Target columns fed: those the source has, plus a tenant column the
    // source lacks (filled with the tenant).
    let mut fed: Vec<(&str, &str, Option<usize>)> = Vec::new();
    for (column, kind) in target {
        if let Some(i) = table.columns.iter().position(|(c, _)| c == column) {
            fed.push((column, kind, Some(i)));
        } else if tenant_columns.iter().any(|c| c == column) {
            fed.push((column, kind, None));
        }
    }
    dst.execute(AssertSqlSafe(format!("DELETE FROM {qualified}")))
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
    let held: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {qualified}")))
        .fetch_one(&mut *dst)
        .await?;
    if copied != sent || u64::try_from(held).unwrap_or(0) != sent {
        return Err(TenancyError::Corrupt(format!(
            "table {logical}: {sent} rows read from SQLite, {copied} copied, {held} in \
             PostgreSQL; the move stopped before its cut-over (abort_move_to_postgres leaves \
             the source serving)"
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

/// Advances every sequence owned by a column of the schema's tables past
/// the column's maximum.
pub(super) async fn advance_sequences(
    dst: &mut PgConnection,
    schema: &str,
) -> Result<(), TenancyError> {
    let owned: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.relname::text, a.attname::text, \
                pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND a.attnum > 0 \
           AND NOT a.attisdropped \
           AND pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname) IS NOT NULL",
    )
    .bind(schema)
    .fetch_all(&mut *dst)
    .await?;
    for (table, column, sequence) in owned {
        let sql = format!(
            "SELECT setval($1::regclass, m) FROM (SELECT max({})::bigint AS m FROM {}.{}) s \
             WHERE m IS NOT NULL",
            pg_quote(&column),
            pg_quote(schema),
            pg_quote(&table)
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(sequence)
            .execute(&mut *dst)
            .await?;
    }
    Ok(())
}
