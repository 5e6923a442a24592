//! Two SQLite clusters (`a`, `b`) in a temporary directory, a catalog
//! file, `notes` declared (`notes_rows` in the shared files, `notes` in
//! tenant files, both with a `tenant_id` column).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use saas_core::{TenantContext, TenantId, TenantSlug};
use saas_tenancy::sqlite::{SqliteClusterConfig, SqliteTenancy, SqliteTenancyBuilder};
use saas_tenancy::{ClusterName, DynCatalog, NewTenant, Placement, SqliteCatalog, Strategy};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Connection, Executor, SqlSafeStr, SqliteConnection};

const SHARED: &str = "CREATE TABLE notes_rows (tenant_id BLOB NOT NULL, id INTEGER NOT NULL, \
    body TEXT NOT NULL, PRIMARY KEY (tenant_id, id))";
const TENANT: &str = "CREATE TABLE notes (tenant_id BLOB NOT NULL, id INTEGER NOT NULL, \
    body TEXT NOT NULL, PRIMARY KEY (tenant_id, id))";

pub(crate) struct Fixture {
    pub(crate) dir: PathBuf,
    pub(crate) catalog: DynCatalog,
    pub(crate) a: ClusterName,
    pub(crate) b: ClusterName,
    pub(crate) tenancy: SqliteTenancy,
}

fn file(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5))
}

fn builder_for(
    catalog: &DynCatalog,
    dir: &Path,
    a: &ClusterName,
    b: &ClusterName,
) -> SqliteTenancyBuilder {
    let migration = Migration::new(
        1,
        "notes".into(),
        MigrationType::Simple,
        TENANT.into_sql_str(),
        false,
    );
    let mut builder = SqliteTenancy::builder(Arc::clone(catalog))
        .tenant_tables(["notes"])
        .tenant_migrations(Migrator::with_migrations(vec![migration]));
    for cluster in [a, b] {
        builder = builder.cluster(SqliteClusterConfig::new(
            cluster.clone(),
            dir.join(cluster.as_str()).join("shared.sqlite"),
            dir.join(cluster.as_str()),
        ));
    }
    builder
}

impl Fixture {
    pub(crate) async fn new() -> Self {
        Self::over(None).await
    }

    /// A fixture whose tenancies use `catalog` (e.g. a PostgreSQL
    /// tenancy's), or a SQLite catalog file of its own.
    pub(crate) async fn over(catalog: Option<DynCatalog>) -> Self {
        let dir = std::env::temp_dir().join(format!("saas_sqlite_move_{}", uuid::Uuid::new_v4()));
        for cluster in ["a", "b"] {
            std::fs::create_dir_all(dir.join(cluster)).unwrap();
            let mut conn =
                SqliteConnection::connect_with(&file(&dir.join(cluster).join("shared.sqlite")))
                    .await
                    .unwrap();
            conn.execute(SHARED).await.unwrap();
            conn.close().await.unwrap();
        }
        let catalog = match catalog {
            Some(catalog) => catalog,
            None => {
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(file(&dir.join("catalog.sqlite")))
                    .await
                    .unwrap();
                let catalog = SqliteCatalog::new(pool);
                catalog.migrate().await.unwrap();
                Arc::new(catalog)
            }
        };
        let (a, b) = (
            ClusterName::new("a").unwrap(),
            ClusterName::new("b").unwrap(),
        );
        let tenancy = builder_for(&catalog, &dir, &a, &b).build().unwrap();
        tenancy.setup().await.unwrap();
        Fixture {
            dir,
            catalog,
            a,
            b,
            tenancy,
        }
    }

    /// A builder over the same catalog and files: another instance, as
    /// another process sharing them would hold.
    pub(crate) fn builder(&self) -> SqliteTenancyBuilder {
        builder_for(&self.catalog, &self.dir, &self.a, &self.b)
    }

    pub(crate) fn shared_file(&self, cluster: &ClusterName) -> PathBuf {
        self.dir.join(cluster.as_str()).join("shared.sqlite")
    }

    /// The file a placement lives in.
    pub(crate) fn file_of(&self, placement: &Placement) -> PathBuf {
        match placement {
            Placement::Database { cluster, database } => self
                .dir
                .join(cluster.as_str())
                .join(format!("{database}.sqlite")),
            other => self.shared_file(other.cluster()),
        }
    }

    pub(crate) async fn tenant(
        &self,
        slug: &str,
        strategy: Strategy,
        cluster: &ClusterName,
    ) -> TenantContext {
        let new = NewTenant::new(
            TenantSlug::parse(slug).unwrap(),
            slug,
            strategy,
            cluster.clone(),
        )
        .unwrap();
        let record = self.tenancy.provision(new).await.unwrap();
        TenantContext::new(record.id, record.slug)
    }

    /// Inserts `n` rows (ids 1..=n) in batches.
    pub(crate) async fn seed(&self, ctx: &TenantContext, n: i64) {
        let mut tx = self.tenancy.begin_immediate(ctx).await.unwrap();
        for id in 1..=n {
            sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, ?, ?)")
                .bind(ctx.tenant_id())
                .bind(id)
                .bind(format!("seed {id}"))
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }

    /// The tenant's rows (id, body) as the file of `placement` holds them,
    /// read without the library.
    pub(crate) async fn raw_rows(
        &self,
        placement: &Placement,
        tenant: TenantId,
    ) -> Vec<(i64, String)> {
        let path = self.file_of(placement);
        if !path.exists() {
            return Vec::new();
        }
        let table = match placement {
            Placement::Database { .. } => "notes",
            _ => "notes_rows",
        };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(5));
        let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, body FROM {table} WHERE tenant_id = ? ORDER BY id"
        )))
        .bind(tenant)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        rows
    }

    /// The tenant's rows through a scoped handle.
    pub(crate) async fn rows(
        &self,
        tenancy: &SqliteTenancy,
        ctx: &TenantContext,
    ) -> Vec<(i64, String)> {
        let mut conn = tenancy.acquire(ctx).await.unwrap();
        sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap()
    }

    pub(crate) async fn cleanup(self) {
        drop(self.tenancy);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
