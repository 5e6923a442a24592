//! Scoped access on SQLite: shared files behind tenant views, one file per
//! tenant, ATTACH refused, and the leak harness on both placements.

use std::sync::Arc;

use saas_core::TenantStatus;
use saas_tenancy::testing::leak::run_leak_harness;
use saas_tenancy::testing::sqlite::{SqliteLeakTarget, SqliteSandbox, total_changes};
use saas_tenancy::{NewTenant, Strategy, TenancyError};
use sqlx::Executor;

#[tokio::test]
async fn row_tenants_share_a_file_but_not_rows() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let a = sandbox.tenant("a", Strategy::Shared).await.unwrap();
    let b = sandbox.tenant("b", Strategy::Shared).await.unwrap();

    // The tenant column may be omitted: the view's trigger fills it in.
    for (ctx, body) in [(&a, "a1"), (&b, "b1")] {
        let mut conn = sandbox.tenancy.acquire(ctx).await.unwrap();
        sqlx::query("INSERT INTO notes (id, body) VALUES (1, ?)")
            .bind(body)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let mut conn = sandbox.tenancy.acquire(&a).await.unwrap();
    let rows: Vec<(saas_core::TenantId, String)> =
        sqlx::query_as("SELECT tenant_id, body FROM notes")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert_eq!(rows, vec![(a.tenant_id(), "a1".to_owned())]);

    // A row claiming B is refused; so is moving A's row to B.
    let err = sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 2, 'forged')")
        .bind(b.tenant_id())
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert_eq!(err.as_database_error().unwrap().code().unwrap(), "1811");
    assert!(
        sqlx::query("UPDATE notes SET tenant_id = ?")
            .bind(b.tenant_id())
            .execute(&mut *conn)
            .await
            .is_err()
    );
    // Updates and deletes without a WHERE touch only A's rows.
    // (Counted with total_changes(): SQLite reports 0 rows_affected for
    // writes through a view's INSTEAD OF triggers.)
    let before = total_changes(&mut conn).await.unwrap();
    conn.execute("UPDATE notes SET body = 'mine'")
        .await
        .unwrap();
    assert_eq!(total_changes(&mut conn).await.unwrap() - before, 1);
    let before = total_changes(&mut conn).await.unwrap();
    conn.execute("DELETE FROM notes").await.unwrap();
    assert_eq!(total_changes(&mut conn).await.unwrap() - before, 1);
    drop(conn);

    let mut conn = sandbox.tenancy.acquire(&b).await.unwrap();
    let left: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(left, vec!["b1".to_owned()]);
    drop(conn);

    // The deliberate escape hatch sees every tenant's rows in the table.
    let mut admin = sandbox
        .tenancy
        .unscoped_admin_connection(&sandbox.cluster, "test: count all rows")
        .await
        .unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM notes_rows")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(all, 1, "only b1 is left");
    sandbox.cleanup().await;
}

#[tokio::test]
async fn attach_is_refused_on_every_tenant_connection() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let row = sandbox.tenant("row", Strategy::Shared).await.unwrap();
    let db = sandbox.tenant("db", Strategy::Database).await.unwrap();
    let other = sandbox.tenant("other", Strategy::Database).await.unwrap();
    let other_file = sandbox.dir.join(format!(
        "{}.sqlite",
        saas_tenancy::TenantObjectName::for_tenant(other.tenant_id())
    ));
    assert!(other_file.exists());
    for ctx in [&row, &db] {
        let mut conn = sandbox.tenancy.acquire(ctx).await.unwrap();
        let sql = format!("ATTACH DATABASE '{}' AS theirs", other_file.display());
        let err = conn.execute(sqlx::AssertSqlSafe(sql)).await.unwrap_err();
        // The limit of attached databases is 0 on tenant connections (the
        // file exists and is readable, so nothing else refuses it).
        let refused = err.as_database_error().map(|e| e.message().to_owned());
        assert!(
            refused
                .as_deref()
                .is_some_and(|m| m.contains("too many attached databases")),
            "{err}"
        );
    }
    sandbox.cleanup().await;
}

