//! Fleet migrations: every tenant reaches the latest version exactly once,
//! even when a run is killed midway; failures are skipped and reported;
//! a failing canary stops the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use saas_core::TenantId;
use saas_tenancy::Strategy;
use saas_tenancy::postgres::{MigrationOptions, ScopeMode, Weakness};
use saas_tenancy::testing::pg::{PgSandbox, tenant_migrations};
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType};
use tokio::sync::Notify;

use crate::pg_env::sandbox;

fn migration(version: i64, sql: &'static str) -> Migration {
    Migration::new(
        version,
        format!("v{version}").into(),
        MigrationType::Simple,
        sql.into_sql_str(),
        false,
    )
}

async fn versions(env: &PgSandbox, schema: &str) -> Vec<i64> {
    let sql = format!("SELECT version FROM {schema}._sqlx_migrations ORDER BY version");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(&env.admin)
        .await
        .unwrap()
}

/// The ledger's rows of one tenant, oldest first: (status, version).
async fn ledger(env: &PgSandbox, tenant: TenantId) -> Vec<(String, Option<i64>)> {
    sqlx::query_as(
        "SELECT status, version FROM saas_tenant_migrations WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(tenant)
    .fetch_all(&env.admin)
    .await
    .unwrap()
}

async fn table_exists(env: &PgSandbox, qualified: String) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(qualified)
        .fetch_one(&env.admin)
        .await
        .unwrap()
}

/// A v2 of two statements: the first works on every tenant, the second
/// fails where `notes` is gone — so a failing tenant is left half-migrated
/// unless the whole migration rolls back.
const V2_TWO_STEPS: &str =
    "CREATE TABLE labels (id int); ALTER TABLE notes ADD COLUMN pinned boolean";

