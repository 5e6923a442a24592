//! Fleet migrations on SQLite, as on PostgreSQL: a killed run resumes and
//! applies each migration exactly once, a failing tenant is left unchanged
//! while the others go on, a failing canary stops the run, every attempt is
//! in the ledger, and each tenant migrates under its lock.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::{TenantId, TenantSlug, TenantStatus};
use saas_tenancy::migration::MigrationOptions;
use saas_tenancy::registry::PoolLimits;
use saas_tenancy::sqlite::{SqliteClusterConfig, SqliteTenancy, Weakness};
use saas_tenancy::testing::sqlite::{SqliteSandbox, sqlite_migrations};
use saas_tenancy::{
    Catalog, DynCatalog, LifecycleEvent, LifecycleHooks, ListOptions, NewTenant, Strategy,
    TenancyError, TenantObjectName, TenantPage, TenantRecord, TenantTable,
};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqlSafeStr, SqliteConnection};
use tokio::sync::Notify;

/// Keeps a migration busy long enough for a run to be killed inside it
/// (SQLite has no sleep function).
const SLOW: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
    WHERE x < 200000) SELECT count(*) FROM c;";

fn migration(version: i64, sql: String) -> Migration {
    Migration::new(
        version,
        format!("v{version}").into(),
        MigrationType::Simple,
        // Test-owned SQL, no input in it.
        sqlx::AssertSqlSafe(sql).into_sql_str(),
        false,
    )
}

/// v1 (notes), v2 creates `applied` and logs itself, v3 logs itself and
/// alters notes: neither is idempotent, and `applied` counts applications.
fn counted_migrations() -> Vec<Migration> {
    let mut all = sqlite_migrations();
    all.push(migration(
        2,
        format!("CREATE TABLE applied (version INTEGER NOT NULL); INSERT INTO applied VALUES (2); {SLOW}"),
    ));
    all.push(migration(
        3,
        format!(
            "INSERT INTO applied VALUES (3); ALTER TABLE notes ADD COLUMN pinned INTEGER; {SLOW}"
        ),
    ));
    all
}

fn file_of(sandbox: &SqliteSandbox, tenant: TenantId) -> PathBuf {
    sandbox
        .dir
        .join(format!("{}.sqlite", TenantObjectName::for_tenant(tenant)))
}

async fn open(path: &Path) -> SqliteConnection {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .read_only(true);
    SqliteConnection::connect_with(&options).await.unwrap()
}

/// The versions in a tenant file's `_sqlx_migrations`, and how many times
/// each counted migration ran (`applied`, when it exists).
async fn file_state(path: &Path) -> (Vec<i64>, Vec<(i64, i64)>) {
    let mut conn = open(path).await;
    let versions = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let has_applied: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'applied')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let applied = if has_applied {
        sqlx::query_as("SELECT version, count(*) FROM applied GROUP BY version ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    } else {
        Vec::new()
    };
    conn.close().await.unwrap();
    (versions, applied)
}

/// The ledger rows: (tenant, version, status, error).
type LedgerRow = (String, Option<i64>, String, Option<String>);

