//! The SQLite audit: a clean setup reports nothing; each weakness, created
//! on purpose, is reported with the object concerned.

use saas_core::TenantId;
use saas_tenancy::testing::sqlite::{SqliteSandbox, sqlite_migrations};
use saas_tenancy::{Strategy, TenantObjectName, TenantTable, Weakness};
use sqlx::migrate::{Migration, MigrationType};
use sqlx::{Executor, SqlSafeStr};

fn file_of(sandbox: &SqliteSandbox, tenant: TenantId) -> std::path::PathBuf {
    sandbox
        .dir
        .join(format!("{}.sqlite", TenantObjectName::for_tenant(tenant)))
}

fn remove_file_set(file: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}

#[tokio::test]
async fn a_clean_sqlite_setup_audits_clean() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    sandbox.tenant("row", Strategy::Shared).await.unwrap();
    sandbox.tenant("file", Strategy::Database).await.unwrap();
    let gone = sandbox.tenant("gone", Strategy::Database).await.unwrap();
    sandbox
        .tenancy
        .delete_tenant(gone.tenant_id())
        .await
        .unwrap();
    let findings = sandbox.tenancy.audit().await.unwrap();
    assert!(findings.is_empty(), "{findings:#?}");
    sandbox.cleanup().await;
}

#[tokio::test]
async fn the_sqlite_audit_reports_each_weakness() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let a = sandbox.tenant("a", Strategy::Database).await.unwrap();
    let b = sandbox.tenant("b", Strategy::Database).await.unwrap();
    let c = sandbox.tenant("c", Strategy::Database).await.unwrap();
    sandbox.tenant("row", Strategy::Shared).await.unwrap();

    let mut admin = sandbox
        .tenancy
        .unscoped_admin_connection(&sandbox.cluster, "test: create weaknesses")
        .await
        .unwrap();
    for sql in [
        // Undeclared, keyed without the tenant, no tenant index.
        "CREATE TABLE secrets (tenant_id BLOB NOT NULL, id INTEGER PRIMARY KEY, v TEXT)",
        // A unique key across tenants on a declared table.
        "CREATE UNIQUE INDEX notes_body ON notes_rows (body)",
        // Declared below without a tenant column.
        "CREATE TABLE plain_rows (id INTEGER PRIMARY KEY, v TEXT)",
        // Declared below; its key does not start with the tenant.
        "CREATE TABLE events_rows (tenant_id BLOB NOT NULL, id INTEGER NOT NULL, \
         PRIMARY KEY (id, tenant_id))",
    ] {
        admin.execute(sql).await.unwrap();
    }
    drop(admin);
    // B's file is A's; C's file is the shared file.
    let (file_a, file_b, file_c) = (
        file_of(&sandbox, a.tenant_id()),
        file_of(&sandbox, b.tenant_id()),
        file_of(&sandbox, c.tenant_id()),
    );
    remove_file_set(&file_b);
    std::fs::hard_link(&file_a, &file_b).unwrap();
    remove_file_set(&file_c);
    std::fs::hard_link(&sandbox.shared_file, &file_c).unwrap();
    // A file nobody owns.
    let orphan = file_of(&sandbox, TenantId::new());
    std::fs::copy(&file_a, &orphan).unwrap();

    let mut migrations = sqlite_migrations();
    migrations.push(Migration::new(
        2,
        "more".into(),
        MigrationType::Simple,
        "ALTER TABLE notes ADD COLUMN more TEXT".into_sql_str(),
        false,
    ));
    let tenancy = sandbox
        .builder(migrations)
        .unwrap()
        .tenant_table(TenantTable::new("missing").unwrap())
        .tenant_table(TenantTable::new("plain").unwrap())
        .tenant_table(TenantTable::new("events").unwrap())
        .build()
        .unwrap();
    let findings = tenancy.audit().await.unwrap();
    let (a, b, c) = (
        a.tenant_id().to_string(),
        b.tenant_id().to_string(),
        c.tenant_id().to_string(),
    );
    let orphan = orphan.display().to_string();
    let expected: Vec<(Weakness, &str)> = vec![
        (Weakness::TenantTableMissing, "missing_rows"),
        (Weakness::TenantColumnMissing, "plain_rows"),
        (Weakness::TenantIndexMissing, "events_rows"),
        (Weakness::UniqueKeyWithoutTenant, "notes_rows (notes_body)"),
        (Weakness::UndeclaredTenantTable, "secrets"),
        (Weakness::UniqueKeyWithoutTenant, "secrets (primary key)"),
        (Weakness::TenantIndexMissing, "secrets"),
        (Weakness::MigrationsBehind, &a),
        (Weakness::MigrationsBehind, &b),
        (Weakness::MigrationsBehind, &c),
        (Weakness::TenantFileShared, &b),
        (Weakness::TenantFileReachableFromShared, &c),
        (Weakness::OrphanTenantFile, &orphan),
    ];
    for (weakness, subject) in &expected {
        assert!(
            findings.iter().any(|f| f.weakness == *weakness
                && f.subject.contains(subject)
                && !f.fix.is_empty()),
            "{weakness:?} on {subject} not reported in {findings:#?}"
        );
    }
    assert_eq!(findings.len(), expected.len(), "{findings:#?}");
    drop(tenancy);
    sandbox.cleanup().await;
}