#[tokio::test]
async fn a_killed_run_resumes_and_applies_each_migration_once() {
    let Some(mut env) = sandbox("migrate::resume", ScopeMode::Shared).await else {
        return;
    };
    let mut schemas = Vec::new();
    let mut ids = Vec::new();
    for i in 0..12 {
        let strategy = if i % 4 == 3 {
            Strategy::Database
        } else {
            Strategy::Schema
        };
        let ctx = env.tenant(&format!("m{i}"), strategy).await.unwrap();
        ids.push(ctx.tenant_id());
        if strategy == Strategy::Schema {
            schemas.push(saas_tenancy::TenantObjectName::for_tenant(ctx.tenant_id()).quoted());
        }
    }
    let mut v2 = tenant_migrations();
    // Slow enough that the run can be killed part-way; not idempotent, so
    // applying it twice would fail.
    v2.push(migration(
        2,
        "SELECT pg_sleep(0.05); ALTER TABLE notes ADD COLUMN pinned boolean NOT NULL DEFAULT false",
    ));
    let fleet = env.tenancy_with_migrations(v2).unwrap();
    assert!(
        fleet
            .audit()
            .await
            .unwrap()
            .iter()
            .any(|f| f.weakness == Weakness::MigrationsBehind),
        "the drift is visible before the run"
    );

    // Kill the run as soon as three tenants are done (not after a fixed
    // time: on a busy machine none might be done by then).
    let finished = Arc::new(AtomicUsize::new(0));
    let three_done = Arc::new(Notify::new());
    let (seen, notify) = (Arc::clone(&finished), Arc::clone(&three_done));
    let options = MigrationOptions::default()
        .with_concurrency(2)
        .with_progress(Arc::new(move |_| {
            if seen.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
                notify.notify_one();
            }
        }));
    tokio::select! {
        report = fleet.migrate_tenants(options) => panic!("the run was not cut short: {report:?}"),
        () = three_done.notified() => {}
    }
    let before_resume = finished.load(Ordering::SeqCst);
    assert!(before_resume >= 3, "some tenants finished before the kill");
    assert!(before_resume < 12, "some tenants were left for the resume");

    let report = fleet
        .migrate_tenants(MigrationOptions::default())
        .await
        .unwrap();
    assert_eq!(report.total, 12);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.migrated.len() + report.up_to_date.len(), 12);
    for schema in &schemas {
        assert_eq!(versions(&env, schema).await, vec![1, 2], "{schema}");
    }
    // A third run has nothing to do, and the drift is gone.
    let again = fleet
        .migrate_tenants(MigrationOptions::default())
        .await
        .unwrap();
    assert_eq!(again.up_to_date.len(), 12);
    assert!(
        !fleet
            .audit()
            .await
            .unwrap()
            .iter()
            .any(|f| f.weakness == Weakness::MigrationsBehind)
    );
    // The ledger: per tenant, v2 applied once — by the killed run or the
    // resume — and then found current. A tenant whose commit raced the
    // kill has no 'applied' row (it was cut before logging), only one of
    // the two in flight can be so; nothing failed.
    let mut unlogged = 0;
    for id in &ids {
        let rows = ledger(&env, *id).await;
        let applied = rows.iter().filter(|(s, _)| s == "applied").count();
        assert!(applied <= 1, "{id}: {rows:?}");
        unlogged += 1 - applied;
        assert!(
            rows.iter().all(|(s, v)| s != "failed" && *v == Some(2)),
            "{id}: {rows:?}"
        );
        assert_eq!(rows.last().unwrap().0, "current", "{id}: {rows:?}");
    }
    assert!(
        unlogged <= 2,
        "at most the two in-flight tenants: {unlogged}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn failures_are_skipped_and_reported_and_a_failing_canary_stops_the_run() {
    let Some(mut env) = sandbox("migrate::failures", ScopeMode::Shared).await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            env.tenant(&format!("f{i}"), Strategy::Schema)
                .await
                .unwrap()
                .tenant_id(),
        );
    }
    // Break one tenant: its notes table is gone, so v2 fails there.
    let broken = saas_tenancy::TenantObjectName::for_tenant(ids[2]).quoted();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {broken}.notes")))
        .execute(&env.admin)
        .await
        .unwrap();
    let mut v2 = tenant_migrations();
    v2.push(migration(2, V2_TWO_STEPS));
    let fleet = env.tenancy_with_migrations(v2).unwrap();

    let report = fleet
        .migrate_tenants(MigrationOptions::default())
        .await
        .unwrap();
    assert_eq!(report.migrated.len(), 3);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, ids[2]);
    // The failed tenant is unchanged (transactional DDL): still at v1,
    // and the statement before the failing one left nothing behind.
    assert_eq!(versions(&env, &broken).await, vec![1]);
    assert!(!table_exists(&env, format!("{broken}.labels")).await);
    for (i, id) in ids.iter().enumerate() {
        let schema = saas_tenancy::TenantObjectName::for_tenant(*id).quoted();
        let rows = ledger(&env, *id).await;
        if i == 2 {
            assert_eq!(rows, vec![("failed".to_owned(), None)]);
        } else {
            assert_eq!(rows, vec![("applied".to_owned(), Some(2))], "{i}");
            assert!(table_exists(&env, format!("{schema}.labels")).await);
        }
    }
    let error: String =
        sqlx::query_scalar("SELECT error FROM saas_tenant_migrations WHERE tenant_id = $1")
            .bind(ids[2])
            .fetch_one(&env.admin)
            .await
            .unwrap();
    assert!(error.contains("notes"), "{error}");

    // With the broken tenant as the canary, nothing else is attempted.
    let mut v3 = tenant_migrations();
    v3.push(migration(2, V2_TWO_STEPS));
    v3.push(migration(
        3,
        "ALTER TABLE notes ADD COLUMN archived boolean",
    ));
    let fleet = env.tenancy_with_migrations(v3).unwrap();
    let report = fleet
        .migrate_tenants(MigrationOptions::default().with_canaries(3))
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.migrated.len(), 2, "the canaries before it");
    assert_eq!(report.not_attempted.len(), 1);
    env.cleanup().await;
}

#[tokio::test]
async fn stop_on_first_failure_leaves_the_rest_untouched() {
    let Some(mut env) = sandbox("migrate::stop", ScopeMode::Shared).await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            env.tenant(&format!("x{i}"), Strategy::Schema)
                .await
                .unwrap()
                .tenant_id(),
        );
    }
    // Tenants migrate in id order (ids grow with creation): the second one
    // fails, after the first succeeded.
    let name = |i: usize| saas_tenancy::TenantObjectName::for_tenant(ids[i]).quoted();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {}.notes", name(1))))
        .execute(&env.admin)
        .await
        .unwrap();
    let mut v2 = tenant_migrations();
    v2.push(migration(2, V2_TWO_STEPS));
    let fleet = env.tenancy_with_migrations(v2).unwrap();
    let report = fleet
        .migrate_tenants(
            MigrationOptions::default()
                .with_canaries(0)
                .with_concurrency(1)
                .stop_on_first_failure(),
        )
        .await
        .unwrap();
    assert_eq!(report.migrated, vec![ids[0]], "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, ids[1]);
    assert_eq!(report.not_attempted, vec![ids[2], ids[3]], "{report:?}");
    assert_eq!(versions(&env, &name(0)).await, vec![1, 2]);
    for i in 1..4 {
        assert_eq!(versions(&env, &name(i)).await, vec![1], "{i}");
        assert!(!table_exists(&env, format!("{}.labels", name(i))).await);
    }
    for id in &ids[2..] {
        assert_eq!(ledger(&env, *id).await, vec![], "never attempted");
    }
    env.cleanup().await;
}

