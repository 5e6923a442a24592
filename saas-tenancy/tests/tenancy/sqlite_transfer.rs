//! SQLite export/import in the shared archive format: between SQLite
//! placements, from PostgreSQL and back, and refusing bad archives without
//! writing anything.

use saas_core::TenantContext;
use saas_tenancy::archive::TenantArchive;
use saas_tenancy::postgres::ScopeMode;
use saas_tenancy::testing::sqlite::{SqliteSandbox, sqlite_migrations};
use saas_tenancy::{Strategy, TenancyError};
use sha2::{Digest, Sha256};

use crate::pg_env::sandbox;

type Note = (i64, String);

async fn notes(sandbox: &SqliteSandbox, ctx: &TenantContext) -> Vec<Note> {
    let mut conn = sandbox.tenancy.acquire(ctx).await.unwrap();
    sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
}

async fn write(sandbox: &SqliteSandbox, ctx: &TenantContext, rows: &[(i64, &str)]) {
    let mut tx = sandbox.tenancy.begin(ctx).await.unwrap();
    for (id, body) in rows {
        sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, ?, ?)")
            .bind(ctx.tenant_id())
            .bind(id)
            .bind(*body)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

/// Re-seals a table after editing it, as a forger would.
fn reseal(archive: &mut TenantArchive, table: &str) {
    let data = &archive.files[table];
    let digest = Sha256::digest(data.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let rows = data.lines().count() as u64;
    let entry = archive
        .manifest
        .tables
        .iter_mut()
        .find(|t| t.table == table)
        .unwrap();
    entry.sha256 = hex;
    entry.rows = rows;
}

#[tokio::test]
async fn sqlite_archives_move_between_placements_and_only_carry_their_tenant() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let source = sandbox.tenant("source", Strategy::Shared).await.unwrap();
    let neighbour = sandbox.tenant("neighbour", Strategy::Shared).await.unwrap();
    write(
        &sandbox,
        &source,
        &[(1, "one"), (2, "two"), (3, "it's \"quoted\"\n")],
    )
    .await;
    write(&sandbox, &neighbour, &[(1, "theirs")]).await;
    let expected = notes(&sandbox, &source).await;

    // The export time comes from the injected clock.
    let at = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2031, 5, 6, 7, 8, 9).unwrap();
    let clocked = sandbox
        .builder(sqlite_migrations())
        .unwrap()
        .clock(std::sync::Arc::new(saas_core::ManualClock::new(at)))
        .build()
        .unwrap();
    let archive = clocked.export_tenant(source.tenant_id()).await.unwrap();
    assert_eq!(archive.manifest.exported_at, at);
    assert_eq!(archive.manifest.tables.len(), 1);
    assert_eq!(
        archive.manifest.tables[0].table, "notes",
        "named as SQL names it"
    );
    assert_eq!(archive.manifest.tables[0].rows, 3, "only the source's rows");
    assert!(!archive.files["notes"].contains("theirs"));
    let dir = std::env::temp_dir().join(saas_tenancy::testing::unique_name("sqlite_archive"));
    archive.write_to_dir(&dir).unwrap();
    let archive = TenantArchive::read_from_dir(&dir).unwrap();

    // Row → file, then file → row: the same notes each time.
    let file = sandbox.tenant("file", Strategy::Database).await.unwrap();
    assert_eq!(
        sandbox
            .tenancy
            .import_tenant(&file, &archive)
            .await
            .unwrap(),
        3
    );
    assert_eq!(notes(&sandbox, &file).await, expected);
    let from_file = sandbox
        .tenancy
        .export_tenant(file.tenant_id())
        .await
        .unwrap();
    let row = sandbox.tenant("row", Strategy::Shared).await.unwrap();
    assert_eq!(
        sandbox
            .tenancy
            .import_tenant(&row, &from_file)
            .await
            .unwrap(),
        3
    );
    assert_eq!(notes(&sandbox, &row).await, expected);
    assert_eq!(
        notes(&sandbox, &neighbour).await,
        vec![(1, "theirs".to_owned())],
        "the neighbour in the shared file is untouched"
    );

    // Importing twice conflicts and changes nothing.
    assert!(sandbox.tenancy.import_tenant(&row, &archive).await.is_err());
    assert_eq!(notes(&sandbox, &row).await, expected);

    // Truncated, tampered, or naming a column the tenant lacks: refused,
    // nothing written, whatever the placement.
    for strategy in [Strategy::Shared, Strategy::Database] {
        let victim = sandbox
            .tenant(&format!("victim-{}", strategy.as_str()), strategy)
            .await
            .unwrap();
        let mut truncated = archive.clone();
        let data = truncated.files.get_mut("notes").unwrap();
        let cut = data.trim_end().rfind('\n').unwrap() + 1;
        data.truncate(cut);
        let err = sandbox
            .tenancy
            .import_tenant(&victim, &truncated)
            .await
            .unwrap_err();
        assert!(matches!(&err, TenancyError::CorruptArchive { .. }), "{err}");
        let mut tampered = archive.clone();
        let data = tampered.files.get_mut("notes").unwrap();
        *data = data.replace("one", "uno");
        let err = sandbox
            .tenancy
            .import_tenant(&victim, &tampered)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TenancyError::CorruptArchive { reason } if reason.contains("checksum")),
            "{err}"
        );
        let mut unknown = archive.clone();
        let data = unknown.files.get_mut("notes").unwrap();
        *data = data.replace(
            "\"body\":\"two\"",
            "\"body\":\"two\",\"secret\\\"; DROP TABLE notes_rows; --\":1",
        );
        reseal(&mut unknown, "notes");
        let err = sandbox
            .tenancy
            .import_tenant(&victim, &unknown)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TenancyError::InvalidInput(m) if m.contains("does not exist")),
            "{err}"
        );
        assert!(notes(&sandbox, &victim).await.is_empty());
    }

    // A shared tenant's import never writes to a table every tenant shares,
    // nor around a view by naming its physical table.
    let mut admin = sandbox
        .tenancy
        .unscoped_admin_connection(&sandbox.cluster, "test: a table without tenants")
        .await
        .unwrap();
    sqlx::query("CREATE TABLE plans (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        .execute(&mut admin)
        .await
        .unwrap();
    let victim = sandbox
        .tenant("victim-global", Strategy::Shared)
        .await
        .unwrap();
    for (name, row) in [
        ("plans", "{\"id\":1,\"name\":\"free for all\"}\n"),
        ("notes_rows", "{\"id\":9,\"body\":\"around the view\"}\n"),
    ] {
        let mut global = archive.clone();
        global.files.insert(name.to_owned(), row.to_owned());
        let mut entry = global.manifest.tables[0].clone();
        entry.table = name.to_owned();
        entry.tenant_column = None;
        global.manifest.tables.push(entry);
        reseal(&mut global, name);
        let err = sandbox
            .tenancy
            .import_tenant(&victim, &global)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TenancyError::InvalidInput(m) if m.contains("not a tenant table")),
            "{err}"
        );
    }
    let plans: i64 = sqlx::query_scalar("SELECT count(*) FROM plans")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(plans, 0);
    drop(admin);
    assert!(notes(&sandbox, &victim).await.is_empty());

    // A forged archive whose rows claim the neighbour, with the tenant
    // column left out of the manifest: the rows still land in the target.
    let mut forged = archive.clone();
    forged.manifest.tables[0].tenant_column = None;
    let neighbour_id = neighbour.tenant_id().to_string();
    let data = forged.files.get_mut("notes").unwrap();
    let lines: Vec<String> = data
        .lines()
        .map(|line| {
            let mut row: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(line).unwrap();
            row.insert("tenant_id".to_owned(), neighbour_id.clone().into());
            row.insert("id".to_owned(), (row["id"].as_i64().unwrap() + 10).into());
            serde_json::Value::Object(row).to_string() + "\n"
        })
        .collect();
    *data = lines.concat();
    reseal(&mut forged, "notes");
    let target = sandbox.tenant("target", Strategy::Shared).await.unwrap();
    assert_eq!(
        sandbox
            .tenancy
            .import_tenant(&target, &forged)
            .await
            .unwrap(),
        3
    );
    assert_eq!(notes(&sandbox, &target).await.len(), 3);
    assert_eq!(
        notes(&sandbox, &neighbour).await,
        vec![(1, "theirs".to_owned())]
    );

    let _ = std::fs::remove_dir_all(&dir);
    sandbox.cleanup().await;
}

