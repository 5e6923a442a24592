//! Export and import of a tenant's data as a [`TenantArchive`].

use std::collections::BTreeMap;
use std::path::Path;

use futures_util::TryStreamExt;

use saas_core::{TenantContext, TenantId, TenantStatus};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use super::{PgTenancy, TENANT_SETTING, sql, tenant_database_options};
use crate::archive::{
    ARCHIVE_FORMAT, ArchiveManifest, ArchiveSink, ChunkReader, DirChunks, DirSink, MemoryChunks,
    MemorySink, TenantArchive, verify_dir,
};
use crate::error::TenancyError;
use crate::placement::Placement;
use crate::record::TenantRecord;

/// Passes an import makes when foreign keys require an order.
const IMPORT_PASSES: usize = 8;

/// Rows an import inserts per statement: what it holds in memory at once.
pub const IMPORT_CHUNK_ROWS: usize = 2_000;

/// Tables of a placement: (bare name, qualified name, tenant column).
type TableList = Vec<(String, String, Option<String>)>;

impl PgTenancy {
    /// Exports a tenant's data: for row tenants every table with a tenant
    /// column (found in the database; the library's own tables, such as
    /// the migration ledger, excepted), for schema and database tenants
    /// every table of the tenant except the migration ledger.
    ///
    /// Serialised per tenant with every other operation on it (the
    /// tenant's lock, held until the archive is read): an export never
    /// sees a half-done delete, import or provisioning — it either
    /// completes before a concurrent delete or is refused after it as
    /// [`TenancyError::TenantNotServable`].
    pub async fn export_tenant(&self, id: TenantId) -> Result<TenantArchive, TenancyError> {
        let mut sink = MemorySink::new(self.manifest_for(id));
        let (lock, record) = self.lock_tenant(id).await?;
        let result = self.export_locked(&record, &mut sink).await;
        lock.release().await;
        result.map(|()| sink.into_archive())
    }

    /// Exports a tenant's data, as [`PgTenancy::export_tenant`] does, into
    /// the directory `dir` in the format [`TenantArchive::write_to_dir`]
    /// writes — streamed: rows go from the database to their table's file
    /// as they arrive, so memory stays flat whatever the tenant's size.
    /// The manifest is written last: until this returns `Ok`, `dir` holds
    /// no readable archive. Returns the manifest.
    ///
    /// ```no_run
    /// # async fn run(tenancy: saas_tenancy::postgres::PgTenancy, ctx: saas_core::TenantContext,
    /// #              target: saas_core::TenantContext) -> Result<(), saas_tenancy::TenancyError> {
    /// let dir = std::path::Path::new("/var/backups/tenant-42");
    /// let manifest = tenancy.export_tenant_to_dir(ctx.tenant_id(), dir).await?;
    /// println!("{} tables", manifest.tables.len());
    /// let rows = tenancy.import_tenant_from_dir(&target, dir).await?;
    /// # let _ = rows;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`PgTenancy::export_tenant`], or [`TenancyError::InvalidInput`]
    /// when a file cannot be written.
    pub async fn export_tenant_to_dir(
        &self,
        id: TenantId,
        dir: &Path,
    ) -> Result<ArchiveManifest, TenancyError> {
        let (lock, record) = self.lock_tenant(id).await?;
        let result = async {
            let mut sink = DirSink::create(dir, self.manifest_for(id)).await?;
            self.export_locked(&record, &mut sink).await?;
            sink.finish().await
        }
        .await;
        lock.release().await;
        result
    }

    fn manifest_for(&self, id: TenantId) -> ArchiveManifest {
        ArchiveManifest {
            format: ARCHIVE_FORMAT,
            source_tenant: id,
            exported_at: self.inner.clock.now(),
            tables: Vec::new(),
        }
    }