#[tokio::test]
async fn database_tenants_live_in_their_own_files() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let a = sandbox.tenant("a", Strategy::Database).await.unwrap();
    let b = sandbox.tenant("b", Strategy::Database).await.unwrap();
    let mut tx = sandbox.tenancy.begin(&a).await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 1, 'a1')")
        .bind(a.tenant_id())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut conn = sandbox.tenancy.acquire(&b).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(n, 0);
    drop(conn);
    assert_eq!(sandbox.tenancy.pool_stats().await.open_pools, 2);
    sandbox.cleanup().await;
}

#[tokio::test]
async fn schemas_do_not_exist_and_suspended_tenants_are_refused() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let new = NewTenant::new(
        saas_core::TenantSlug::parse("s").unwrap(),
        "S",
        Strategy::Schema,
        sandbox.cluster.clone(),
    )
    .unwrap();
    assert!(matches!(
        sandbox.tenancy.provision(new).await.unwrap_err(),
        TenancyError::Unsupported(_)
    ));
    let a = sandbox.tenant("a", Strategy::Shared).await.unwrap();
    sandbox
        .tenancy
        .catalog()
        .set_status(a.tenant_id(), TenantStatus::Suspended)
        .await
        .unwrap();
    assert!(matches!(
        sandbox.tenancy.acquire(&a).await.unwrap_err(),
        TenancyError::TenantNotServable { .. }
    ));
    sandbox.cleanup().await;
}

/// Two row tenants in the shared file and two with files of their own,
/// side by side: at least 1,000 cases, so per placement.
#[test]
fn leak_harness_shared_file_and_tenant_files() {
    let runtime = crate::fixtures::harness_runtime();
    let sandbox = runtime.block_on(SqliteSandbox::new()).unwrap();
    let tenants = runtime.block_on(async {
        let mut tenants = Vec::new();
        let placements = [
            Strategy::Shared,
            Strategy::Database,
            Strategy::Shared,
            Strategy::Database,
        ];
        for (slug, strategy) in crate::leak::SLUGS.into_iter().zip(placements) {
            tenants.push(sandbox.tenant(slug, strategy).await.unwrap());
        }
        tenants
    });
    let target = Arc::new(
        SqliteLeakTarget::notes(sandbox.tenancy.clone(), sandbox.shared_file.clone()).unwrap(),
    );
    let result = run_leak_harness(runtime.handle(), target, tenants, crate::leak::cases());
    runtime.block_on(sandbox.cleanup());
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

#[tokio::test]
async fn tenant_files_migrate_and_tenants_delete() {
    use saas_tenancy::migration::MigrationOptions;
    use saas_tenancy::testing::sqlite::sqlite_migrations;
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType};

    let sandbox = SqliteSandbox::new().await.unwrap();
    let row = sandbox.tenant("row", Strategy::Shared).await.unwrap();
    let keep = sandbox.tenant("keep", Strategy::Shared).await.unwrap();
    let files: Vec<_> = [
        sandbox.tenant("f1", Strategy::Database).await.unwrap(),
        sandbox.tenant("f2", Strategy::Database).await.unwrap(),
        sandbox.tenant("f3", Strategy::Database).await.unwrap(),
    ]
    .into();
    for ctx in [&row, &keep] {
        let mut conn = sandbox.tenancy.acquire(ctx).await.unwrap();
        conn.execute("INSERT INTO notes (id, body) VALUES (1, 'x')")
            .await
            .unwrap();
    }

    // Break one file: its notes table is gone, so v2 fails there only.
    let mut conn = sandbox.tenancy.acquire(&files[1]).await.unwrap();
    conn.execute("DROP TABLE notes").await.unwrap();
    drop(conn);
    let mut v2 = sqlite_migrations();
    v2.push(Migration::new(
        2,
        "pinned".into(),
        MigrationType::Simple,
        "ALTER TABLE notes ADD COLUMN pinned INTEGER".into_sql_str(),
        false,
    ));
    let fleet = sandbox.tenancy_with_migrations(v2).unwrap();
    let report = fleet
        .migrate_tenants(MigrationOptions::default().with_canaries(0))
        .await
        .unwrap();
    assert_eq!(
        (report.migrated.len(), report.failed.len()),
        (2, 1),
        "{report:?}"
    );
    assert_eq!(report.failed[0].0, files[1].tenant_id());
    let again = fleet
        .migrate_tenants(MigrationOptions::default().with_canaries(0))
        .await
        .unwrap();
    assert_eq!(again.up_to_date.len(), 2, "nothing applied twice");

    // A table added later, never declared: deletion finds it by its
    // tenant column, in the file, not in a hand-kept list.
    let mut admin = fleet
        .unscoped_admin_connection(&sandbox.cluster, "test: add a table")
        .await
        .unwrap();
    admin
        .execute("CREATE TABLE attachments (tenant_id BLOB NOT NULL, name TEXT NOT NULL)")
        .await
        .unwrap();
    for ctx in [&row, &keep] {
        sqlx::query("INSERT INTO attachments (tenant_id, name) VALUES (?, 'a.pdf')")
            .bind(ctx.tenant_id())
            .execute(&mut admin)
            .await
            .unwrap();
    }
    drop(admin);

    // Delete a row tenant and a file tenant.
    fleet.delete_tenant(row.tenant_id()).await.unwrap();
    fleet.delete_tenant(files[0].tenant_id()).await.unwrap();
    fleet.delete_tenant(files[0].tenant_id()).await.unwrap();
    let mut admin = fleet
        .unscoped_admin_connection(&sandbox.cluster, "test: check deletion")
        .await
        .unwrap();
    let left: Vec<saas_core::TenantId> = sqlx::query_scalar("SELECT tenant_id FROM notes_rows")
        .fetch_all(&mut admin)
        .await
        .unwrap();
    assert_eq!(left, vec![keep.tenant_id()]);
    let left: Vec<saas_core::TenantId> = sqlx::query_scalar("SELECT tenant_id FROM attachments")
        .fetch_all(&mut admin)
        .await
        .unwrap();
    assert_eq!(left, vec![keep.tenant_id()], "the later table too");
    let file = sandbox.dir.join(format!(
        "{}.sqlite",
        saas_tenancy::TenantObjectName::for_tenant(files[0].tenant_id())
    ));
    assert!(!file.exists());
    assert!(fleet.acquire(&files[0]).await.is_err());
    sandbox.cleanup().await;
}

