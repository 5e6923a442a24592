//! `audit()` on SQLite: do the files really keep tenants apart?

use std::collections::HashMap;
use std::path::Path;

use saas_core::TenantStatus;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

use super::SqliteTenancy;
use super::transfer::{FileTable, file_tables};
use crate::audit::{AuditFinding, Weakness, finding};
use crate::error::TenancyError;
use crate::placement::{ClusterName, Placement, TenantObjectName};
use crate::record::{ListOptions, TenantRecord};

/// One index of a table: unique, origin (`c`, `u`, `pk`), its columns
/// (`None` for an expression).
type IndexInfo = (bool, String, Vec<Option<String>>);

impl SqliteTenancy {
    /// Inspects every cluster's shared file, every tenant file and every
    /// tenant directory and reports each isolation weakness with what to do
    /// about it; a clean setup reports nothing:
    ///
    /// - a declared tenant table missing from the shared file, or lacking
    ///   its tenant column ([`Weakness::TenantTableMissing`],
    ///   [`Weakness::TenantColumnMissing`]);
    /// - a shared-file table with a tenant column that is not declared, so
    ///   no view guards it ([`Weakness::UndeclaredTenantTable`]);
    /// - a primary or unique key without the tenant column
    ///   ([`Weakness::UniqueKeyWithoutTenant`]) or no index led by the
    ///   tenant column ([`Weakness::TenantIndexMissing`]) on such a table;
    /// - a tenant file behind the tenant migrations
    ///   ([`Weakness::MigrationsBehind`]);
    /// - one file serving two tenants, or a tenant file that is the shared
    ///   file (a hard or symbolic link, a copy-paste configuration)
    ///   ([`Weakness::TenantFileShared`],
    ///   [`Weakness::TenantFileReachableFromShared`]);
    /// - a tenant file no live tenant owns ([`Weakness::OrphanTenantFile`]).
    pub async fn audit(&self) -> Result<Vec<AuditFinding>, TenancyError> {
        let mut out = Vec::new();
        let columns = self.inner.tenant_columns();
        let mut clusters: Vec<_> = self.inner.clusters.values().collect();
        clusters.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        for cluster in &clusters {
            let mut conn = read_only(&cluster.shared_file).await?;
            let audited = self
                .audit_shared_file(&cluster.name, &mut conn, &columns, &mut out)
                .await;
            conn.close().await?;
            audited?;
        }
        let tenants =
            crate::audit::without_tampered_placements(self.all_tenants().await?, &mut out);
        self.audit_tenant_files(&tenants, &mut out).await?;
        for cluster in &clusters {
            audit_orphans(&cluster.name, &cluster.tenant_dir, &tenants, &mut out)?;
        }
        Ok(out)
    }

    async fn audit_shared_file(
        &self,
        cluster: &ClusterName,
        conn: &mut SqliteConnection,
        columns: &[String],
        out: &mut Vec<AuditFinding>,
    ) -> Result<(), TenancyError> {
        let tables = file_tables(conn, columns).await?;
        let mut declared = Vec::new();
        for t in &self.inner.tables {
            let physical = t.physical()?;
            let subject = format!("{cluster}: {physical}");
            let column = t.tenant_column.as_str();
            declared.push(physical.as_str().to_owned());
            let Some(table) = tables.iter().find(|f| f.name == physical.as_str()) else {
                out.push(finding(
                    Weakness::TenantTableMissing,
                    subject,
                    format!(
                        "create {physical} in the shared migrations, with {column} in its \
                         primary key, then run setup()"
                    ),
                ));
                continue;
            };
            if !table.columns.iter().any(|(name, _)| name == column) {
                out.push(finding(
                    Weakness::TenantColumnMissing,
                    subject,
                    format!("add {column} to {physical} and to its primary key"),
                ));
                continue;
            }
            audit_keys(conn, &subject, table, column, out).await?;
        }
        for table in &tables {
            let Some(column) = &table.tenant_column else {
                continue;
            };
            if declared.contains(&table.name) {
                continue;
            }
            let subject = format!("{cluster}: {}", table.name);
            out.push(finding(
                Weakness::UndeclaredTenantTable,
                subject.clone(),
                format!(
                    "declare it (`.tenant_table(TenantTable::new(..)?.stored_as(\"{}\")?)`) \
                     so tenant connections see only their own rows; until then any \
                     scoped connection reads every tenant's rows by naming it",
                    table.name
                ),
            ));
            audit_keys(conn, &subject, table, column, out).await?;
        }
        Ok(())
    }

    async fn all_tenants(&self) -> Result<Vec<TenantRecord>, TenancyError> {
        self.inner
            .catalog
            .list_all(&ListOptions::default().with_limit(1000))
            .await
    }

