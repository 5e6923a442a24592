//! An existing app adopts row tenancy without changing its tenant ids: it
//! already has a `tenants` table and rows stamped with its own ids; each
//! tenant is entered into the catalog under that id, and the same rows are
//! then served, scoped, through `ScopedTx`.

use http::StatusCode;
use saas_core::{TenantContext, TenantId, TenantSlug};
use saas_tenancy::testing::sqlite::SqliteSandbox;
use saas_tenancy::{NewTenant, Strategy, TenancyError};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

use crate::transaction::App;

#[tokio::test]
async fn an_existing_app_keeps_its_tenant_ids() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    // The app before adoption: its own tenants and their notes, in the
    // file that becomes the shared (row) database.
    let mut db =
        SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&sandbox.shared_file))
            .await
            .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE tenants (id BLOB PRIMARY KEY, slug TEXT NOT NULL, name TEXT NOT NULL)",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let existing = [("acme", TenantId::new(), 3), ("globex", TenantId::new(), 1)];
    for (slug, id, notes) in existing {
        sqlx::query("INSERT INTO tenants (id, slug, name) VALUES (?, ?, ?)")
            .bind(id)
            .bind(slug)
            .bind(slug.to_uppercase())
            .execute(&mut db)
            .await
            .unwrap();
        for n in 0..notes {
            sqlx::query("INSERT INTO notes_rows (tenant_id, id, body) VALUES (?, ?, 'old')")
                .bind(id)
                .bind(n)
                .execute(&mut db)
                .await
                .unwrap();
        }
    }

    // Adoption: every row of `tenants` enters the catalog under its id.
    let rows: Vec<(TenantId, String, String)> =
        sqlx::query_as("SELECT id, slug, name FROM tenants ORDER BY slug")
            .fetch_all(&mut db)
            .await
            .unwrap();
    let mut tenants = Vec::new();
    for (id, slug, name) in &rows {
        let slug = TenantSlug::parse(slug).unwrap();
        let new = NewTenant::new(slug, name, Strategy::Shared, sandbox.cluster.clone())
            .unwrap()
            .with_id(*id)
            .active();
        let record = sandbox.tenancy.provision(new).await.unwrap();
        assert_eq!(record.id, *id, "the catalog keeps the app's id");
        tenants.push(TenantContext::new(record.id, record.slug));
    }
    let again = NewTenant::new(
        TenantSlug::parse("acme-again").unwrap(),
        "Acme",
        Strategy::Shared,
        sandbox.cluster.clone(),
    )
    .unwrap()
    .with_id(rows[0].0);
    let refused = sandbox.tenancy.provision(again).await;
    assert!(
        matches!(refused, Err(TenancyError::AlreadyExists { .. })),
        "{refused:?}"
    );

    // The same rows, now scoped per tenant; new rows carry the old ids.
    let app = App::new(sandbox, tenants);
    assert_eq!(app.notes("acme").await, "3");
    assert_eq!(app.notes("globex").await, "1");
    assert_eq!(
        app.call("POST", "/created/10", "globex").await.0,
        StatusCode::CREATED
    );
    let owner: TenantId = sqlx::query_scalar("SELECT tenant_id FROM notes_rows WHERE id = 10")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(owner, existing[1].1);
    assert_eq!(app.notes("acme").await, "3", "globex's note is not acme's");
    db.close().await.unwrap();
    app.sandbox.cleanup().await;
}
