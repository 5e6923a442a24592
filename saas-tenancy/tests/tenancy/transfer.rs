//! Export a tenant, import it into tenants of other placements, compare;
//! corrupt or truncated archives are refused before anything is written.

use saas_core::TenantContext;
use saas_tenancy::archive::{ArchivedTable, TenantArchive};
use saas_tenancy::postgres::ScopeMode;
use saas_tenancy::testing::pg::PgSandbox;
use saas_tenancy::{Strategy, TenancyError};
use sqlx::{AssertSqlSafe, Executor};

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
    assert!(
        matches!(&err, TenancyError::CorruptArchive { .. }),
        "{err:?}"
    );
    let mut tampered = archive.clone();
    let data = tampered.files.get_mut("notes").unwrap();
    *data = data.replace("one", "uno");
    let err = env
        .tenancy
        .import_tenant(&victim, &tampered)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TenancyError::CorruptArchive { reason } if reason.contains("checksum")),
        "{err:?}"
    );
    std::fs::remove_file(dir.join("notes.jsonl")).unwrap();
    let err = TenantArchive::read_from_dir(&dir).unwrap_err();
    assert!(
        matches!(&err, TenancyError::CorruptArchive { .. }),
        "{err:?}"
    );
    assert!(notes(&env, &victim).await.is_empty());

    // Importing twice: the second conflicts and changes nothing.
    let twice = env.tenant("twice", Strategy::Shared).await.unwrap();
    env.tenancy.import_tenant(&twice, &archive).await.unwrap();
    assert!(env.tenancy.import_tenant(&twice, &archive).await.is_err());
    assert_eq!(notes(&env, &twice).await.len(), 3);

    let _ = std::fs::remove_dir_all(&dir);
    env.cleanup().await;
}

/// An archive can only fill the target tenant's own tables: one naming a
/// shared table without a tenant column — which the runtime role may well
/// be allowed to write — is refused for a row tenant before anything is
/// written, even though the archive itself is well formed.
#[tokio::test]
async fn an_import_writes_only_the_tenants_own_tables() {
    let Some(mut env) = sandbox("transfer::own_tables", ScopeMode::Shared).await else {
        return;
    };
    let source = env.tenant("own-source", Strategy::Shared).await.unwrap();
    let target = env.tenant("own-target", Strategy::Shared).await.unwrap();
    let (shared, runtime) = (env.shared_schema.clone(), env.runtime_role.clone());
    for statement in [
        format!("CREATE TABLE \"{shared}\".announcements (id int PRIMARY KEY, body text)"),
        format!("GRANT SELECT, INSERT ON \"{shared}\".announcements TO \"{runtime}\""),
    ] {
        env.admin.execute(AssertSqlSafe(statement)).await.unwrap();
    }
    let mut tx = env.tenancy.begin(&source).await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, 'mine')")
        .bind(source.tenant_id())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let honest = env.tenancy.export_tenant(source.tenant_id()).await.unwrap();
    let mut forged = honest.clone();
    let data = "{\"id\":1,\"body\":\"for every tenant\"}\n".to_owned();
    let sha256: String = sqlx::query_scalar("SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex')")
        .bind(&data)
        .fetch_one(&env.admin)
        .await
        .unwrap();
    forged.manifest.tables.push(ArchivedTable {
        table: "announcements".to_owned(),
        tenant_column: None,
        rows: 1,
        sha256,
    });
    forged.files.insert("announcements".to_owned(), data);
    forged.verify().unwrap();

    let err = env
        .tenancy
        .import_tenant(&target, &forged)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TenancyError::InvalidInput(m) if m.contains("announcements")),
        "{err}"
    );
    let announcements: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{shared}\".announcements"
    )))
    .fetch_one(&env.admin)
    .await
    .unwrap();
    assert_eq!(announcements, 0);
    assert!(notes(&env, &target).await.is_empty());

    // The honest archive imports.
    assert_eq!(
        env.tenancy.import_tenant(&target, &honest).await.unwrap(),
        1
    );
    env.cleanup().await;
}