#[tokio::test]
async fn a_postgres_row_tenant_round_trips_through_a_sqlite_file_tenant() {
    let Some(mut pg) = sandbox("sqlite_transfer::cross_backend", ScopeMode::Shared).await else {
        return;
    };
    let lite = SqliteSandbox::new().await.unwrap();
    let source = pg.tenant("source", Strategy::Shared).await.unwrap();
    let neighbour = pg.tenant("neighbour", Strategy::Shared).await.unwrap();
    for (ctx, bodies) in [
        (&source, &["one", "two", "ünïcode \"quoted\"\n"][..]),
        (&neighbour, &["theirs"][..]),
    ] {
        let mut tx = pg.tenancy.begin(ctx).await.unwrap();
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
    let pg_tenancy = pg.tenancy.clone();
    let pg_notes = |ctx: TenantContext| {
        let tenancy = pg_tenancy.clone();
        async move {
            let mut conn = tenancy.acquire(&ctx).await.unwrap();
            sqlx::query_as::<_, Note>("SELECT id, body FROM notes ORDER BY id")
                .fetch_all(&mut *conn)
                .await
                .unwrap()
        }
    };
    let expected = pg_notes(source.clone()).await;
    assert_eq!(expected.len(), 3);

    let archive = pg.tenancy.export_tenant(source.tenant_id()).await.unwrap();
    let file = lite.tenant("file", Strategy::Database).await.unwrap();
    assert_eq!(
        lite.tenancy.import_tenant(&file, &archive).await.unwrap(),
        3
    );
    assert_eq!(notes(&lite, &file).await, expected);
    // The tenant column holds the SQLite tenant, as a uuid blob.
    let mut conn = lite.tenancy.acquire(&file).await.unwrap();
    let owners: Vec<saas_core::TenantId> =
        sqlx::query_scalar("SELECT DISTINCT tenant_id FROM notes")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert_eq!(owners, vec![file.tenant_id()]);
    drop(conn);

    let back = lite.tenancy.export_tenant(file.tenant_id()).await.unwrap();
    for strategy in [Strategy::Shared, Strategy::Schema] {
        let home = pg
            .tenant(&format!("home-{}", strategy.as_str()), strategy)
            .await
            .unwrap();
        assert_eq!(pg.tenancy.import_tenant(&home, &back).await.unwrap(), 3);
        assert_eq!(pg_notes(home.clone()).await, expected, "{strategy}");
    }
    assert_eq!(
        pg_notes(neighbour.clone()).await.len(),
        1,
        "neighbour untouched"
    );
    lite.cleanup().await;
    pg.cleanup().await;
}

/// A streamed export of a SQLite tenant file bigger than an import chunk
/// (2,000 rows) imports, streamed, into a shared-file tenant and into a
/// PostgreSQL schema tenant with every row; the PostgreSQL tenant's own
/// streamed export comes back into another SQLite file tenant the same.
#[tokio::test]
async fn streamed_archives_move_between_sqlite_and_postgres() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let source = sandbox
        .tenant("big-file", Strategy::Database)
        .await
        .unwrap();
    let rows: Vec<(i64, String)> = (1..=4_100).map(|i| (i, format!("note {i}"))).collect();
    let borrowed: Vec<(i64, &str)> = rows.iter().map(|(i, b)| (*i, b.as_str())).collect();
    write(&sandbox, &source, &borrowed).await;
    let expected = notes(&sandbox, &source).await;

    let dir = std::env::temp_dir().join(saas_tenancy::testing::unique_name("sqlite-streamed"));
    let manifest = sandbox
        .tenancy
        .export_tenant_to_dir(source.tenant_id(), &dir)
        .await
        .unwrap();
    assert_eq!(manifest.tables[0].rows, 4_100);
    let shared = sandbox
        .tenant("into-shared", Strategy::Shared)
        .await
        .unwrap();
    let imported = sandbox
        .tenancy
        .import_tenant_from_dir(&shared, &dir)
        .await
        .unwrap();
    assert_eq!(imported, 4_100);
    assert_eq!(notes(&sandbox, &shared).await, expected);

    let Some(mut pg) = sandbox_pg().await else {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    };
    let schema = pg.tenant("from-sqlite", Strategy::Schema).await.unwrap();
    assert_eq!(
        pg.tenancy
            .import_tenant_from_dir(&schema, &dir)
            .await
            .unwrap(),
        4_100
    );
    let back = std::env::temp_dir().join(saas_tenancy::testing::unique_name("pg-streamed"));
    pg.tenancy
        .export_tenant_to_dir(schema.tenant_id(), &back)
        .await
        .unwrap();
    let file = sandbox
        .tenant("back-to-file", Strategy::Database)
        .await
        .unwrap();
    sandbox
        .tenancy
        .import_tenant_from_dir(&file, &back)
        .await
        .unwrap();
    assert_eq!(notes(&sandbox, &file).await, expected);
    for d in [&dir, &back] {
        let _ = std::fs::remove_dir_all(d);
    }
    pg.cleanup().await;
}

async fn sandbox_pg() -> Option<saas_tenancy::testing::pg::PgSandbox> {
    sandbox("sqlite_transfer::streamed", ScopeMode::Shared).await
}