async fn ledger(fleet: &SqliteTenancy, sandbox: &SqliteSandbox) -> Vec<LedgerRow> {
    let path = fleet.migration_ledger(&sandbox.cluster).unwrap();
    assert!(path.starts_with(&sandbox.dir), "beside the tenant files");
    let mut conn = open(&path).await;
    let rows = sqlx::query_as(
        "SELECT tenant_id, version, status, error FROM saas_tenant_migrations ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    rows
}

async fn behind(fleet: &SqliteTenancy) -> usize {
    fleet
        .audit()
        .await
        .unwrap()
        .iter()
        .filter(|f| f.weakness == Weakness::MigrationsBehind)
        .count()
}

/// Database tenants in the order the catalog lists them (the order runs
/// take them in), plus one row tenant that runs must leave alone.
async fn file_tenants(sandbox: &SqliteSandbox, prefix: &str, n: usize) -> Vec<TenantId> {
    for i in 0..n {
        sandbox
            .tenant(&format!("{prefix}{i}"), Strategy::Database)
            .await
            .unwrap();
    }
    sandbox
        .tenant(&format!("{prefix}-row"), Strategy::Shared)
        .await
        .unwrap();
    let page = sandbox
        .tenancy
        .catalog()
        .list(&ListOptions::default().with_limit(1000))
        .await
        .unwrap();
    page.tenants
        .iter()
        .filter(|t| t.placement.strategy() == Strategy::Database)
        .map(|t| t.id)
        .collect()
}

#[tokio::test]
async fn sqlite_a_killed_run_resumes_and_applies_each_migration_once() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let ids = file_tenants(&sandbox, "k", 10).await;
    let fleet = sandbox
        .tenancy_with_migrations(counted_migrations())
        .unwrap();
    assert_eq!(behind(&fleet).await, 10, "the drift is visible before");

    // Kill the run (abort its task) once three tenants are done, while
    // others are inside their migration.
    let finished = Arc::new(AtomicUsize::new(0));
    let kill = Arc::new(Notify::new());
    let (seen, signal) = (Arc::clone(&finished), Arc::clone(&kill));
    let options = MigrationOptions::default()
        .with_concurrency(3)
        .with_progress(Arc::new(move |_| {
            if seen.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
                signal.notify_one();
            }
        }));
    let run = tokio::spawn({
        let fleet = fleet.clone();
        async move { fleet.migrate_tenants(options).await }
    });
    kill.notified().await;
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled(), "the run was killed");
    let killed_at = finished.load(Ordering::SeqCst);
    assert!((3..10).contains(&killed_at), "killed midway: {killed_at}");

    // One transaction per tenant: each file is at v1 or v3, never between.
    let mut done_before = 0;
    for id in &ids {
        let (versions, _) = file_state(&file_of(&sandbox, *id)).await;
        match versions.as_slice() {
            [1] => {}
            [1, 2, 3] => done_before += 1,
            other => panic!("tenant {id} half-migrated: {other:?}"),
        }
    }
    assert!(done_before < 10, "some tenants were left for the resume");

    let report = fleet
        .migrate_tenants(MigrationOptions::default())
        .await
        .unwrap();
    assert_eq!(report.total, 10, "row tenants have no file to migrate");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.migrated.len(), 10 - done_before, "{report:?}");
    assert_eq!(report.up_to_date.len(), done_before);
    for id in &ids {
        let state = file_state(&file_of(&sandbox, *id)).await;
        assert_eq!(state, (vec![1, 2, 3], vec![(2, 1), (3, 1)]), "{id}");
    }
    // A third run has nothing to do, and the drift is gone.
    let again = fleet
        .migrate_tenants(MigrationOptions::default())
        .await
        .unwrap();
    assert_eq!(again.up_to_date.len(), 10);
    // No drift, and the ledger file is neither an orphan tenant file nor
    // a table of the shared file: the audit is clean.
    assert_eq!(behind(&fleet).await, 0);
    assert!(fleet.audit().await.unwrap().is_empty());

    // The ledger has every attempt of the two full runs, none failed.
    let rows = ledger(&fleet, &sandbox).await;
    assert!(rows.iter().all(|r| r.2 != "failed"), "{rows:?}");
    for id in &ids {
        let mine: Vec<_> = rows.iter().filter(|r| r.0 == id.to_string()).collect();
        assert!(mine.len() >= 2, "{id}: {mine:?}");
        let last = mine.last().unwrap();
        assert_eq!((last.1, last.2.as_str()), (Some(3), "current"));
    }
    sandbox.cleanup().await;
}

