//! Export a tenant, import it into tenants of other placements, compare;
//! corrupt or truncated archives are refused before anything is written.

use saas_core::TenantContext;
use saas_tenancy::archive::TenantArchive;
use saas_tenancy::postgres::ScopeMode;
use saas_tenancy::testing::pg::PgSandbox;
use saas_tenancy::{Strategy, TenancyError};

use crate::pg_env::sandbox;

async fn notes(env: &PgSandbox, ctx: &TenantContext) -> Vec<(i64, String)> {
    let mut conn = env.tenancy.acquire(ctx).await.unwrap();
    sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_export_from_a_row_tenant_imports_into_every_placement() {
    let Some(mut env) = sandbox("transfer::round_trip", ScopeMode::Shared).await else {
        return;
    };
    let source = env.tenant("source", Strategy::Shared).await.unwrap();
    let neighbour = env.tenant("neighbour", Strategy::Shared).await.unwrap();
    for (ctx, bodies) in [
        (&source, &["one", "two", "it's \"quoted\"\n"][..]),
        (&neighbour, &["other"][..]),
    ] {
        let mut tx = env.tenancy.begin(ctx).await.unwrap();
        for body in bodies {
            sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, $2)")
                .bind(ctx.tenant_id())
                .bind(*body)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    let archive = env.tenancy.export_tenant(source.tenant_id()).await.unwrap();
    assert_eq!(archive.manifest.tables.len(), 1);
    assert_eq!(archive.manifest.tables[0].rows, 3, "only the source's rows");

    // Through the file format too.
    let dir = std::env::temp_dir().join(saas_tenancy::testing::unique_name("archive"));
    archive.write_to_dir(&dir).unwrap();
    let read_back = TenantArchive::read_from_dir(&dir).unwrap();
    assert_eq!(read_back, archive);

    let expected = notes(&env, &source).await;
    for strategy in [Strategy::Schema, Strategy::Database, Strategy::Shared] {
        let target = env
            .tenant(&format!("into-{}", strategy.as_str()), strategy)
            .await
            .unwrap();
        let imported = env
            .tenancy
            .import_tenant(&target, &read_back)
            .await
            .unwrap();
        assert_eq!(imported, 3);
        assert_eq!(notes(&env, &target).await, expected, "{strategy}");
        // New rows continue after the imported keys.
        let mut tx = env.tenancy.begin(&target).await.unwrap();
        sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, 'after import')")
            .bind(target.tenant_id())
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(
        notes(&env, &neighbour).await.len(),
        1,
        "neighbour untouched"
    );

    // Truncated file / tampered row: refused before anything is written.
    let victim = env.tenant("victim", Strategy::Schema).await.unwrap();
    let mut truncated = archive.clone();
    let data = truncated.files.get_mut("notes").unwrap();
    let cut = data.trim_end().rfind('\n').unwrap() + 1;
    data.truncate(cut);
    let err = env
        .tenancy
        .import_tenant(&victim, &truncated)
        .await
        .unwrap_err();
    assert!(matches!(err, TenancyError::InvalidInput(m) if m.contains("corrupt")));
    let mut tampered = archive.clone();
    let data = tampered.files.get_mut("notes").unwrap();
    *data = data.replace("one", "uno");
    assert!(env.tenancy.import_tenant(&victim, &tampered).await.is_err());
    std::fs::remove_file(dir.join("notes.jsonl")).unwrap();
    assert!(TenantArchive::read_from_dir(&dir).is_err());
    assert!(notes(&env, &victim).await.is_empty());

    // Importing twice: the second conflicts and changes nothing.
    let twice = env.tenant("twice", Strategy::Shared).await.unwrap();
    env.tenancy.import_tenant(&twice, &archive).await.unwrap();
    assert!(env.tenancy.import_tenant(&twice, &archive).await.is_err());
    assert_eq!(notes(&env, &twice).await.len(), 3);

    let _ = std::fs::remove_dir_all(&dir);
    env.cleanup().await;
}
