//! Export and import of SQLite tenants as a [`TenantArchive`], the format
//! PostgreSQL tenants use too, so an archive moves between backends.
//!
//! Values map to JSON as PostgreSQL's `row_to_json` writes them: integers
//! and reals as numbers, text as strings, NULL as null. SQLite has no uuid
//! type — sqlx stores one as a 16-byte blob — so 16-byte blobs are written
//! as UUID strings and other blobs as PostgreSQL's `bytea` text form
//! (`\x` + hex); on import a UUID string or `\x` string going into a
//! column declared `BLOB` or `UUID` becomes a blob again.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures_util::TryStreamExt;

use saas_core::{TenantContext, TenantId, TenantStatus};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteRow};
use sqlx::{
    Arguments, AssertSqlSafe, Connection, Executor, Row, Sqlite, SqliteConnection, TypeInfo,
    ValueRef,
};

use super::SqliteTenancy;
use super::guard::tenant_literal;
use crate::archive::{
    ARCHIVE_FORMAT, ArchiveManifest, ArchiveSink, ChunkReader, DirChunks, DirSink, MemoryChunks,
    MemorySink, TenantArchive, verify_dir,
};
use crate::error::TenancyError;
use crate::placement::Placement;

/// Passes an import makes when foreign keys require an order.
const IMPORT_PASSES: usize = 8;

/// A table of a file: name, columns (name, declared type), tenant column.
pub(super) struct FileTable {
    pub(super) name: String,
    pub(super) columns: Vec<(String, String)>,
    pub(super) tenant_column: Option<String>,
}

