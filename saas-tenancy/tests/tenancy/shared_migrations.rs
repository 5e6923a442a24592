//! The shared migration set, from sqlx migration files, applied to every
//! cluster: two real PostgreSQL servers, and SQLite shared files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use saas_core::{SystemClock, TenantContext, TenantSlug};
use saas_tenancy::postgres::{PgClusterConfig, PgTenancy, SqlIdent, TenantTable};
use saas_tenancy::sqlite::{SqliteClusterConfig, SqliteTenancy};
use saas_tenancy::testing::unique_name;
use saas_tenancy::{ClusterName, DynCatalog, InMemoryCatalog, NewTenant, Strategy, TenancyError};

use crate::two_servers::{Server, bare_server, drop_servers, urls};
use sqlx::migrate::Migrator;

/// A directory of sqlx migration files (`<version>_<name>.sql`).
fn migration_dir(files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("saas_shared_migrations"));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, sql) in files {
        std::fs::write(dir.join(name), sql).unwrap();
    }
    dir
}

async fn migrator(dir: &Path) -> Migrator {
    Migrator::new(dir).await.unwrap()
}

const PG_NOTES: &str = "CREATE TABLE notes (tenant_id uuid NOT NULL, id bigserial, \
    body text NOT NULL, PRIMARY KEY (tenant_id, id));";
const PG_TAGS: &str = "CREATE TABLE tags (tenant_id uuid NOT NULL, name text NOT NULL, \
    PRIMARY KEY (tenant_id, name));";
/// Its first statement succeeds, its second fails: the whole migration
/// must leave nothing behind.
const PG_BROKEN: &str = "CREATE TABLE half_done (x int); SELECT 1 / 0;";

fn pg_tenancy(servers: &[&Server], role: &str, shared: Migrator) -> PgTenancy {
    let catalog: DynCatalog = Arc::new(InMemoryCatalog::new(Arc::new(SystemClock)));
    let mut builder = PgTenancy::builder(catalog)
        .tenant_table(TenantTable::new("notes").unwrap())
        .tenant_table(TenantTable::new("tags").unwrap())
        .shared_migrations(shared);
    for s in servers {
        builder = builder.cluster(PgClusterConfig::new(
            s.name.clone(),
            s.options.clone(),
            SqlIdent::new(role).unwrap(),
        ));
    }
    builder.build().unwrap()
}

async fn applied_versions(s: &Server) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&s.admin)
        .await
        .unwrap()
}