#[tokio::test]
async fn sqlite_a_failing_tenant_is_left_unchanged_and_a_failing_canary_stops_the_run() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let ids = file_tenants(&sandbox, "f", 4).await;
    // Break the third tenant: without notes, v3 fails there after v2 ran.
    let broken = ids[2];
    let mut conn = SqliteConnection::connect_with(
        &SqliteConnectOptions::new().filename(file_of(&sandbox, broken)),
    )
    .await
    .unwrap();
    sqlx::query("DROP TABLE notes")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let fleet = sandbox
        .tenancy_with_migrations(counted_migrations())
        .unwrap();
    let report = fleet
        .migrate_tenants(MigrationOptions::default())
        .await
        .unwrap();
    assert_eq!(report.migrated.len(), 3, "{report:?}");
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, broken);
    // Unchanged: v2 ran in the same transaction as the failing v3, and
    // neither its table nor its record survived.
    assert_eq!(
        file_state(&file_of(&sandbox, broken)).await,
        (vec![1], vec![])
    );
    let rows = ledger(&fleet, &sandbox).await;
    let failed: Vec<_> = rows.iter().filter(|r| r.2 == "failed").collect();
    assert_eq!(failed.len(), 1, "{rows:?}");
    assert_eq!(failed[0].0, broken.to_string());
    assert!(failed[0].3.as_deref().is_some_and(|e| e.contains("notes")));
    assert_eq!(rows.len(), 4, "one row per attempt");

    // The broken tenant as the third canary: the canaries before it
    // migrate, the tenant after it is not attempted and keeps its file.
    let mut v4 = counted_migrations();
    v4.push(migration(4, "INSERT INTO applied VALUES (4)".to_owned()));
    let fleet = sandbox.tenancy_with_migrations(v4).unwrap();
    let report = fleet
        .migrate_tenants(MigrationOptions::default().with_canaries(3))
        .await
        .unwrap();
    assert_eq!(report.migrated, ids[..2].to_vec(), "{report:?}");
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.not_attempted, vec![ids[3]]);
    assert_eq!(
        file_state(&file_of(&sandbox, ids[3])).await.0,
        vec![1, 2, 3]
    );
    assert_eq!(
        file_state(&file_of(&sandbox, ids[0])).await.0,
        vec![1, 2, 3, 4]
    );
    assert_eq!(ledger(&fleet, &sandbox).await.len(), 7);

    // Stop on first failure, no canaries, one at a time: nothing after the
    // failure starts.
    let report = fleet
        .migrate_tenants(
            MigrationOptions::default()
                .with_canaries(0)
                .with_concurrency(1)
                .stop_on_first_failure(),
        )
        .await
        .unwrap();
    assert_eq!(report.up_to_date, ids[..2].to_vec(), "{report:?}");
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.not_attempted, vec![ids[3]]);
    sandbox.cleanup().await;
}

/// A catalog that, right after a run lists the tenants, lets another
/// instance delete one tenant and suspend another: the run's listing is
/// stale by the time it reaches them.
#[derive(Debug)]
struct ChangesAfterListing {
    inner: DynCatalog,
    other: SqliteTenancy,
    delete: TenantId,
    suspend: TenantId,
    changed: AtomicBool,
}

#[async_trait]
impl Catalog for ChangesAfterListing {
    async fn create(&self, tenant: NewTenant) -> Result<TenantRecord, TenancyError> {
        self.inner.create(tenant).await
    }
    async fn get(&self, id: TenantId) -> Result<Option<TenantRecord>, TenancyError> {
        self.inner.get(id).await
    }
    async fn get_by_slug(&self, slug: &TenantSlug) -> Result<Option<TenantRecord>, TenancyError> {
        self.inner.get_by_slug(slug).await
    }
    async fn list(&self, options: &ListOptions) -> Result<TenantPage, TenancyError> {
        let page = self.inner.list(options).await?;
        if !self.changed.swap(true, Ordering::SeqCst) {
            self.other.delete_tenant(self.delete).await?;
            self.other.suspend(self.suspend).await?;
        }
        Ok(page)
    }
    async fn set_status(
        &self,
        id: TenantId,
        to: TenantStatus,
    ) -> Result<TenantRecord, TenancyError> {
        self.inner.set_status(id, to).await
    }
}

fn fleet_over(
    sandbox: &SqliteSandbox,
    catalog: DynCatalog,
    migrations: Vec<Migration>,
) -> SqliteTenancy {
    SqliteTenancy::builder(catalog)
        .cluster(SqliteClusterConfig::new(
            sandbox.cluster.clone(),
            sandbox.shared_file.clone(),
            sandbox.dir.clone(),
        ))
        .tenant_table(TenantTable::new("notes").unwrap())
        .tenant_migrations(Migrator::with_migrations(migrations))
        .build()
        .unwrap()
}