    async fn export_locked(
        &self,
        record: &TenantRecord,
        sink: &mut dyn ArchiveSink,
    ) -> Result<(), TenancyError> {
        let id = record.id;
        if matches!(
            record.status,
            TenantStatus::Deleting | TenantStatus::Deleted
        ) {
            return Err(TenancyError::TenantNotServable {
                tenant: id,
                status: record.status,
            });
        }
        let cluster = self.cluster(record.placement.cluster())?;
        let columns = self.inner.tenant_columns();
        let mut conn = match &record.placement {
            Placement::Database { database, .. } => {
                let options = tenant_database_options(cluster.config.admin.clone(), database);
                PgConnection::connect_with(&options).await?
            }
            _ => PgConnection::connect_with(&cluster.config.admin).await?,
        };
        // One snapshot for every table: rows the application writes during
        // the export are all in the archive or all out.
        let mut tx = conn
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        // Owners are subject to forced RLS: read as the tenant.
        sqlx::query("SELECT set_config($1, $2, true)")
            .bind(TENANT_SETTING)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let schema_filter = match &record.placement {
            Placement::Shared { .. } => None,
            Placement::Schema { schema, .. } => Some(schema.as_str().to_owned()),
            Placement::Database { .. } => Some("public".to_owned()),
        };
        let tables = list_tables(&mut tx, schema_filter.as_deref(), &columns).await?;
        for (name, qualified, column) in tables {
            // Names come from PostgreSQL's catalog, quoted by it.
            let sql = match &column {
                Some(c) => format!(
                    "SELECT row_to_json(t)::text FROM {qualified} t WHERE {} = $1",
                    quote(c)
                ),
                None => format!("SELECT row_to_json(t)::text FROM {qualified} t"),
            };
            let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql));
            if column.is_some() {
                query = query.bind(id);
            }
            sink.begin_table(&name, column).await?;
            // Streamed: each row is handed on as it arrives.
            let mut rows = query.fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                sink.row(&row).await?;
            }
            drop(rows);
            sink.end_table().await?;
        }
        tx.commit().await?;
        conn.close().await?;
        Ok(())
    }

    /// Imports an archive into the (empty) tenant of `ctx`, whatever its
    /// placement, through the tenant's own scoped transaction: the tenant
    /// column is rewritten to the target tenant, sequences are moved past
    /// the imported keys. The archive is verified first; any failure rolls
    /// the whole import back. Returns the number of rows imported.
    ///
    /// Serialised per tenant with every other operation on it (the
    /// tenant's lock, held until the import commits), and the tenant's
    /// status is read under the lock, not from the record cache: an import
    /// racing a delete either commits before the delete starts (which then
    /// deletes its rows) or is refused as
    /// [`TenancyError::TenantNotServable`] — never leaves rows behind a
    /// deleted tenant.
    pub async fn import_tenant(
        &self,
        ctx: &TenantContext,
        archive: &TenantArchive,
    ) -> Result<u64, TenancyError> {
        archive.verify()?;
        let mut rows = MemoryChunks::new(archive);
        self.import_chunks(ctx, &archive.manifest, &mut rows).await
    }

    /// Imports the archive in `dir` (written by
    /// [`PgTenancy::export_tenant_to_dir`] or [`TenantArchive::write_to_dir`])
    /// as [`PgTenancy::import_tenant`] does — streamed: the files are
    /// verified a line at a time, then inserted in chunks of
    /// [`IMPORT_CHUNK_ROWS`] rows, so memory stays flat whatever the
    /// tenant's size. Still one transaction: any failure imports nothing.
    /// The directory must not change while the import runs.
    ///
    /// # Errors
    /// As [`PgTenancy::import_tenant`].
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
        rows: &mut dyn ChunkReader,
    ) -> Result<u64, TenancyError> {
        let (lock, record) = self.lock_tenant(ctx.tenant_id()).await?;
        let result = match crate::catalog::check_servable(record) {
            Ok(record) => self.import_locked(&record, manifest, rows).await,
            Err(e) => Err(e),
        };
        lock.release().await;
        result
    }

    async fn import_locked(
        &self,
        record: &TenantRecord,
        manifest: &ArchiveManifest,
        reader: &mut dyn ChunkReader,
    ) -> Result<u64, TenancyError> {
        let target = record.id.to_string();
        let mut tx = self.begin_record(record, self.fences()).await?;
        // Only the tenant's own tables take rows, whatever the archive
        // names: for row tenants the shared tables with a tenant column (a
        // shared table without one would take rows for everyone), for
        // schema and database tenants the tables of their schema. The
        // tenant column is the one found here, not the archive's claim.
        let schema_filter = match tx.placement() {
            Placement::Shared { .. } => None,
            Placement::Schema { schema, .. } => Some(schema.as_str().to_owned()),
            Placement::Database { .. } => Some("public".to_owned()),
        };
        let own: BTreeMap<String, Option<String>> = list_tables(
            &mut tx,
            schema_filter.as_deref(),
            &self.inner.tenant_columns(),
        )
        .await?
        .into_iter()
        .map(|(name, _, column)| (name, column))
        .collect();
        let mut pending = Vec::new();
        for table in &manifest.tables {
            let Some(tenant_column) = own.get(&table.table) else {
                return Err(TenancyError::InvalidInput(format!(
                    "the archive's table {:?} is not one of this tenant's tables; \
                     nothing was imported",
                    table.table
                )));
            };
            pending.push((table.table.clone(), tenant_column.clone()));
        }
        let mut imported = 0u64;
        for _ in 0..IMPORT_PASSES {
            let mut blocked = Vec::new();
            for (table, tenant_column) in pending {
                tx.execute("SAVEPOINT saas_import").await?;
                match import_table(&mut tx, reader, &table, tenant_column.as_deref(), &target).await
                {
                    Ok(rows) => {
                        tx.execute("RELEASE SAVEPOINT saas_import").await?;
                        imported += rows;
                        advance_sequences(&mut tx, &table).await?;
                    }
                    Err(TenancyError::Database(e))
                        if e.as_database_error()
                            .is_some_and(|e| e.is_foreign_key_violation()) =>
                    {
                        tx.execute("ROLLBACK TO SAVEPOINT saas_import").await?;
                        blocked.push((table, tenant_column));
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

/// Inserts `table`'s rows from `reader`, a chunk per statement, the tenant
/// column (found in the catalog, bound as a value) overwritten with
/// `target` in SQL; jsonb keeps numbers as numeric, so nothing is rounded.
/// The rows go to PostgreSQL as the archive's own JSON text: parsed here,
/// a numeric or bigint beyond an f64's 53 bits would change.
async fn import_table(
    conn: &mut PgConnection,
    reader: &mut dyn ChunkReader,
    table: &str,
    tenant_column: Option<&str>,
    target: &str,
) -> Result<u64, TenancyError> {
    let t = quote(table);
    let sql = format!(
        "INSERT INTO {t} SELECT * FROM jsonb_populate_recordset(NULL::{t}, \
         (SELECT coalesce(jsonb_agg(CASE WHEN $2::text IS NULL THEN e \
            ELSE e || jsonb_build_object($2::text, $3::text) END ORDER BY n), \
          '[]'::jsonb) \
          FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS a(e, n)))"
    );
    reader.open(table).await?;
    let mut imported = 0;
    while let Some(rows) = reader.next_chunk(IMPORT_CHUNK_ROWS).await? {
        let done = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(&rows)
            .bind(tenant_column)
            .bind(target)
            .execute(&mut *conn)
            .await?;
        imported += done.rows_affected();
    }
    Ok(imported)
}

/// Quotes an identifier validated by the archive (`[a-z0-9_]`).
pub(super) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A tenant's tables, found in the database: the tables of `schema`, or
/// with `None` those of the search-path schemas (tenant schemas excluded)
/// that have one of `columns`. The library's own tables
/// ([`sql::LIBRARY_TABLES`]) are never a tenant's. Used by delete, export
/// and import alike.
pub(super) async fn list_tables(
    conn: &mut PgConnection,
    schema: Option<&str>,
    columns: &[String],
) -> Result<TableList, TenancyError> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT c.relname::text, c.oid::regclass::text, \
                (SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid \
                   AND a.attname = ANY($2) AND NOT a.attisdropped LIMIT 1) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND NOT (c.relname = ANY($3)) \
           AND CASE WHEN $1::text IS NOT NULL THEN n.nspname = $1 \
                    ELSE n.nspname = ANY (current_schemas(false)) \
                     AND n.nspname !~ '^t_[0-9a-f]{32}$' END \
         ORDER BY 1",
    )
    .bind(schema)
    .bind(columns)
    .bind(sql::LIBRARY_TABLES)
    .fetch_all(&mut *conn)
    .await?;
    // Row tenants export only tables that carry their id.
    Ok(rows
        .into_iter()
        .filter(|(_, _, column)| schema.is_some() || column.is_some())
        .collect())
}

/// Moves every serial/identity sequence of `table` past its largest value
/// (never backwards: a shared sequence serves other tenants too).
async fn advance_sequences(conn: &mut PgConnection, table: &str) -> Result<(), TenancyError> {
    let sequences: Vec<(String, String)> = sqlx::query_as(
        "SELECT quote_ident(a.attname), pg_get_serial_sequence(quote_ident($1), a.attname) \
         FROM pg_attribute a WHERE a.attrelid = to_regclass(quote_ident($1)) \
           AND a.attnum > 0 AND NOT a.attisdropped \
           AND pg_get_serial_sequence(quote_ident($1), a.attname) IS NOT NULL",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    let t = quote(table);
    for (column, sequence) in sequences {
        // Both names come from PostgreSQL's catalog functions.
        let sql = format!(
            "SELECT setval($1::regclass, greatest((SELECT coalesce(max({column}), 1) FROM {t}), \
             (SELECT last_value FROM {sequence})))"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&sequence)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