/// Both times of a ledger row come from the tenancy's injected clock.
#[tokio::test]
async fn ledger_rows_carry_the_injected_clock_times() {
    use chrono::TimeZone;
    let at = chrono::Utc
        .with_ymd_and_hms(2031, 5, 6, 7, 8, 9)
        .single()
        .unwrap();
    let clock = Arc::new(saas_core::ManualClock::new(at));
    let Some(mut env) =
        crate::pg_env::sandbox_with_clock("migrate::clock", ScopeMode::Shared, clock).await
    else {
        return;
    };
    let schema = env.tenant("clocked-s", Strategy::Schema).await.unwrap();
    let database = env.tenant("clocked-d", Strategy::Database).await.unwrap();
    let report = env
        .tenancy
        .migrate_tenants(MigrationOptions::default())
        .await
        .unwrap();
    assert_eq!(report.up_to_date.len(), 2, "{report:?}");
    let rows: Vec<(
        uuid::Uuid,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    )> = sqlx::query_as(
        "SELECT tenant_id, started_at, finished_at FROM saas_tenant_migrations ORDER BY id",
    )
    .fetch_all(&env.admin)
    .await
    .unwrap();
    let mut tenants: Vec<uuid::Uuid> = rows.iter().map(|r| r.0).collect();
    tenants.sort();
    let mut expected = vec![
        *schema.tenant_id().as_uuid(),
        *database.tenant_id().as_uuid(),
    ];
    expected.sort();
    assert_eq!(tenants, expected);
    for (_, started, finished) in rows {
        assert_eq!((started, finished), (at, at));
    }
    env.cleanup().await;
}

/// The ledger is the library's bookkeeping, not tenant data, although it
/// has a `tenant_id` column and sits in the shared schema: audit does not
/// report it, a row tenant's export does not contain it, an import cannot
/// write it, and deleting tenants leaves the history in place.
#[tokio::test]
async fn the_ledger_is_not_tenant_data() {
    let Some(mut env) = sandbox("migrate::ledger_not_data", ScopeMode::Shared).await else {
        return;
    };
    let row = env.tenant("ledger-row", Strategy::Shared).await.unwrap();
    let schema = env.tenant("ledger-schema", Strategy::Schema).await.unwrap();
    env.tenancy
        .migrate_tenants(MigrationOptions::default())
        .await
        .unwrap();
    let ledger = |admin: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM saas_tenant_migrations")
            .fetch_one(&admin)
            .await
            .unwrap()
    };
    assert_eq!(
        ledger(env.admin.clone()).await,
        1,
        "the schema tenant's row"
    );
    assert_eq!(env.tenancy.audit().await.unwrap(), vec![], "a clean setup");

    let archive = env.tenancy.export_tenant(row.tenant_id()).await.unwrap();
    let tables: Vec<&str> = archive
        .manifest
        .tables
        .iter()
        .map(|t| t.table.as_str())
        .collect();
    assert_eq!(tables, vec!["notes"]);

    // An archive naming the ledger is refused before anything is written.
    let mut forged = archive.clone();
    let data = format!(
        "{{\"id\":99,\"tenant_id\":\"{}\",\"version\":1,\"status\":\"applied\",\
         \"error\":null,\"started_at\":\"2030-01-01T00:00:00Z\",\
         \"finished_at\":\"2030-01-01T00:00:00Z\"}}\n",
        row.tenant_id()
    );
    let sha256: String = sqlx::query_scalar("SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex')")
        .bind(&data)
        .fetch_one(&env.admin)
        .await
        .unwrap();
    forged
        .manifest
        .tables
        .push(saas_tenancy::archive::ArchivedTable {
            table: "saas_tenant_migrations".to_owned(),
            tenant_column: Some("tenant_id".to_owned()),
            rows: 1,
            sha256,
        });
    forged
        .files
        .insert("saas_tenant_migrations".to_owned(), data);
    forged.verify().unwrap();
    let err = env.tenancy.import_tenant(&row, &forged).await.unwrap_err();
    assert!(
        matches!(&err, saas_tenancy::TenancyError::InvalidInput(m) if m.contains("saas_tenant_migrations")),
        "{err}"
    );
    assert_eq!(ledger(env.admin.clone()).await, 1);

    for ctx in [&row, &schema] {
        env.tenancy.delete_tenant(ctx.tenant_id()).await.unwrap();
    }
    assert_eq!(
        ledger(env.admin.clone()).await,
        1,
        "history outlives tenants"
    );
    env.cleanup().await;
}