#[tokio::test]
async fn sqlite_a_tenant_deleted_during_the_run_is_skipped_and_a_suspended_one_migrated() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let ids = file_tenants(&sandbox, "d", 3).await;
    let (deleted, suspended) = (ids[1], ids[2]);
    let catalog = Arc::new(ChangesAfterListing {
        inner: Arc::clone(sandbox.tenancy.catalog()),
        other: sandbox.tenancy.clone(),
        delete: deleted,
        suspend: suspended,
        changed: AtomicBool::new(false),
    });
    let fleet = fleet_over(&sandbox, catalog, counted_migrations());
    let report = fleet
        .migrate_tenants(MigrationOptions::default())
        .await
        .unwrap();
    assert_eq!(report.total, 3, "listed before the changes");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.not_attempted, vec![deleted]);
    let mut migrated = report.migrated.clone();
    migrated.sort();
    let mut expected = vec![ids[0], suspended];
    expected.sort();
    assert_eq!(migrated, expected);
    assert!(
        !file_of(&sandbox, deleted).exists(),
        "a deleted tenant's file is not recreated"
    );
    assert_eq!(
        file_state(&file_of(&sandbox, suspended)).await.0,
        vec![1, 2, 3]
    );
    let rows = ledger(&fleet, &sandbox).await;
    assert!(rows.iter().all(|r| r.0 != deleted.to_string()), "{rows:?}");
    sandbox.cleanup().await;
}

/// Pauses inside the `StatusChanged` hook — under the tenant's lock —
/// and logs when it leaves.
#[derive(Debug)]
struct SlowHook {
    entered: Arc<Notify>,
    log: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl LifecycleHooks for SlowHook {
    async fn on_event(&self, event: &LifecycleEvent) -> Result<(), TenancyError> {
        if let LifecycleEvent::StatusChanged { .. } = event {
            self.entered.notify_one();
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.log.lock().unwrap().push("suspend done".to_owned());
        }
        Ok(())
    }
}

#[tokio::test]
async fn sqlite_a_tenant_migrates_only_when_its_other_operations_are_done() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let ids = file_tenants(&sandbox, "l", 1).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let entered = Arc::new(Notify::new());
    let suspender = sandbox
        .builder(sqlite_migrations())
        .unwrap()
        .hooks(Arc::new(SlowHook {
            entered: Arc::clone(&entered),
            log: Arc::clone(&log),
        }))
        .build()
        .unwrap();
    let id = ids[0];
    let suspend = tokio::spawn(async move { suspender.suspend(id).await });
    entered.notified().await;

    // A quick migration: without the lock it would finish long before
    // the hook does.
    let mut quick = sqlite_migrations();
    quick.push(migration(
        2,
        "ALTER TABLE notes ADD COLUMN pinned INTEGER".to_owned(),
    ));
    let fleet = sandbox.tenancy_with_migrations(quick).unwrap();
    let progress_log = Arc::clone(&log);
    let report = fleet
        .migrate_tenants(
            MigrationOptions::default().with_progress(Arc::new(move |p| {
                progress_log
                    .lock()
                    .unwrap()
                    .push(format!("migrated {:?}", p.outcome));
            })),
        )
        .await
        .unwrap();
    suspend.await.unwrap().unwrap();
    assert_eq!(report.migrated, vec![ids[0]]);
    assert_eq!(
        *log.lock().unwrap(),
        vec!["suspend done".to_owned(), "migrated Ok(2)".to_owned()],
        "the migration waited for the suspension holding the lock"
    );
    sandbox.cleanup().await;
}

/// The most attempts the ledger shows under way at one moment (each row
/// spans its tenant's attempt, start to finish).
async fn most_at_once(fleet: &SqliteTenancy, sandbox: &SqliteSandbox) -> usize {
    let path = fleet.migration_ledger(&sandbox.cluster).unwrap();
    let mut conn = open(&path).await;
    let spans: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        sqlx::query_as("SELECT started_at, finished_at FROM saas_tenant_migrations")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, f)| s <= start && start < f)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn sqlite_fan_out_is_bounded_by_the_concurrency_and_the_pool_budget() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    file_tenants(&sandbox, "c", 6).await;
    let fleet = sandbox
        .builder(counted_migrations())
        .unwrap()
        .pool_limits(PoolLimits::new(2, 1))
        .build()
        .unwrap();
    let report = fleet
        .migrate_tenants(
            MigrationOptions::default()
                .with_canaries(0)
                .with_concurrency(8),
        )
        .await
        .unwrap();
    assert_eq!(report.migrated.len(), 6, "{report:?}");
    assert_eq!(
        most_at_once(&fleet, &sandbox).await,
        2,
        "a budget of 2 connections caps a concurrency of 8"
    );
    sandbox.cleanup().await;
}