/// The archive's export time comes from the tenancy's injected clock.
#[tokio::test]
async fn an_export_is_stamped_by_the_injected_clock() {
    use chrono::TimeZone;
    let at = chrono::Utc
        .with_ymd_and_hms(2031, 5, 6, 7, 8, 9)
        .single()
        .unwrap();
    let clock = std::sync::Arc::new(saas_core::ManualClock::new(at));
    let Some(mut env) =
        crate::pg_env::sandbox_with_clock("transfer::clock", ScopeMode::Shared, clock).await
    else {
        return;
    };
    let tenant = env.tenant("stamped", Strategy::Shared).await.unwrap();
    let archive = env.tenancy.export_tenant(tenant.tenant_id()).await.unwrap();
    assert_eq!(archive.manifest.exported_at, at);
    env.cleanup().await;
}

/// A streamed export of more rows than an import chunk holds: the
/// directory is the archive the in-memory export gives, it imports (in
/// chunks) into a row and a database tenant with every row and key, and a
/// tampered file or a directory without its manifest (an export that did
/// not finish) is refused with nothing imported.
#[tokio::test]
async fn a_streamed_export_imports_in_chunks_and_refuses_tampering() {
    use saas_tenancy::postgres::IMPORT_CHUNK_ROWS;
    let Some(mut env) = sandbox("transfer::streamed", ScopeMode::Shared).await else {
        return;
    };
    let source = env.tenant("big-source", Strategy::Schema).await.unwrap();
    let count = IMPORT_CHUNK_ROWS * 2 + 37;
    let mut tx = env.tenancy.begin(&source).await.unwrap();
    sqlx::query(
        "INSERT INTO notes (tenant_id, body) \
         SELECT $1, 'note ' || g || repeat('x', (g % 50)::int) FROM generate_series(1, $2) g",
    )
    .bind(source.tenant_id())
    .bind(i64::try_from(count).unwrap())
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let dir = std::env::temp_dir().join(saas_tenancy::testing::unique_name("streamed"));
    let manifest = env
        .tenancy
        .export_tenant_to_dir(source.tenant_id(), &dir)
        .await
        .unwrap();
    assert_eq!(manifest.tables.len(), 1);
    assert_eq!(manifest.tables[0].rows, count as u64);
    // The same archive as the in-memory export (the format is one).
    let in_memory = env.tenancy.export_tenant(source.tenant_id()).await.unwrap();
    let read_back = TenantArchive::read_from_dir(&dir).unwrap();
    assert_eq!(read_back.files, in_memory.files);
    assert_eq!(read_back.manifest.tables, in_memory.manifest.tables);

    let expected = notes(&env, &source).await;
    for strategy in [Strategy::Shared, Strategy::Database] {
        let target = env
            .tenant(&format!("streamed-{}", strategy.as_str()), strategy)
            .await
            .unwrap();
        let imported = env
            .tenancy
            .import_tenant_from_dir(&target, &dir)
            .await
            .unwrap();
        assert_eq!(imported, count as u64);
        assert_eq!(notes(&env, &target).await, expected, "{strategy}");
    }

    // A changed byte in the middle of the file: refused, nothing written.
    let victim = env
        .tenant("streamed-victim", Strategy::Schema)
        .await
        .unwrap();
    let path = dir.join("notes.jsonl");
    let original = std::fs::read_to_string(&path).unwrap();
    let middle = original.len() / 2;
    let tampered = format!(
        "{}{}",
        &original[..middle],
        original[middle..].replacen("note", "nite", 1)
    );
    std::fs::write(&path, tampered).unwrap();
    let err = env
        .tenancy
        .import_tenant_from_dir(&victim, &dir)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TenancyError::CorruptArchive { reason } if reason.contains("checksum")),
        "{err:?}"
    );
    std::fs::write(&path, original).unwrap();
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    let err = env
        .tenancy
        .import_tenant_from_dir(&victim, &dir)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TenancyError::CorruptArchive { .. }),
        "{err:?}"
    );
    assert!(notes(&env, &victim).await.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
    env.cleanup().await;
}
