//! Export and import of a tenant's data as a [`TenantArchive`].

use std::collections::BTreeMap;

use saas_core::{TenantContext, TenantId, TenantStatus};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use super::{PgTenancy, TENANT_SETTING, sql, tenant_database_options};
use crate::archive::{ARCHIVE_FORMAT, ArchiveManifest, ArchivedTable, TenantArchive, sha256_hex};
use crate::error::TenancyError;
use crate::placement::Placement;
use crate::record::TenantRecord;

/// Passes an import makes when foreign keys require an order.
const IMPORT_PASSES: usize = 8;

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
        let (lock, record) = self.lock_tenant(id).await?;
        let result = self.export_locked(&record).await;
        lock.release().await;
        result
    }

    async fn export_locked(&self, record: &TenantRecord) -> Result<TenantArchive, TenancyError> {
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
        let mut manifest = ArchiveManifest {
            format: ARCHIVE_FORMAT,
            source_tenant: id,
            exported_at: self.inner.clock.now(),
            tables: Vec::new(),
        };
        let mut files = BTreeMap::new();
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
            let rows = query.fetch_all(&mut *tx).await?;
            let mut data = String::new();
            for row in &rows {
                data.push_str(row);
                data.push('\n');
            }
            manifest.tables.push(ArchivedTable {
                table: name.clone(),
                tenant_column: column,
                rows: rows.len() as u64,
                sha256: sha256_hex(data.as_bytes()),
            });
            files.insert(name, data);
        }
        tx.commit().await?;
        conn.close().await?;
        Ok(TenantArchive { manifest, files })
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
        let (lock, record) = self.lock_tenant(ctx.tenant_id()).await?;
        let result = match crate::catalog::check_servable(record) {
            Ok(record) => self.import_locked(&record, archive).await,
            Err(e) => Err(e),
        };
        lock.release().await;
        result
    }

    async fn import_locked(
        &self,
        record: &TenantRecord,
        archive: &TenantArchive,
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
        let mut batches = Vec::new();
        for table in &archive.manifest.tables {
            let Some(tenant_column) = own.get(&table.table) else {
                return Err(TenancyError::InvalidInput(format!(
                    "the archive's table {:?} is not one of this tenant's tables; \
                     nothing was imported",
                    table.table
                )));
            };
            let data = archive
                .files
                .get(&table.table)
                .map(String::as_str)
                .unwrap_or("");
            // The rows go to PostgreSQL as the archive's own JSON text:
            // parsed here, a numeric or bigint beyond an f64's 53 bits
            // would change. `verify` checked every line is a JSON object.
            let rows = format!("[{}]", data.lines().collect::<Vec<_>>().join(","));
            batches.push((table.table.clone(), tenant_column.clone(), rows));
        }
        let mut pending = batches;
        let mut imported = 0u64;
        for _ in 0..IMPORT_PASSES {
            let mut blocked = Vec::new();
            for (table, tenant_column, rows) in pending {
                let t = quote(&table);
                // The tenant column (found in the catalog, bound as a
                // value) is overwritten with the target tenant in SQL;
                // jsonb keeps numbers as numeric, so nothing is rounded.
                let sql = format!(
                    "INSERT INTO {t} SELECT * FROM jsonb_populate_recordset(NULL::{t}, \
                     (SELECT coalesce(jsonb_agg(CASE WHEN $2::text IS NULL THEN e \
                        ELSE e || jsonb_build_object($2::text, $3::text) END ORDER BY n), \
                      '[]'::jsonb) \
                      FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS a(e, n)))"
                );
                tx.execute("SAVEPOINT saas_import").await?;
                match sqlx::query(AssertSqlSafe(sql))
                    .bind(&rows)
                    .bind(&tenant_column)
                    .bind(&target)
                    .execute(&mut *tx)
                    .await
                {
                    Ok(done) => {
                        tx.execute("RELEASE SAVEPOINT saas_import").await?;
                        imported += done.rows_affected();
                        advance_sequences(&mut tx, &table).await?;
                    }
                    Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                        tx.execute("ROLLBACK TO SAVEPOINT saas_import").await?;
                        blocked.push((table, tenant_column, rows));
                    }
                    Err(e) => return Err(e.into()),
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