/// A deferred transaction that reads, then writes after another writer
/// committed, fails at once ("database is locked"); `begin_immediate`
/// waits its turn instead, so a check-then-insert works under concurrency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_immediate_serialises_read_then_write_transactions() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let a = sandbox.tenant("imm-a", Strategy::Shared).await.unwrap();
    let b = sandbox.tenant("imm-b", Strategy::Shared).await.unwrap();
    let insert = |ctx: &saas_core::TenantContext, id: i64| {
        sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, ?, 'x')")
            .bind(ctx.tenant_id())
            .bind(id)
    };
    let count = "SELECT count(*) FROM notes";

    // The failure `begin_immediate` exists for.
    let mut stale = sandbox.tenancy.begin(&a).await.unwrap();
    let _: i64 = sqlx::query_scalar(count)
        .fetch_one(&mut *stale)
        .await
        .unwrap();
    let mut other = sandbox.tenancy.begin(&b).await.unwrap();
    insert(&b, 1).execute(&mut *other).await.unwrap();
    other.commit().await.unwrap();
    let err = insert(&a, 1).execute(&mut *stale).await.unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");
    stale.rollback().await.unwrap();

    // With immediate transactions the second writer waits for the first.
    let mut first = sandbox.tenancy.begin_immediate(&a).await.unwrap();
    let seen: i64 = sqlx::query_scalar(count)
        .fetch_one(&mut *first)
        .await
        .unwrap();
    assert_eq!(seen, 0);
    let tenancy = sandbox.tenancy.clone();
    let b2 = b.clone();
    let second = tokio::spawn(async move {
        let mut tx = tenancy.begin_immediate(&b2).await?;
        let seen: i64 = sqlx::query_scalar(count).fetch_one(&mut *tx).await?;
        sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, ?, 'y')")
            .bind(b2.tenant_id())
            .bind(seen + 1)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok::<i64, Box<dyn std::error::Error + Send + Sync>>(seen)
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!second.is_finished(), "the second writer must wait");
    insert(&a, seen + 1).execute(&mut *first).await.unwrap();
    first.commit().await.unwrap();
    assert_eq!(second.await.unwrap().unwrap(), 1, "b saw its own row only");
}