async fn forced_rls(s: &Server, table: &str) -> bool {
    sqlx::query_scalar(
        "SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = to_regclass($1)",
    )
    .bind(table)
    .fetch_one(&s.admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn shared_migration_files_reach_every_cluster_once_and_a_broken_one_leaves_nothing() {
    let Some((url1, url2)) = urls("shared_migrations") else {
        return;
    };
    let one = bare_server(&url1, "one").await;
    let two = bare_server(&url2, "two").await;
    let role = unique_name("saas_rt");
    let dir = migration_dir(&[("1_notes.sql", PG_NOTES), ("2_tags.sql", PG_TAGS)]);
    let tenancy = pg_tenancy(&[&one, &two], &role, migrator(&dir).await);

    // Before the shared migrations the declared tables do not exist.
    assert!(matches!(
        tenancy.setup().await,
        Err(TenancyError::InvalidInput(m)) if m.contains("run the shared migrations first")
    ));
    tenancy.migrate_shared().await.unwrap();
    for s in [&one, &two] {
        assert_eq!(applied_versions(s).await, vec![1, 2], "cluster {}", s.name);
        for table in ["notes", "tags"] {
            assert!(
                forced_rls(s, table).await,
                "{table} on {} has forced RLS",
                s.name
            );
        }
    }
    // Running again applies nothing new (a second apply of 1_notes.sql
    // would fail: the table exists).
    tenancy.migrate_shared().await.unwrap();
    for s in [&one, &two] {
        assert_eq!(applied_versions(s).await, vec![1, 2]);
    }

    // The shared tables serve row tenants on both servers, isolated.
    let mut tenants = Vec::new();
    for (i, s) in [&one, &two, &one].into_iter().enumerate() {
        let slug = TenantSlug::parse(&format!("s{i}")).unwrap();
        let new = NewTenant::new(slug, "S", Strategy::Shared, s.name.clone()).unwrap();
        let record = tenancy.provision(new).await.unwrap();
        let ctx = TenantContext::new(record.id, record.slug.clone());
        let mut tx = tenancy.begin(&ctx).await.unwrap();
        sqlx::query("INSERT INTO tags (tenant_id, name) VALUES ($1, 'mine')")
            .bind(record.id)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        tenants.push(ctx);
    }
    for ctx in &tenants {
        let mut tx = tenancy.begin(ctx).await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM tags")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(seen, 1, "a tenant sees only its own shared rows");
    }

    // A broken third migration: the error names the cluster, the first
    // cluster keeps version 2 and no half-applied table, the second is
    // not touched.
    std::fs::write(dir.join("3_broken.sql"), PG_BROKEN).unwrap();
    let broken = pg_tenancy(&[&one, &two], &role, migrator(&dir).await);
    match broken.migrate_shared().await {
        Err(TenancyError::InvalidInput(m)) => {
            assert!(m.contains("cluster one"), "{m}");
        }
        other => panic!("expected the broken migration to fail, got {other:?}"),
    }
    for s in [&one, &two] {
        assert_eq!(applied_versions(s).await, vec![1, 2], "cluster {}", s.name);
        let half: Option<String> = sqlx::query_scalar("SELECT to_regclass('half_done')::text")
            .fetch_one(&s.admin)
            .await
            .unwrap();
        assert_eq!(half, None, "nothing of the failed migration on {}", s.name);
    }

    for ctx in &tenants {
        tenancy.delete_tenant(ctx.tenant_id()).await.unwrap();
    }
    drop_servers(&[&one, &two], &role).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn sqlite_shared_migration_files_create_the_shared_file_and_serve_row_tenants() {
    let root = std::env::temp_dir().join(unique_name("saas_sqlite_shared"));
    std::fs::create_dir_all(&root).unwrap();
    let dir = migration_dir(&[(
        "1_notes.sql",
        "CREATE TABLE notes_rows (tenant_id BLOB NOT NULL, id INTEGER NOT NULL, \
         body TEXT NOT NULL, PRIMARY KEY (tenant_id, id));",
    )]);
    let main = ClusterName::new("main").unwrap();
    let shared_file = root.join("shared.sqlite");
    let catalog: DynCatalog = Arc::new(InMemoryCatalog::new(Arc::new(SystemClock)));
    let tenancy = SqliteTenancy::builder(catalog)
        .cluster(SqliteClusterConfig::new(
            main.clone(),
            shared_file.clone(),
            root.clone(),
        ))
        .tenant_table(TenantTable::new("notes").unwrap())
        .shared_migrations(migrator(&dir).await)
        .build()
        .unwrap();

    assert!(!shared_file.exists());
    tenancy.migrate_shared().await.unwrap();
    tenancy.migrate_shared().await.unwrap();
    assert!(
        shared_file.is_file(),
        "migrate_shared created the shared file"
    );

    let mut tenants = Vec::new();
    for slug in ["a", "b"] {
        let new = NewTenant::new(
            TenantSlug::parse(slug).unwrap(),
            slug,
            Strategy::Shared,
            main.clone(),
        )
        .unwrap();
        let record = tenancy.provision(new).await.unwrap();
        let ctx = TenantContext::new(record.id, record.slug.clone());
        let mut tx = tenancy.begin(&ctx).await.unwrap();
        sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 1, 'mine')")
            .bind(record.id)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        tenants.push(ctx);
    }
    for ctx in &tenants {
        let mut tx = tenancy.begin(ctx).await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(seen, 1);
    }

    // A broken second migration fails with the cluster named and leaves
    // the file at version 1 with nothing of it behind.
    std::fs::write(
        dir.join("2_broken.sql"),
        "CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);",
    )
    .unwrap();
    let catalog: DynCatalog = Arc::new(InMemoryCatalog::new(Arc::new(SystemClock)));
    let broken = SqliteTenancy::builder(catalog)
        .cluster(SqliteClusterConfig::new(
            main.clone(),
            shared_file.clone(),
            root.clone(),
        ))
        .tenant_table(TenantTable::new("notes").unwrap())
        .shared_migrations(migrator(&dir).await)
        .build()
        .unwrap();
    match broken.migrate_shared().await {
        Err(TenancyError::InvalidInput(m)) => assert!(m.contains("cluster main"), "{m}"),
        other => panic!("expected the broken migration to fail, got {other:?}"),
    }
    let mut conn = tenancy
        .unscoped_admin_connection(&main, "test: inspect the shared file")
        .await
        .unwrap();
    let half: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(half, 0);
    drop(conn);
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
