//! Hostile input against the SQLite tenancy: tampered catalog rows,
//! forged contexts, SQL-shaped slugs — and the tenant-less check of the
//! leak harness catching a shared file that would leak.

use std::sync::Arc;

use saas_core::{TenantContext, TenantId, TenantSlug};
use saas_tenancy::testing::leak::LeakTarget;
use saas_tenancy::testing::sqlite::{SqliteLeakTarget, SqliteSandbox};
use saas_tenancy::{NewTenant, Strategy, TenancyError, TenantObjectName};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Executor, SqliteConnection};

async fn plain(file: &std::path::Path) -> SqliteConnection {
    let options = SqliteConnectOptions::new().filename(file);
    SqliteConnection::connect_with(&options).await.unwrap()
}

async fn add_note(sandbox: &SqliteSandbox, ctx: &TenantContext, id: i64, body: &str) {
    let mut conn = sandbox.tenancy.acquire(ctx).await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, ?, ?)")
        .bind(ctx.tenant_id())
        .bind(id)
        .bind(body)
        .execute(&mut *conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_tampered_file_name_in_the_catalog_is_never_opened() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let victim = sandbox.tenant("victim", Strategy::Database).await.unwrap();
    let mut catalog = plain(&sandbox.dir.join("catalog.sqlite")).await;
    for evil in [
        "../shared",
        "t_x'; ATTACH 'evil.db' AS e; --",
        "shared.sqlite",
    ] {
        sqlx::query("UPDATE saas_tenants SET object_name = ? WHERE id = ?")
            .bind(evil)
            .bind(victim.tenant_id())
            .execute(&mut catalog)
            .await
            .unwrap();
        let err = sandbox.tenancy.acquire(&victim).await.unwrap_err();
        assert!(matches!(err, TenancyError::Corrupt(_)), "{evil}: {err:?}");
    }
    catalog.close().await.unwrap();
    let names: Vec<String> = std::fs::read_dir(&sandbox.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.contains("evil") && !n.starts_with("t_x")),
        "{names:?}"
    );
    sandbox.cleanup().await;
}

#[tokio::test]
async fn forged_contexts_get_nothing_in_either_placement() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    for strategy in [Strategy::Shared, Strategy::Database] {
        let a = sandbox
            .tenant(&format!("a-{strategy}"), strategy)
            .await
            .unwrap();
        let b = sandbox
            .tenant(&format!("b-{strategy}"), strategy)
            .await
            .unwrap();
        add_note(&sandbox, &b, 1, "b secret").await;

        // A real slug with an invented id: no such tenant, for every handle.
        let invented = TenantContext::new(TenantId::new(), b.slug().clone());
        for err in [
            sandbox.tenancy.acquire(&invented).await.err(),
            sandbox.tenancy.begin(&invented).await.err(),
            sandbox.tenancy.begin_immediate(&invented).await.err(),
        ] {
            assert!(
                matches!(err, Some(TenancyError::TenantNotFound(_))),
                "{err:?}"
            );
        }
        // A's id with B's slug: the id decides; B's rows stay invisible
        // and a write lands in A's data.
        let mixed = TenantContext::new(a.tenant_id(), b.slug().clone());
        let mut conn = sandbox.tenancy.acquire(&mixed).await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(seen, 0, "{strategy}");
        drop(conn);
        add_note(&sandbox, &mixed, 2, "written as mixed").await;
        let mut conn = sandbox.tenancy.acquire(&b).await.unwrap();
        let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(bodies, ["b secret"], "{strategy}");
    }
    sandbox.cleanup().await;
}

#[tokio::test]
async fn sql_shaped_slugs_are_refused_and_names_come_from_ids() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    for evil in [
        "x'; drop table notes_rows; --",
        "../../shared",
        "a\"b",
        "notes_rows",
    ] {
        assert!(TenantSlug::parse(evil).is_err(), "{evil}");
    }
    // Slugs that parse but look like SQL or file names are plain labels:
    // the tenant's file is named after its id, never after the slug.
    for label in ["drop-table-notes-rows", "t-00-sqlite"] {
        let slug = TenantSlug::parse(label).unwrap();
        let new = NewTenant::new(slug, label, Strategy::Database, sandbox.cluster.clone());
        let record = sandbox.tenancy.provision(new.unwrap()).await.unwrap();
        let file = format!(
            "{}.sqlite",
            TenantObjectName::for_tenant(record.id).as_str()
        );
        assert!(sandbox.dir.join(&file).exists(), "{label}: {file}");
        assert!(
            !sandbox.dir.join(format!("{label}.sqlite")).exists(),
            "{label}"
        );
    }
    // The shared table survived everything above.
    let mut shared = plain(&sandbox.shared_file).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes_rows")
        .fetch_one(&mut shared)
        .await
        .unwrap();
    assert_eq!(n, 0);
    shared.close().await.unwrap();
    sandbox.cleanup().await;
}

#[tokio::test]
async fn the_tenant_less_check_sees_a_leaking_shared_file() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let row = sandbox.tenant("row", Strategy::Shared).await.unwrap();
    let file = sandbox.tenant("file", Strategy::Database).await.unwrap();
    add_note(&sandbox, &row, 1, "row secret").await;
    add_note(&sandbox, &file, 1, "file secret").await;
    let target = Arc::new(
        SqliteLeakTarget::notes(sandbox.tenancy.clone(), sandbox.shared_file.clone()).unwrap(),
    );
    let tenants = [row.clone(), file.clone()];
    assert_eq!(target.unscoped_count(&tenants).await.unwrap(), 0);

    // A persistent, unfiltered `notes` in the shared file would show every
    // row to a connection without a tenant: the check counts it.
    let mut shared = plain(&sandbox.shared_file).await;
    shared
        .execute("CREATE VIEW notes AS SELECT * FROM notes_rows")
        .await
        .unwrap();
    assert_eq!(target.unscoped_count(&tenants).await.unwrap(), 1);
    shared.execute("DROP VIEW notes").await.unwrap();
    // A file tenant's row misrouted into the shared file is counted too.
    sqlx::query("INSERT INTO notes_rows (tenant_id, id, body) VALUES (?, 9, 'stray')")
        .bind(file.tenant_id())
        .execute(&mut shared)
        .await
        .unwrap();
    assert_eq!(target.unscoped_count(&tenants).await.unwrap(), 1);
    shared.close().await.unwrap();
    sandbox.cleanup().await;
}
