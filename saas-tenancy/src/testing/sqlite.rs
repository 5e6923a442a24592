//! A disposable SQLite tenancy (features `testing` + `sqlite`): a temporary
//! directory with a catalog file, a shared file holding `notes` for row
//! tenants, and one file per database tenant — removed by
//! [`SqliteSandbox::cleanup`]. Also the leak harness's SQLite target.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use saas_core::{TenantContext, TenantId, TenantSlug};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor, SqlSafeStr, SqliteConnection};

use super::leak::{LeakRow, LeakStatements, LeakTarget};
use crate::sqlite::{SqliteClusterConfig, SqliteTenancy, SqliteTenancyBuilder};
use crate::{
    ClusterName, DynCatalog, NewTenant, Placement, SqlIdent, SqliteCatalog, Strategy, TenancyError,
    TenantTable,
};

/// The `notes` table of a tenant database file.
pub const SQLITE_NOTES: &str = "CREATE TABLE notes (\
    tenant_id BLOB NOT NULL, id INTEGER NOT NULL, body TEXT NOT NULL, \
    PRIMARY KEY (tenant_id, id))";

/// The physical table behind `notes` in the shared file.
pub const SQLITE_NOTES_SHARED: &str = "CREATE TABLE notes_rows (\
    tenant_id BLOB NOT NULL, id INTEGER NOT NULL, body TEXT NOT NULL, \
    PRIMARY KEY (tenant_id, id))";

/// The sandbox's tenant-file migrations: version 1 creates `notes`.
pub fn sqlite_migrations() -> Vec<Migration> {
    vec![Migration::new(
        1,
        "notes".into(),
        MigrationType::Simple,
        SQLITE_NOTES.into_sql_str(),
        false,
    )]
}

fn builder(
    catalog: &DynCatalog,
    cluster: &ClusterName,
    shared_file: &std::path::Path,
    dir: &std::path::Path,
    migrations: Vec<Migration>,
) -> Result<SqliteTenancyBuilder, TenancyError> {
    Ok(SqliteTenancy::builder(Arc::clone(catalog))
        .cluster(SqliteClusterConfig {
            name: cluster.clone(),
            shared_file: shared_file.to_path_buf(),
            tenant_dir: dir.to_path_buf(),
        })
        .tenant_table(TenantTable::new("notes")?)
        .tenant_migrations(Migrator::with_migrations(migrations)))
}

/// A disposable SQLite tenancy.
#[derive(Debug)]
pub struct SqliteSandbox {
    /// The tenancy under test.
    pub tenancy: SqliteTenancy,
    /// The temporary directory holding every file.
    pub dir: PathBuf,
    /// The shared database file.
    pub shared_file: PathBuf,
    /// The cluster name (`local`).
    pub cluster: ClusterName,
    catalog: DynCatalog,
}

