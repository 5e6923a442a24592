//! Tenant migrations across the SQLite fleet: canaries first, then a
//! bounded fan-out, each tenant under its lock and in one transaction, each
//! attempt appended to the cluster's ledger (see `ledger.rs`), resumable.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{Connection, SqliteConnection};

use super::SqliteTenancy;
use super::ledger::{Ledgers, ledger_file};
use super::ops::file_version;
use crate::error::TenancyError;
use crate::fleet::{self, Attempt, LedgerEntry, is_migratable};
use crate::migration::{MigrationOptions, MigrationReport};
use crate::placement::{ClusterName, Placement};
use crate::record::{ListOptions, TenantRecord};

impl SqliteTenancy {
    /// Applies the tenant migrations to every active or suspended tenant
    /// file, canaries first and one by one (a failing canary stops the
    /// run), then up to [`MigrationOptions::concurrency`] files at once —
    /// capped by the pool budget ([`PoolLimits::budget`]), since each
    /// migration opens a connection (and SQLite a thread) of its own.
    ///
    /// - Each tenant migrates under its lock, so it never interleaves with
    ///   provisioning, suspension, deletion, export or import of that
    ///   tenant in any process sharing the files; a tenant deleted after
    ///   the run listed it is skipped and reported as not attempted, a
    ///   suspended one is migrated.
    /// - Each tenant migrates in one `BEGIN IMMEDIATE` transaction: a
    ///   failing migration leaves its file unchanged (SQLite DDL is
    ///   transactional), the tenant is reported failed and the others go
    ///   on — or nothing more starts with
    ///   [`MigrationOptions::stop_on_first_failure`]. Migrations marked
    ///   `no_tx` cannot run inside it and fail.
    /// - Each attempt (tenant, version, status `applied`/`current`/`failed`,
    ///   error, start and finish from the injected clock) is appended to
    ///   the ledger in the cluster's tenant directory
    ///   ([`SqliteTenancy::migration_ledger`]).
    /// - A run killed at any moment is resumed by running again: each
    ///   file's `_sqlx_migrations` says what it has, and an interrupted
    ///   tenant's transaction never committed, so nothing is applied twice.
    ///
    /// ```no_run
    /// # async fn run(tenancy: saas_tenancy::sqlite::SqliteTenancy) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use saas_tenancy::migration::MigrationOptions;
    ///
    /// let options = MigrationOptions::default()
    ///     .with_canaries(2)
    ///     .with_concurrency(8)
    ///     .with_progress(Arc::new(|p| eprintln!("{}/{} {}", p.done, p.total, p.tenant)));
    /// let report = tenancy.migrate_tenants(options).await?;
    /// for (tenant, error) in &report.failed {
    ///     eprintln!("{tenant} left unchanged: {error}");
    /// }
    /// // Not attempted (a canary failed): run again once it is fixed.
    /// assert!(report.not_attempted.len() <= report.total);
    /// # Ok(()) }
    /// ```
    ///
    /// [`PoolLimits::budget`]: crate::registry::PoolLimits::budget
    pub async fn migrate_tenants(
        &self,
        options: MigrationOptions,
    ) -> Result<MigrationReport, TenancyError> {
        let ledgers = Ledgers::open(
            self.inner
                .clusters
                .values()
                .map(|c| (&c.name, c.tenant_dir.as_path())),
        )
        .await?;
        let result = self.migrate_with(&options, &ledgers).await;
        ledgers.close().await;
        result
    }

    /// The migration ledger file of `cluster` (a SQLite file holding the
    /// `saas_tenant_migrations` table, created by the first
    /// [`SqliteTenancy::migrate_tenants`]).
    pub fn migration_ledger(
        &self,
        cluster: &ClusterName,
    ) -> Result<std::path::PathBuf, TenancyError> {
        Ok(ledger_file(&self.cluster(cluster)?.tenant_dir))
    }

    async fn migrate_with(
        &self,
        options: &MigrationOptions,
        ledgers: &Ledgers,
    ) -> Result<MigrationReport, TenancyError> {
        let tenants = self.migratable_tenants().await?;
        // At most the connection budget at once: each tenant in flight
        // holds a connection (and a SQLite thread) of its own.
        let limit = options
            .concurrency
            .min(self.inner.registry.limits().budget as usize);
        fleet::run(&tenants, options, limit, |record| {
            self.migrate_locked(record, ledgers)
        })
        .await
    }

    async fn migratable_tenants(&self) -> Result<Vec<TenantRecord>, TenancyError> {
        let mut tenants = self
            .inner
            .catalog
            .list_all(&ListOptions::default().with_limit(1000))
            .await?;
        tenants.retain(|t| {
            matches!(t.placement, Placement::Database { .. }) && is_migratable(t.status)
        });
        Ok(tenants)
    }

    /// Migrates one tenant under its lock and appends the attempt to the
    /// ledger; an error here is the ledger's (the run cannot record).
    async fn migrate_locked(
        &self,
        listed: &TenantRecord,
        ledgers: &Ledgers,
    ) -> Result<Attempt, TenancyError> {
        let started = self.inner.clock.now();
        let (outcome, cluster) = match self.lock_tenant(listed.id).await {
            Ok((_guard, record)) => {
                // The record as it is now, under the lock: a delete that
                // ran since the listing has removed the file.
                if !is_migratable(record.status) {
                    tracing::info!(tenant = %record.id, status = %record.status,
                        "tenant migration skipped: no longer active or suspended");
                    return Ok(Attempt::Gone);
                }
                let outcome = self.migrate_file(&record).await;
                (outcome, record.placement.cluster().clone())
            }
            Err(TenancyError::TenantNotFound(_)) => return Ok(Attempt::Gone),
            Err(e) => (Err(e), listed.placement.cluster().clone()),
        };
        let entry = LedgerEntry::new(listed.id, &outcome, started, self.inner.clock.now());
        ledgers.append(&cluster, entry).await?;
        Ok(Attempt::Done(outcome))
    }

    #[tracing::instrument(name = "tenancy.migrate_tenant", skip_all, fields(tenant_id = %record.id, backend = "sqlite"))]
    async fn migrate_file(&self, record: &TenantRecord) -> Result<(i64, bool), TenancyError> {
        let (Some(migrator), Some(file)) = (&self.inner.tenant_migrator, self.tenant_file(record)?)
        else {
            return Ok((0, false));
        };
        let mut conn = open_tenant_file(&file).await?;
        let result = async {
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            let before = file_version(&mut tx).await;
            // Each migration becomes a savepoint of this transaction, so a
            // failure in any of them leaves the file as it was.
            migrator
                .run_direct(None, &mut *tx, false)
                .await
                .map_err(|e| TenancyError::InvalidInput(format!("tenant migration failed: {e}")))?;
            let after = file_version(&mut tx).await;
            tx.commit().await?;
            Ok::<_, TenancyError>((after, after > before))
        }
        .await;
        let closed = conn.close().await;
        let reached = result?;
        closed?;
        Ok(reached)
    }
}

async fn open_tenant_file(file: &Path) -> Result<SqliteConnection, TenancyError> {
    let options = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        // Application writers hold the file briefly; wait for them.
        .busy_timeout(Duration::from_secs(5));
    Ok(SqliteConnection::connect_with(&options).await?)
}