/// Quotes a name read from a database's own schema.
pub(super) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl SqliteTenancy {
    /// Exports a tenant's data: for row tenants every table of the shared
    /// file with a tenant column (found in the file; a declared table is
    /// named as application SQL names it, `notes` rather than
    /// `notes_rows`), for database tenants every table of its file except
    /// the migration ledger. One read transaction, so the archive is a
    /// consistent snapshot; serialised with the tenant's other operations.
    pub async fn export_tenant(&self, id: TenantId) -> Result<TenantArchive, TenancyError> {
        let mut sink = MemorySink::new(self.manifest_for(id));
        self.export_into(id, &mut sink).await?;
        Ok(sink.into_archive())
    }

    /// Exports a tenant's data, as [`SqliteTenancy::export_tenant`] does,
    /// into the directory `dir` in the format
    /// [`TenantArchive::write_to_dir`] writes — streamed: each row goes to
    /// its table's file as it is read, so memory stays flat whatever the
    /// tenant's size. The manifest is written last: until this returns
    /// `Ok`, `dir` holds no readable archive. Returns the manifest.
    ///
    /// # Errors
    /// As [`SqliteTenancy::export_tenant`], or
    /// [`TenancyError::InvalidInput`] when a file cannot be written.
    pub async fn export_tenant_to_dir(
        &self,
        id: TenantId,
        dir: &Path,
    ) -> Result<ArchiveManifest, TenancyError> {
        let mut sink = DirSink::create(dir, self.manifest_for(id)).await?;
        self.export_into(id, &mut sink).await?;
        sink.finish().await
    }

    fn manifest_for(&self, id: TenantId) -> ArchiveManifest {
        ArchiveManifest {
            format: ARCHIVE_FORMAT,
            source_tenant: id,
            exported_at: self.inner.clock.now(),
            tables: Vec::new(),
        }
    }

    async fn export_into(
        &self,
        id: TenantId,
        sink: &mut dyn ArchiveSink,
    ) -> Result<(), TenancyError> {
        let (_guard, record) = self.lock_tenant(id).await?;
        if matches!(
            record.status,
            TenantStatus::Deleting | TenantStatus::Deleted
        ) {
            return Err(TenancyError::TenantNotServable {
                tenant: id,
                status: record.status,
            });
        }
        let (file, shared) = match &record.placement {
            Placement::Shared { cluster } => (self.cluster(cluster)?.shared_file.clone(), true),
            Placement::Database { .. } => match self.tenant_file(&record)? {
                Some(file) => (file, false),
                None => return Err(TenancyError::Unsupported("no tenant file".to_owned())),
            },
            Placement::Schema { .. } => {
                return Err(TenancyError::Unsupported(
                    "SQLite has no schemas".to_owned(),
                ));
            }
        };
        let options = SqliteConnectOptions::new()
            .filename(file)
            .create_if_missing(false)
            .read_only(true)
            .busy_timeout(Duration::from_secs(5));
        let mut conn = SqliteConnection::connect_with(&options).await?;
        conn.execute("BEGIN").await?;
        let exported = self.export_tables(&mut conn, id, shared, sink).await;
        let _ = conn.execute("COMMIT").await;
        conn.close().await?;
        exported
    }

    async fn export_tables(
        &self,
        conn: &mut SqliteConnection,
        id: TenantId,
        shared: bool,
        sink: &mut dyn ArchiveSink,
    ) -> Result<(), TenancyError> {
        let me = tenant_literal(id);
        for table in file_tables(conn, &self.inner.tenant_columns()).await? {
            if shared && table.tenant_column.is_none() {
                continue;
            }
            // The name application SQL uses for a declared shared table.
            let logical = self
                .inner
                .tables
                .iter()
                .find(|t| shared && t.physical().is_ok_and(|p| p.as_str() == table.name))
                .map_or_else(|| table.name.clone(), |t| t.table.as_str().to_owned());
            let sql = match &table.tenant_column {
                Some(c) => format!(
                    "SELECT * FROM {} WHERE {} = {me}",
                    quote(&table.name),
                    quote(c)
                ),
                None => format!("SELECT * FROM {}", quote(&table.name)),
            };
            sink.begin_table(&logical, table.tenant_column.clone())
                .await?;
            // Streamed: each row is handed on as it is read.
            let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *conn);
            while let Some(row) = rows.try_next().await? {
                let object = row_to_json(&row, &table)?;
                sink.row(&Value::Object(object).to_string()).await?;
            }
            drop(rows);
            sink.end_table().await?;
        }
        Ok(())
    }

    /// Imports an archive (from a SQLite or PostgreSQL tenant of any
    /// placement) into the empty tenant of `ctx`, through the tenant's own
    /// scoped transaction: a shared tenant's rows go through its views, so
    /// they cannot land in another tenant, and tables of the shared file
    /// without a tenant column are refused. The archive is verified
    /// completely first; every table and column it names must exist in the
    /// tenant (names are never taken from the archive alone); the tenant
    /// column is rewritten to the target tenant; any failure rolls the
    /// whole import back. Returns the number of rows imported.
    pub async fn import_tenant(
        &self,
        ctx: &TenantContext,
        archive: &TenantArchive,
    ) -> Result<u64, TenancyError> {
        archive.verify()?;
        let mut rows = MemoryChunks::new(archive);
        self.import_chunks(ctx, &archive.manifest, &mut rows).await
    }

    /// Imports the archive in `dir` (written by an `export_tenant_to_dir`
    /// of either backend or by [`TenantArchive::write_to_dir`]) as
    /// [`SqliteTenancy::import_tenant`] does — streamed: the files are
    /// verified a line at a time, then read and inserted a chunk at a
    /// time, so memory stays flat whatever the tenant's size. Still one
    /// transaction: any failure imports nothing. The directory must not
    /// change while the import runs.
    ///
    /// # Errors
    /// As [`SqliteTenancy::import_tenant`].
    pub async fn import_tenant_from_dir(
        &self,
        ctx: &TenantContext,
        dir: &Path,
    ) -> Result<u64, TenancyError> {
        let manifest = verify_dir(dir).await?;
        let mut rows = DirChunks::new(dir);
        self.import_chunks(ctx, &manifest, &mut rows).await
    }

    async fn import_chunks(
        &self,
        ctx: &TenantContext,
        manifest: &ArchiveManifest,
        reader: &mut dyn ChunkReader,
    ) -> Result<u64, TenancyError> {
        let (_guard, record) = self.lock_tenant(ctx.tenant_id()).await?;
        let shared = matches!(record.placement, Placement::Shared { .. });
        let mut tx = self.begin(ctx).await?;
        let target = ctx.tenant_id().as_uuid().as_bytes().to_vec();
        let mut pending = Vec::new();
        for table in &manifest.tables {
            let columns = target_columns(&mut tx, &table.table).await?;
            let mut tenant_columns = self.inner.tenant_columns();
            if shared {
                self.check_shared_target(&table.table, &columns, &tenant_columns)?;
            }
            tenant_columns.extend(table.tenant_column.clone());
            pending.push(ImportTable {
                name: table.table.clone(),
                columns,
                tenant_columns,
            });
        }
        let mut imported = 0u64;
        for _ in 0..IMPORT_PASSES {
            let mut blocked = Vec::new();
            for table in pending {
                tx.execute("SAVEPOINT saas_import").await?;
                match import_table(&mut tx, reader, &table, &target).await {
                    Ok(rows) => {
                        tx.execute("RELEASE SAVEPOINT saas_import").await?;
                        imported += rows;
                    }
                    Err(TenancyError::Database(sqlx::Error::Database(e)))
                        if e.is_foreign_key_violation() =>
                    {
                        tx.execute("ROLLBACK TO SAVEPOINT saas_import").await?;
                        tx.execute("RELEASE SAVEPOINT saas_import").await?;
                        blocked.push(table);
                    }
                    Err(e) => return Err(e),
                }
            }
            if blocked.is_empty() {
                tx.commit().await?;
                return Ok(imported);
            }
            pending = blocked;
        }
        Err(TenancyError::InvalidInput(
            "the archive's rows reference rows that are not in it".to_owned(),
        ))
    }
}

