//! The per-tenant migration ledger of a SQLite cluster: one row per tenant
//! attempt of a fleet migration, as PostgreSQL's `saas_tenant_migrations`.
//!
//! It lives in a file of its own in the cluster's tenant directory,
//! `saas_tenant_migrations.sqlite`, rather than in the shared file or the
//! catalog:
//! - the shared file belongs to the host's shared migrations, and every
//!   table there with a tenant column is tenant data — exported with a row
//!   tenant, deleted with it, and reported by `audit()` as undeclared — while
//!   the ledger is history that must outlive the tenant;
//! - the catalog is any [`Catalog`](crate::Catalog), often not SQLite;
//! - the tenant directory is the library's own, sits with the files the
//!   ledger describes and is shared by every process migrating them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Executor;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::error::TenancyError;
use crate::fleet::LedgerEntry;
use crate::placement::ClusterName;

/// The ledger file's name in a cluster's tenant directory.
pub(super) const LEDGER_FILE: &str = "saas_tenant_migrations.sqlite";

const LEDGER_TABLE: &str = "CREATE TABLE IF NOT EXISTS saas_tenant_migrations (\
    id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, version INTEGER, \
    status TEXT NOT NULL CHECK (status IN ('applied', 'current', 'failed')), \
    error TEXT, started_at TEXT NOT NULL, finished_at TEXT NOT NULL)";

const LEDGER_INDEX: &str = "CREATE INDEX IF NOT EXISTS saas_tenant_migrations_tenant \
    ON saas_tenant_migrations (tenant_id, id)";

/// The ledger file of the cluster whose tenant files live in `tenant_dir`.
pub(super) fn ledger_file(tenant_dir: &Path) -> PathBuf {
    tenant_dir.join(LEDGER_FILE)
}

/// The open ledgers of one fleet run, one per cluster.
pub(super) struct Ledgers {
    pools: HashMap<ClusterName, SqlitePool>,
}

impl Ledgers {
    /// Opens (creating if needed) the ledger of each cluster. One
    /// connection each: appends of one process queue in the pool, other
    /// processes wait on the busy timeout.
    pub(super) async fn open<'a>(
        clusters: impl Iterator<Item = (&'a ClusterName, &'a Path)>,
    ) -> Result<Self, TenancyError> {
        let mut pools = HashMap::new();
        for (name, dir) in clusters {
            let options = SqliteConnectOptions::new()
                .filename(ledger_file(dir))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(0)
                .connect_with(options)
                .await?;
            pool.execute(LEDGER_TABLE).await?;
            pool.execute(LEDGER_INDEX).await?;
            pools.insert(name.clone(), pool);
        }
        Ok(Self { pools })
    }

    /// Appends `entry` to `cluster`'s ledger.
    pub(super) async fn append(
        &self,
        cluster: &ClusterName,
        entry: LedgerEntry,
    ) -> Result<(), TenancyError> {
        let pool = self
            .pools
            .get(cluster)
            .ok_or_else(|| TenancyError::UnknownCluster(cluster.to_string()))?;
        sqlx::query(
            "INSERT INTO saas_tenant_migrations \
             (tenant_id, version, status, error, started_at, finished_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(entry.tenant.to_string())
        .bind(entry.version)
        .bind(entry.status)
        .bind(entry.error)
        .bind(entry.started)
        .bind(entry.finished)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Closes every ledger connection.
    pub(super) async fn close(self) {
        for pool in self.pools.into_values() {
            pool.close().await;
        }
    }
}