    async fn audit_tenant_files(
        &self,
        tenants: &[TenantRecord],
        out: &mut Vec<AuditFinding>,
    ) -> Result<(), TenancyError> {
        let latest = self.inner.latest_tenant_version();
        let mut seen: HashMap<String, &TenantRecord> = HashMap::new();
        for record in tenants {
            if record.status == TenantStatus::Deleted {
                continue;
            }
            let Some(file) = self.tenant_file(record)? else {
                continue;
            };
            let Some(identity) = file_identity(&file) else {
                continue;
            };
            let subject = format!("tenant {} ({})", record.id, file.display());
            let shared = &self.cluster(record.placement.cluster())?.shared_file;
            if file_identity(shared).as_ref() == Some(&identity) {
                out.push(finding(
                    Weakness::TenantFileReachableFromShared,
                    subject.clone(),
                    format!(
                        "{} is the cluster's shared file: every row tenant's connection \
                         opens it; restore the tenant's own file from a backup or its export",
                        file.display()
                    ),
                ));
            }
            if let Some(other) = seen.get(&identity) {
                out.push(finding(
                    Weakness::TenantFileShared,
                    subject.clone(),
                    format!(
                        "the file is also tenant {}'s: give each tenant its own file \
                         (export one tenant, provision it anew, import)",
                        other.id
                    ),
                ));
            } else {
                seen.insert(identity, record);
            }
            if let (Some(latest), TenantStatus::Active | TenantStatus::Suspended) =
                (latest, record.status)
            {
                let mut conn = read_only(&file).await?;
                let version = super::ops::file_version(&mut conn).await;
                conn.close().await?;
                if version < latest {
                    out.push(finding(
                        Weakness::MigrationsBehind,
                        subject,
                        format!(
                            "at version {version}, the tenant migrations reach {latest}: \
                             run migrate_tenants()"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

async fn read_only(file: &Path) -> Result<SqliteConnection, TenancyError> {
    let options = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(false)
        .read_only(true);
    Ok(SqliteConnection::connect_with(&options).await?)
}

/// What makes two paths the same file: device and inode on Unix (hard
/// links included), the canonical path elsewhere.
fn file_identity(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(format!("{}:{}", meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        Some(std::fs::canonicalize(path).ok()?.display().to_string())
    }
}

async fn audit_keys(
    conn: &mut SqliteConnection,
    subject: &str,
    table: &FileTable,
    column: &str,
    out: &mut Vec<AuditFinding>,
) -> Result<(), TenancyError> {
    let rows: Vec<(String, i64, String, Option<String>)> = sqlx::query_as(
        "SELECT il.name, il.\"unique\", il.origin, ii.name \
         FROM pragma_index_list(?1, 'main') il, pragma_index_info(il.name, 'main') ii \
         ORDER BY il.seq, ii.seqno",
    )
    .bind(&table.name)
    .fetch_all(&mut *conn)
    .await?;
    let mut indexes: Vec<(String, IndexInfo)> = Vec::new();
    for (name, unique, origin, col) in rows {
        if indexes.last().is_none_or(|(n, _)| *n != name) {
            indexes.push((name.clone(), (unique != 0, origin, Vec::new())));
        }
        if let Some((_, (_, _, cols))) = indexes.last_mut() {
            cols.push(col);
        }
    }
    // The primary key from the table itself: a rowid alias
    // (`INTEGER PRIMARY KEY`) has no index of its own.
    let pk: Vec<(String, i64)> = sqlx::query_as(
        "SELECT name, pk FROM pragma_table_info(?1, 'main') WHERE pk > 0 ORDER BY pk",
    )
    .bind(&table.name)
    .fetch_all(&mut *conn)
    .await?;
    let has_tenant = |cols: &[Option<String>]| cols.iter().any(|c| c.as_deref() == Some(column));
    let pk_cols: Vec<Option<String>> = pk.iter().map(|(n, _)| Some(n.clone())).collect();
    if !pk_cols.is_empty() && !has_tenant(&pk_cols) {
        out.push(finding(
            Weakness::UniqueKeyWithoutTenant,
            format!("{subject} (primary key)"),
            format!(
                "put {column} in the primary key: a key unique across tenants lets one \
                 tenant learn of another's rows by conflicts"
            ),
        ));
    }
    for (name, (unique, origin, cols)) in &indexes {
        if *unique && origin != "pk" && !has_tenant(cols) {
            out.push(finding(
                Weakness::UniqueKeyWithoutTenant,
                format!("{subject} ({name})"),
                format!(
                    "add {column} to the unique key: unique across tenants lets one tenant \
                     learn of another's rows by conflicts"
                ),
            ));
        }
    }
    let led_by_tenant = indexes
        .iter()
        .any(|(_, (_, _, cols))| cols.first().and_then(Option::as_deref) == Some(column))
        || pk_cols.first().and_then(Option::as_deref) == Some(column);
    if !led_by_tenant {
        out.push(finding(
            Weakness::TenantIndexMissing,
            subject.to_owned(),
            format!(
                "create an index (or primary key) starting with {column}: without it every \
                 scoped statement reads every tenant's rows"
            ),
        ));
    }
    Ok(())
}

/// Tenant files in `dir` that no live database tenant of `cluster` owns.
fn audit_orphans(
    cluster: &ClusterName,
    dir: &Path,
    tenants: &[TenantRecord],
    out: &mut Vec<AuditFinding>,
) -> Result<(), TenancyError> {
    let live: Vec<&TenantObjectName> = tenants
        .iter()
        .filter(|t| t.status != TenantStatus::Deleted)
        .filter_map(|t| match &t.placement {
            Placement::Database {
                cluster: c,
                database,
            } if c == cluster => Some(database),
            _ => None,
        })
        .collect();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| TenancyError::InvalidInput(format!("cannot list {}: {e}", dir.display())))?;
    let mut orphans = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".sqlite")) else {
            continue;
        };
        let Ok(object) = TenantObjectName::parse(stem) else {
            continue;
        };
        if !live.contains(&&object) {
            orphans.push(entry.path());
        }
    }
    orphans.sort();
    for path in orphans {
        out.push(finding(
            Weakness::OrphanTenantFile,
            format!("{cluster}: {}", path.display()),
            "no live tenant owns this file: if its tenant was deleted, remove it (with its \
             -wal and -shm files); if it was restored by hand, provision the tenant and import \
             its export instead",
        ));
    }
    Ok(())
}