impl SqliteSandbox {
    /// A new sandbox in a fresh temporary directory.
    pub async fn new() -> Result<Self, TenancyError> {
        let dir = std::env::temp_dir().join(super::unique_name("saas_sqlite"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| TenancyError::InvalidInput(format!("cannot create {dir:?}: {e}")))?;
        let shared_file = dir.join("shared.sqlite");
        let options = |file: PathBuf| {
            SqliteConnectOptions::new()
                .filename(file)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
        };
        let shared = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options(shared_file.clone()))
            .await?;
        shared.execute(SQLITE_NOTES_SHARED).await?;
        shared.close().await;
        let catalog_pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options(dir.join("catalog.sqlite")))
            .await?;
        let catalog = SqliteCatalog::new(catalog_pool);
        catalog.migrate().await?;
        let catalog: DynCatalog = Arc::new(catalog);
        let cluster = ClusterName::new("local")?;
        let tenancy =
            builder(&catalog, &cluster, &shared_file, &dir, sqlite_migrations())?.build()?;
        tenancy.setup().await?;
        Ok(Self {
            tenancy,
            dir,
            shared_file,
            cluster,
            catalog,
        })
    }

    /// Another tenancy over the same catalog and files, with other tenant
    /// migrations (to test migrating tenant files to a new version).
    pub fn tenancy_with_migrations(
        &self,
        migrations: Vec<Migration>,
    ) -> Result<SqliteTenancy, TenancyError> {
        self.builder(migrations)?.build()
    }

    /// A builder over the same catalog and files with `notes` declared and
    /// `migrations` as the tenant migrations, to add hooks or tables to.
    pub fn builder(
        &self,
        migrations: Vec<Migration>,
    ) -> Result<SqliteTenancyBuilder, TenancyError> {
        builder(
            &self.catalog,
            &self.cluster,
            &self.shared_file,
            &self.dir,
            migrations,
        )
    }

    /// Provisions a tenant and returns its context.
    pub async fn tenant(
        &self,
        slug: &str,
        strategy: Strategy,
    ) -> Result<TenantContext, TenancyError> {
        let slug =
            TenantSlug::parse(slug).map_err(|e| TenancyError::InvalidInput(e.to_string()))?;
        let new = NewTenant::new(slug, "sandbox tenant", strategy, self.cluster.clone())?;
        let record = self.tenancy.provision(new).await?;
        Ok(TenantContext::new(record.id, record.slug))
    }

    /// Removes the directory and every file in it.
    pub async fn cleanup(self) {
        drop(self.tenancy);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The leak harness's target on a [`SqliteTenancy`] and one of the host's
/// declared tenant tables (the sandbox's is `notes(tenant_id, id, body)`).
/// A connection without a tenant is a plain connection to the cluster's
/// shared file (no per-tenant views): it must find no table of the
/// declared name to read, and no row of a file tenant in the physical
/// table. A tenant file has no tenant-less access besides the escape hatch.
#[derive(Debug)]
pub struct SqliteLeakTarget {
    tenancy: SqliteTenancy,
    shared_file: PathBuf,
    sql: LeakStatements,
    /// Rows of one tenant in the physical table of the shared file.
    stray: String,
}

impl SqliteLeakTarget {
    /// A target for the tenant table `table` as `tenancy` declares it
    /// (tenant column, physical table), keyed by the integer `key_column`
    /// with the text `value_column`; `shared_file` is the cluster's shared
    /// file. An undeclared table is refused: its rows would not be scoped.
    pub fn new(
        tenancy: SqliteTenancy,
        shared_file: PathBuf,
        table: &SqlIdent,
        key_column: &SqlIdent,
        value_column: &SqlIdent,
    ) -> Result<Self, TenancyError> {
        let table = tenancy
            .tenant_tables()
            .iter()
            .find(|t| t.table == *table)
            .cloned()
            .ok_or_else(|| {
                TenancyError::InvalidInput(format!(
                    "{} is not a declared tenant table of this tenancy",
                    table.as_str()
                ))
            })?;
        let c = table.tenant_column.quoted();
        let physical = table.physical()?.quoted();
        let sql = LeakStatements::new(
            &table.table.quoted(),
            &c,
            &key_column.quoted(),
            &value_column.quoted(),
            |_| "?".to_owned(),
        );
        Ok(Self {
            tenancy,
            shared_file,
            sql,
            stray: format!("SELECT count(*) FROM {physical} WHERE {c} = ?"),
        })
    }

    /// The target on the sandbox's `notes(tenant_id, id, body)`.
    pub fn notes(tenancy: SqliteTenancy, shared_file: PathBuf) -> Result<Self, TenancyError> {
        let ident = SqlIdent::new;
        Self::new(
            tenancy,
            shared_file,
            &ident("notes")?,
            &ident("id")?,
            &ident("body")?,
        )
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Rows changed on this connection so far, triggers included: the way to
/// count rows changed through a tenant view, whose `rows_affected()` SQLite
/// reports as 0.
pub async fn total_changes(conn: &mut sqlx::SqliteConnection) -> Result<u64, String> {
    let n: i64 = sqlx::query_scalar("SELECT total_changes()")
        .fetch_one(conn)
        .await
        .map_err(text)?;
    u64::try_from(n).map_err(text)
}

#[async_trait]
impl LeakTarget for SqliteLeakTarget {
    async fn insert(
        &self,
        ctx: &TenantContext,
        claimed: TenantId,
        key: i64,
        value: &str,
    ) -> Result<bool, String> {
        let mut tx = self.tenancy.begin(ctx).await.map_err(text)?;
        let result = sqlx::query(AssertSqlSafe(self.sql.insert.as_str()))
            .bind(claimed)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await;
        match result {
            Ok(_) => {
                tx.commit().await.map_err(text)?;
                Ok(true)
            }
            // SQLITE_CONSTRAINT_TRIGGER: the view's trigger refused a row of another tenant.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("1811") => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn read_all(&self, ctx: &TenantContext) -> Result<Vec<LeakRow>, String> {
        let mut conn = self.tenancy.acquire(ctx).await.map_err(text)?;
        sqlx::query_as(AssertSqlSafe(self.sql.read_all.as_str()))
            .fetch_all(&mut *conn)
            .await
            .map_err(text)
    }

    async fn read_key(&self, ctx: &TenantContext, key: i64) -> Result<Vec<LeakRow>, String> {
        let mut conn = self.tenancy.acquire(ctx).await.map_err(text)?;
        sqlx::query_as(AssertSqlSafe(self.sql.read_key.as_str()))
            .bind(key)
            .fetch_all(&mut *conn)
            .await
            .map_err(text)
    }

    async fn update_all(&self, ctx: &TenantContext, value: &str) -> Result<u64, String> {
        let mut conn = self.tenancy.acquire(ctx).await.map_err(text)?;
        let before = total_changes(&mut conn).await?;
        sqlx::query(AssertSqlSafe(self.sql.update_all.as_str()))
            .bind(value)
            .execute(&mut *conn)
            .await
            .map_err(text)?;
        Ok(total_changes(&mut conn).await? - before)
    }

    async fn delete_key(&self, ctx: &TenantContext, key: i64) -> Result<u64, String> {
        let mut tx = self.tenancy.begin(ctx).await.map_err(text)?;
        let before = total_changes(&mut tx).await?;
        sqlx::query(AssertSqlSafe(self.sql.delete_key.as_str()))
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(text)?;
        let affected = total_changes(&mut tx).await? - before;
        tx.commit().await.map_err(text)?;
        Ok(affected)
    }

    async fn unscoped_count(&self, tenants: &[TenantContext]) -> Result<i64, String> {
        let options = SqliteConnectOptions::new()
            .filename(&self.shared_file)
            .create_if_missing(false)
            .read_only(true);
        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .map_err(text)?;
        // The declared name exists only as each tenant connection's
        // temporary view.
        let mut seen = match sqlx::query_scalar::<_, i64>(AssertSqlSafe(self.sql.count.as_str()))
            .fetch_one(&mut conn)
            .await
        {
            Ok(n) => n,
            Err(sqlx::Error::Database(e)) if e.message().starts_with("no such table") => 0,
            Err(e) => return Err(e.to_string()),
        };
        for ctx in tenants {
            let record = self
                .tenancy
                .catalog()
                .get(ctx.tenant_id())
                .await
                .map_err(text)?
                .ok_or_else(|| format!("tenant {} is not in the catalog", ctx.tenant_id()))?;
            if matches!(record.placement, Placement::Database { .. }) {
                // A file tenant's rows never land in the shared file.
                let stray: i64 = sqlx::query_scalar(AssertSqlSafe(self.stray.as_str()))
                    .bind(ctx.tenant_id())
                    .fetch_one(&mut conn)
                    .await
                    .map_err(text)?;
                seen += stray;
            }
        }
        conn.close().await.map_err(text)?;
        Ok(seen)
    }

    async fn clear(&self, ctx: &TenantContext) -> Result<(), String> {
        let mut conn = self.tenancy.acquire(ctx).await.map_err(text)?;
        sqlx::query(AssertSqlSafe(self.sql.clear.as_str()))
            .execute(&mut *conn)
            .await
            .map_err(text)?;
        Ok(())
    }
}
