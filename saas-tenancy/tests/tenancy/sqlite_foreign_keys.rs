//! SQLite row tenants whose tables reference each other: deleting a tenant
//! empties children before parents whatever order the tables were created
//! in, and an import inserts parents before children.

use saas_core::{TenantContext, TenantSlug};
use saas_tenancy::testing::sqlite::{SqliteSandbox, sqlite_migrations};
use saas_tenancy::{NewTenant, Strategy, TenantTable};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Executor, SqliteConnection};

/// The parent is created first, so the file lists it first: deleting in
/// creation order would delete projects that tasks still reference.
const TABLES: [&str; 2] = [
    "CREATE TABLE projects_rows (tenant_id BLOB NOT NULL, id INTEGER NOT NULL, \
     name TEXT NOT NULL, PRIMARY KEY (tenant_id, id))",
    "CREATE TABLE tasks_rows (tenant_id BLOB NOT NULL, id INTEGER NOT NULL, \
     project_id INTEGER NOT NULL, title TEXT NOT NULL, PRIMARY KEY (tenant_id, id), \
     FOREIGN KEY (tenant_id, project_id) REFERENCES projects_rows (tenant_id, id))",
];

async fn shared(sandbox: &SqliteSandbox) -> SqliteConnection {
    let options = SqliteConnectOptions::new().filename(&sandbox.shared_file);
    SqliteConnection::connect_with(&options).await.unwrap()
}

async fn count(conn: &mut SqliteConnection, table: &str, ctx: &TenantContext) -> i64 {
    // `table` is one of this test's constants.
    let sql = format!("SELECT count(*) FROM {table} WHERE tenant_id = ?");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(ctx.tenant_id())
        .fetch_one(conn)
        .await
        .unwrap()
}

/// (projects, tasks) rows of a tenant, read from the physical tables.
async fn rows_of(sandbox: &SqliteSandbox, ctx: &TenantContext) -> (i64, i64) {
    let mut conn = shared(sandbox).await;
    let projects = count(&mut conn, "projects_rows", ctx).await;
    let tasks = count(&mut conn, "tasks_rows", ctx).await;
    conn.close().await.unwrap();
    (projects, tasks)
}

#[tokio::test]
async fn a_row_tenant_with_referencing_tables_is_deleted_and_imported() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let mut conn = shared(&sandbox).await;
    for sql in TABLES {
        conn.execute(sql).await.unwrap();
    }
    conn.close().await.unwrap();
    let tenancy = sandbox
        .builder(sqlite_migrations())
        .unwrap()
        .tenant_table(TenantTable::new("projects").unwrap())
        .tenant_table(TenantTable::new("tasks").unwrap())
        .build()
        .unwrap();
    tenancy.setup().await.unwrap();
    let mut tenants = Vec::new();
    for slug in ["doomed", "kept", "copy"] {
        let new = NewTenant::new(
            TenantSlug::parse(slug).unwrap(),
            slug,
            Strategy::Shared,
            sandbox.cluster.clone(),
        )
        .unwrap();
        let record = tenancy.provision(new).await.unwrap();
        tenants.push(TenantContext::new(record.id, record.slug));
    }
    let [doomed, kept, copy] = &tenants[..] else {
        unreachable!()
    };
    for ctx in [doomed, kept] {
        let mut tx = tenancy.begin(ctx).await.unwrap();
        tx.execute("INSERT INTO projects (id, name) VALUES (1, 'p1'), (2, 'p2')")
            .await
            .unwrap();
        tx.execute(
            "INSERT INTO tasks (id, project_id, title) VALUES (1, 1, 'a'), (2, 1, 'b'), (3, 2, 'c')",
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    // The foreign key is enforced: a task of a missing project is refused.
    let mut tx = tenancy.begin(kept).await.unwrap();
    assert!(
        tx.execute("INSERT INTO tasks (id, project_id, title) VALUES (9, 9, 'x')")
            .await
            .is_err()
    );
    drop(tx);

    // The archive lists projects before tasks (alphabetical), but an
    // import must not depend on that: the tables go in reverse order here.
    let mut archive = tenancy.export_tenant(doomed.tenant_id()).await.unwrap();
    archive.manifest.tables.reverse();
    assert_eq!(tenancy.import_tenant(copy, &archive).await.unwrap(), 5);
    assert_eq!(rows_of(&sandbox, copy).await, (2, 3));

    tenancy.delete_tenant(doomed.tenant_id()).await.unwrap();
    assert_eq!(rows_of(&sandbox, doomed).await, (0, 0), "all rows gone");
    assert_eq!(rows_of(&sandbox, kept).await, (2, 3), "neighbour intact");
    assert_eq!(rows_of(&sandbox, copy).await, (2, 3), "copy intact");
    drop(tenancy);
    sandbox.cleanup().await;
}