/// A table an import fills: its columns as the target sees them, and the
/// columns rewritten to the target tenant.
struct ImportTable {
    name: String,
    columns: Vec<(String, String)>,
    tenant_columns: Vec<String>,
}

/// Rows an import reads, checks and inserts at a time.
const IMPORT_CHUNK_ROWS: usize = 2_000;

/// Inserts `table`'s rows from `reader`, a chunk at a time; the first row
/// a column of which the target lacks fails the whole import.
async fn import_table(
    conn: &mut SqliteConnection,
    reader: &mut dyn ChunkReader,
    table: &ImportTable,
    target: &[u8],
) -> Result<u64, TenancyError> {
    reader.open(&table.name).await?;
    let mut imported = 0;
    while let Some(chunk) = reader.next_chunk(IMPORT_CHUNK_ROWS).await? {
        // Raw values: a number keeps its digits (see `number_cell`).
        let rows: Vec<BTreeMap<String, Box<RawValue>>> = serde_json::from_str(&chunk)
            .map_err(|e| TenancyError::InvalidInput(format!("archive row: {e}")))?;
        let mut inserts = Vec::with_capacity(rows.len());
        for row in rows {
            inserts.push(insert_for(
                &table.name,
                &table.columns,
                &table.tenant_columns,
                target,
                row,
            )?);
        }
        insert_all(conn, &inserts).await?;
        imported += inserts.len() as u64;
    }
    Ok(imported)
}

impl SqliteTenancy {
    /// In a shared file, an import writes only to tables that carry the
    /// tenant, and to declared tables only through their views: never to
    /// a table every tenant shares, nor around a view.
    fn check_shared_target(
        &self,
        table: &str,
        columns: &[(String, String)],
        tenant_columns: &[String],
    ) -> Result<(), TenancyError> {
        let physical = self
            .inner
            .tables
            .iter()
            .any(|t| t.physical().is_ok_and(|p| p.as_str() == table));
        let carries_tenant = columns
            .iter()
            .any(|(name, _)| tenant_columns.contains(name));
        if physical || !carries_tenant {
            return Err(TenancyError::InvalidInput(format!(
                "the archive's table {table} is not a tenant table of the shared file \
                 (or names a view's physical table); nothing was imported"
            )));
        }
        Ok(())
    }
}

/// Every table of the file behind `conn` (the migration ledger and
/// SQLite's own tables excluded), with its columns and the first of
/// `tenant_columns` it has.
pub(super) async fn file_tables(
    conn: &mut SqliteConnection,
    tenant_columns: &[String],
) -> Result<Vec<FileTable>, TenancyError> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT m.name, p.name, p.type FROM main.sqlite_master m, pragma_table_info(m.name, 'main') p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
           AND m.name <> '_sqlx_migrations' ORDER BY m.name, p.cid",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut tables: Vec<FileTable> = Vec::new();
    for (table, column, declared) in rows {
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
            t.columns.push((column, declared));
        }
    }
    Ok(tables)
}

fn row_to_json(row: &SqliteRow, table: &FileTable) -> Result<Map<String, Value>, TenancyError> {
    let mut object = Map::new();
    for (i, (name, _)) in table.columns.iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        let kind = if raw.is_null() {
            "NULL".to_owned()
        } else {
            raw.type_info().name().to_owned()
        };
        let value = match kind.as_str() {
            "NULL" => Value::Null,
            "INTEGER" => Value::from(row.try_get_unchecked::<i64, _>(i)?),
            "REAL" => {
                let real = row.try_get_unchecked::<f64, _>(i)?;
                serde_json::Number::from_f64(real)
                    .map(Value::Number)
                    .ok_or_else(|| {
                        TenancyError::InvalidInput(format!(
                            "{}.{name} holds {real}, which JSON cannot carry",
                            table.name
                        ))
                    })?
            }
            "TEXT" => Value::from(row.try_get_unchecked::<String, _>(i)?),
            _ => {
                let bytes = row.try_get_unchecked::<Vec<u8>, _>(i)?;
                match uuid::Uuid::from_slice(&bytes) {
                    Ok(uuid) => Value::from(uuid.to_string()),
                    Err(_) => Value::from(format!("\\x{}", hex(&bytes))),
                }
            }
        };
        object.insert(name.clone(), value);
    }
    Ok(object)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The columns (name, declared type) of `table` as the tenant's connection