/// A missing shared file is named in the setup error, not reported as
/// SQLite's bare "unable to open database file".
#[tokio::test]
async fn setup_names_a_missing_shared_file() {
    let dir = std::env::temp_dir().join(saas_tenancy::testing::unique_name("no_shared"));
    let missing = dir.join("shared.sqlite");
    let tenancy = saas_tenancy::sqlite::SqliteTenancy::builder(Arc::new(
        saas_tenancy::InMemoryCatalog::new(Arc::new(saas_core::SystemClock)),
    ))
    .cluster(saas_tenancy::sqlite::SqliteClusterConfig::new(
        saas_tenancy::ClusterName::new("local").unwrap(),
        missing.clone(),
        dir,
    ))
    .build()
    .unwrap();
    let err = tenancy.setup().await.unwrap_err();
    assert!(
        matches!(&err, TenancyError::InvalidInput(m) if m.contains(&missing.display().to_string())),
        "{err}"
    );
}

/// Hosts run the harness on their own table: `tasks(org, n, title)` with
/// the tenant in `org`, stored in the shared file as `tasks_all`, for row
/// and file tenants at once.
#[test]
fn leak_harness_runs_on_a_host_table() {
    use saas_core::{TenantContext, TenantSlug};
    use saas_tenancy::testing::sqlite::sqlite_migrations;
    use saas_tenancy::{SqlIdent, TenantTable};
    use sqlx::migrate::{Migration, MigrationType};
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{Connection, SqlSafeStr};

    const TASKS: &str = "(org BLOB NOT NULL, n INTEGER NOT NULL, title TEXT NOT NULL, \
                         PRIMARY KEY (org, n))";
    let runtime = crate::fixtures::harness_runtime();
    let sandbox = runtime.block_on(SqliteSandbox::new()).unwrap();
    let mut migrations = sqlite_migrations();
    migrations.push(Migration::new(
        2,
        "tasks".into(),
        MigrationType::Simple,
        sqlx::AssertSqlSafe(format!("CREATE TABLE tasks {TASKS}")).into_sql_str(),
        false,
    ));
    let table = TenantTable::new("tasks")
        .unwrap()
        .tenant_column("org")
        .unwrap()
        .stored_as("tasks_all")
        .unwrap();
    let tenancy = sandbox
        .builder(migrations)
        .unwrap()
        .tenant_table(table)
        .build()
        .unwrap();
    let tenants = runtime.block_on(async {
        let options = SqliteConnectOptions::new().filename(&sandbox.shared_file);
        let mut shared = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        let create = format!("CREATE TABLE tasks_all {TASKS}");
        shared.execute(sqlx::AssertSqlSafe(create)).await.unwrap();
        shared.close().await.unwrap();
        tenancy.setup().await.unwrap();
        let mut tenants = Vec::new();
        for (slug, strategy) in [
            ("host-a", Strategy::Shared),
            ("host-b", Strategy::Database),
            ("host-c", Strategy::Shared),
        ] {
            let slug = TenantSlug::parse(slug).unwrap();
            let new = NewTenant::new(slug, "host tenant", strategy, sandbox.cluster.clone());
            let record = tenancy.provision(new.unwrap()).await.unwrap();
            tenants.push(TenantContext::new(record.id, record.slug));
        }
        tenants
    });
    let ident = |s: &str| SqlIdent::new(s).unwrap();
    // Only declared tables can be targets.
    let undeclared = SqliteLeakTarget::new(
        tenancy.clone(),
        sandbox.shared_file.clone(),
        &ident("tasks_all"),
        &ident("n"),
        &ident("title"),
    );
    assert!(matches!(undeclared, Err(TenancyError::InvalidInput(_))));
    let target = SqliteLeakTarget::new(
        tenancy,
        sandbox.shared_file.clone(),
        &ident("tasks"),
        &ident("n"),
        &ident("title"),
    )
    .unwrap();
    let result = run_leak_harness(runtime.handle(), Arc::new(target), tenants, 200);
    runtime.block_on(sandbox.cleanup());
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