/// The fan-out never exceeds the connection budget, whatever concurrency is
/// asked for: with a budget of 2 and a concurrency of 16, a migration that
/// sleeps is seen running on at most 2 tenants at once (and on 2, so the
/// run does fan out).
#[tokio::test]
async fn fan_out_is_bounded_by_the_connection_budget() {
    let Some(mut env) = sandbox("migrate::budget", ScopeMode::Shared).await else {
        return;
    };
    for i in 0..6 {
        env.tenant(&format!("b{i}"), Strategy::Schema)
            .await
            .unwrap();
    }
    let mut v2 = tenant_migrations();
    v2.push(migration(
        2,
        "SELECT pg_sleep(0.4) AS saas_budget_marker; ALTER TABLE notes ADD COLUMN b int",
    ));
    let fleet = env
        .tenancy_with(|b| {
            b.tenant_migrations(sqlx::migrate::Migrator::with_migrations(v2))
                .pool_limits(saas_tenancy::postgres::PoolLimits::new(2, 1))
        })
        .unwrap();
    let done = Arc::new(Notify::new());
    let watcher = {
        let admin = env.admin.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut most = 0_i64;
            loop {
                let running: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE state = 'active' AND query LIKE '%saas_budget_marker%' \
                     AND query NOT LIKE '%pg_stat_activity%'",
                )
                .fetch_one(&admin)
                .await
                .unwrap();
                most = most.max(running);
                tokio::select! {
                    () = done.notified() => return most,
                    () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                }
            }
        })
    };
    let report = fleet
        .migrate_tenants(
            MigrationOptions::default()
                .with_canaries(0)
                .with_concurrency(16),
        )
        .await
        .unwrap();
    done.notify_one();
    let most = watcher.await.unwrap();
    assert_eq!(report.migrated.len(), 6, "{report:?}");
    assert_eq!(most, 2, "tenants migrating at once, with a budget of 2");
    env.cleanup().await;
}

/// A table a fleet migration adds is usable by its tenant: through the
/// default privileges provisioning set (no `GRANT … ON ALL`, which scans
/// the whole catalog), and for a tenant provisioned before those existed
/// (simulated by revoking them) through the grants the migration then
/// runs — which also restore its default privileges.
#[tokio::test]
async fn tables_a_fleet_migration_adds_are_granted_to_their_tenant() {
    let Some(mut env) = sandbox("migrate::grants", ScopeMode::Shared).await else {
        return;
    };
    let fresh = env.tenant("g-fresh", Strategy::Schema).await.unwrap();
    let old = env.tenant("g-old", Strategy::Schema).await.unwrap();
    let database = env.tenant("g-db", Strategy::Database).await.unwrap();
    let default_acls = |schema: String| {
        let admin = env.admin.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_default_acl WHERE defaclnamespace = $1::regnamespace",
            )
            .bind(schema)
            .fetch_one(&admin)
            .await
            .unwrap();
            n
        }
    };
    let old_schema = saas_tenancy::TenantObjectName::for_tenant(old.tenant_id()).quoted();
    assert_eq!(default_acls(old_schema.clone()).await, 2);
    for kind in ["TABLES", "SEQUENCES"] {
        let privileges = if kind == "TABLES" {
            "SELECT, INSERT, UPDATE, DELETE"
        } else {
            "USAGE, SELECT, UPDATE"
        };
        let revoke = format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA {old_schema} REVOKE {privileges} ON {kind} FROM {old_schema}"
        );
        sqlx::query(sqlx::AssertSqlSafe(revoke))
            .execute(&env.admin)
            .await
            .unwrap();
    }
    assert_eq!(default_acls(old_schema.clone()).await, 0);

    let mut v2 = tenant_migrations();
    v2.push(migration(
        2,
        "CREATE TABLE labels (id bigserial PRIMARY KEY, name text)",
    ));
    let fleet = env.tenancy_with_migrations(v2).unwrap();
    let report = fleet
        .migrate_tenants(MigrationOptions::default())
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.migrated.len(), 3, "{report:?}");
    for ctx in [&fresh, &old, &database] {
        let mut tx = fleet.begin(ctx).await.unwrap();
        sqlx::query("INSERT INTO labels (name) VALUES ('granted')")
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", ctx.slug()));
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM labels")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(n, 1, "{}", ctx.slug());
        tx.commit().await.unwrap();
    }
    assert_eq!(
        default_acls(old_schema).await,
        2,
        "the old tenant's default privileges are back"
    );
    env.cleanup().await;
}