/// sees it: a shared tenant's view, or a table of its file.
async fn target_columns(
    conn: &mut SqliteConnection,
    table: &str,
) -> Result<Vec<(String, String)>, TenancyError> {
    let columns: Vec<(String, String)> =
        sqlx::query_as("SELECT name, type FROM pragma_table_info(?) ORDER BY cid")
            .bind(table)
            .fetch_all(&mut *conn)
            .await?;
    if columns.is_empty() {
        return Err(TenancyError::InvalidInput(format!(
            "the archive's table {table} does not exist in the target tenant"
        )));
    }
    Ok(columns)
}

/// One value to bind.
#[derive(Debug)]
enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// An insert statement (names from the target's schema) and its values.
type RowInsert = (String, Vec<Cell>);

fn insert_for(
    table: &str,
    columns: &[(String, String)],
    tenant_columns: &[String],
    target: &[u8],
    mut row: BTreeMap<String, Box<RawValue>>,
) -> Result<RowInsert, TenancyError> {
    let mut names = Vec::new();
    let mut cells = Vec::new();
    for (name, declared) in columns {
        if tenant_columns.contains(name) {
            row.remove(name);
            names.push(quote(name));
            cells.push(Cell::Blob(target.to_vec()));
            continue;
        }
        let Some(value) = row.remove(name) else {
            continue;
        };
        names.push(quote(name));
        cells.push(raw_cell(&value, declared)?);
    }
    if let Some(unknown) = row.keys().next() {
        return Err(TenancyError::InvalidInput(format!(
            "the archive's column {table}.{unknown} does not exist in the target tenant"
        )));
    }
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        quote(table),
        names.join(", "),
        vec!["?"; names.len()].join(", ")
    );
    Ok((sql, cells))
}

/// A value from its JSON text: numbers by their digits, the rest parsed.
fn raw_cell(raw: &RawValue, declared: &str) -> Result<Cell, TenancyError> {
    let text = raw.get();
    if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Ok(number_cell(text, declared));
    }
    let value = serde_json::from_str(text)
        .map_err(|e| TenancyError::InvalidInput(format!("archive value: {e}")))?;
    Ok(cell(value, declared))
}

/// A JSON number, exactly: an integer that fits i64 as INTEGER, a REAL
/// column gets a real, anything else (a decimal or a bigint beyond i64)
/// goes in as its own digits, which a TEXT column keeps exactly (SQLite's
/// NUMERIC and INTEGER affinities convert it as they convert any text).
fn number_cell(text: &str, declared: &str) -> Cell {
    if let Ok(int) = text.parse::<i64>() {
        return Cell::Int(int);
    }
    let declared = declared.to_ascii_uppercase();
    let real = ["REAL", "FLOA", "DOUB"]
        .iter()
        .any(|k| declared.contains(k));
    match text.parse::<f64>() {
        Ok(f) if real => Cell::Real(f),
        _ => Cell::Text(text.to_owned()),
    }
}

fn cell(value: Value, declared: &str) -> Cell {
    let declared = declared.to_ascii_uppercase();
    let binary = declared.contains("BLOB") || declared.contains("UUID");
    match value {
        Value::Null => Cell::Null,
        Value::Bool(b) => Cell::Int(i64::from(b)),
        Value::Number(n) => number_cell(&n.to_string(), &declared),
        Value::String(s) if binary => {
            if let Ok(uuid) = uuid::Uuid::parse_str(&s) {
                Cell::Blob(uuid.as_bytes().to_vec())
            } else if let Some(bytes) = s.strip_prefix("\\x").and_then(unhex) {
                Cell::Blob(bytes)
            } else {
                Cell::Text(s)
            }
        }
        Value::String(s) => Cell::Text(s),
        other => Cell::Text(other.to_string()),
    }
}

async fn insert_all(conn: &mut SqliteConnection, rows: &[RowInsert]) -> Result<(), sqlx::Error> {
    for (sql, cells) in rows {
        let mut args = SqliteArguments::default();
        for cell in cells {
            let added = match cell {
                Cell::Null => args.add(None::<i64>),
                Cell::Int(i) => args.add(*i),
                Cell::Real(f) => args.add(*f),
                Cell::Text(s) => args.add(s.clone()),
                Cell::Blob(b) => args.add(b.clone()),
            };
            added.map_err(sqlx::Error::Encode)?;
        }
        sqlx::query_with::<Sqlite, _>(AssertSqlSafe(sql.clone()), args)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
