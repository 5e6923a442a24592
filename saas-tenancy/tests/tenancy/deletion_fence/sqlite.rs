//! The same for SQLite, which cannot cut a handle: a deletion waits up
//! to the grace period for the handles opened before it (new ones are
//! refused meanwhile), then either deletes — what the handles wrote goes
//! with the tenant — or fails with `TenantInUse`, leaving the tenant
//! `deleting`; a retry once the handles are gone completes it.

use std::time::Duration;

use saas_core::{TenantContext, TenantId, TenantStatus};
use saas_tenancy::sqlite::{SqliteTenancy, SqliteTenantConn, SqliteTenantTx};
use saas_tenancy::testing::sqlite::{SqliteSandbox, sqlite_migrations};
use saas_tenancy::{Strategy, TenancyError};

use super::{DELETE_LIMIT, Kind, SETTLE, SHORT_GRACE, assert_refused};

enum SqliteHandle {
    Tx(SqliteTenantTx),
    Conn(SqliteTenantConn),
}

impl SqliteHandle {
    async fn open(tenancy: &SqliteTenancy, ctx: &TenantContext, kind: Kind) -> Self {
        match kind {
            Kind::Tx => Self::Tx(tenancy.begin(ctx).await.unwrap()),
            Kind::Conn => Self::Conn(tenancy.acquire(ctx).await.unwrap()),
        }
    }

    async fn insert(&mut self, ctx: &TenantContext, id: i64) -> Result<(), sqlx::Error> {
        let query = sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, ?, 'n')")
            .bind(ctx.tenant_id())
            .bind(id);
        match self {
            Self::Tx(tx) => query.execute(&mut **tx).await.map(drop),
            Self::Conn(conn) => query.execute(&mut **conn).await.map(drop),
        }
    }

    async fn finish(self) -> Result<(), TenancyError> {
        match self {
            Self::Tx(tx) => tx.commit().await,
            Self::Conn(conn) => {
                drop(conn);
                Ok(())
            }
        }
    }
}

fn sqlite_tenancy(sandbox: &SqliteSandbox, grace: Option<Duration>) -> SqliteTenancy {
    let builder = sandbox.builder(sqlite_migrations()).unwrap();
    match grace {
        Some(grace) => builder.deletion_grace(grace),
        None => builder,
    }
    .build()
    .unwrap()
}

async fn sqlite_status(sandbox: &SqliteSandbox, id: TenantId) -> TenantStatus {
    sandbox
        .tenancy
        .catalog()
        .get(id)
        .await
        .unwrap()
        .unwrap()
        .status
}

fn assert_sqlite_refused(tenancy_result: Vec<Result<(), TenancyError>>, what: &str) {
    for result in tenancy_result {
        assert_refused(result, what);
    }
}

async fn sqlite_new_handles(
    tenancy: &SqliteTenancy,
    ctx: &TenantContext,
) -> Vec<Result<(), TenancyError>> {
    vec![
        tenancy.acquire(ctx).await.map(drop),
        tenancy.begin(ctx).await.map(drop),
        tenancy.begin_immediate(ctx).await.map(drop),
    ]
}

async fn sqlite_nothing_remains(sandbox: &SqliteSandbox, id: TenantId, what: &str) {
    let mut admin = sandbox
        .tenancy
        .unscoped_admin_connection(&sandbox.cluster, "test: count a deleted tenant's rows")
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM notes_rows WHERE tenant_id = ?")
        .bind(id)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(rows, 0, "{what}: {rows} rows of the deleted tenant remain");
    let record = sandbox.tenancy.catalog().get(id).await.unwrap().unwrap();
    if let Some(name) = record.placement.object_name() {
        let file = sandbox.dir.join(format!("{name}.sqlite"));
        assert!(!file.exists(), "{what}: {} remains", file.display());
    }
    assert_eq!(
        sqlite_status(sandbox, id).await,
        TenantStatus::Deleted,
        "{what}"
    );
}

async fn sqlite_ends_within_grace(
    sandbox: &SqliteSandbox,
    tenancy: &SqliteTenancy,
    strategy: Strategy,
    kind: Kind,
) {
    let what = format!("SQLite {strategy} {kind:?} ending within the grace");
    let ctx = sandbox
        .tenant(
            &format!("ends-{strategy}-{kind:?}").to_lowercase(),
            strategy,
        )
        .await
        .unwrap();
    let id = ctx.tenant_id();
    let mut handle = SqliteHandle::open(tenancy, &ctx, kind).await;
    handle.insert(&ctx, 1).await.unwrap();
    let deleting = tenancy.clone();
    let delete = tokio::spawn(async move {
        tokio::time::timeout(DELETE_LIMIT, deleting.delete_tenant(id)).await
    });
    for _ in 0..1000 {
        if sqlite_status(sandbox, id).await != TenantStatus::Active {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_sqlite_refused(sqlite_new_handles(tenancy, &ctx).await, &what);
    tokio::time::sleep(SETTLE).await;
    handle
        .insert(&ctx, 2)
        .await
        .unwrap_or_else(|e| panic!("{what}: the held handle's work failed: {e}"));
    handle.finish().await.unwrap();
    let deleted = delete
        .await
        .unwrap()
        .unwrap_or_else(|_| panic!("{what}: the delete did not return"));
    match deleted {
        Ok(record) => assert_eq!(record.status, TenantStatus::Deleted, "{what}"),
        Err(e) => panic!("{what}: the delete failed: {e}"),
    }
    sqlite_nothing_remains(sandbox, id, &what).await;
    assert_sqlite_refused(sqlite_new_handles(tenancy, &ctx).await, &what);
}

/// A handle held past the grace: SQLite cannot cut it, so the delete
/// fails with a typed error, leaves the tenant `deleting` (new handles
/// refused), and a retry once the handle is gone completes it.
async fn sqlite_held_past_grace(
    sandbox: &SqliteSandbox,
    tenancy: &SqliteTenancy,
    strategy: Strategy,
    kind: Kind,
) {
    let what = format!("SQLite {strategy} {kind:?} held past the grace");
    let ctx = sandbox
        .tenant(
            &format!("held-{strategy}-{kind:?}").to_lowercase(),
            strategy,
        )
        .await
        .unwrap();
    let id = ctx.tenant_id();
    let mut handle = SqliteHandle::open(tenancy, &ctx, kind).await;
    handle.insert(&ctx, 1).await.unwrap();
    let refused = tokio::time::timeout(DELETE_LIMIT, tenancy.delete_tenant(id))
        .await
        .unwrap_or_else(|_| panic!("{what}: the delete did not return"));
    match refused {
        Err(TenancyError::TenantInUse { tenant, .. }) => assert_eq!(tenant, id, "{what}"),
        other => panic!("{what}: expected the delete to wait and give up, got {other:?}"),
    }
    assert_eq!(
        sqlite_status(sandbox, id).await,
        TenantStatus::Deleting,
        "{what}"
    );
    assert_sqlite_refused(sqlite_new_handles(tenancy, &ctx).await, &what);
    // The held handle still works; whatever it writes goes with the tenant.
    handle.insert(&ctx, 2).await.unwrap();
    handle.finish().await.unwrap();
    let deleted = tokio::time::timeout(DELETE_LIMIT, tenancy.delete_tenant(id))
        .await
        .unwrap_or_else(|_| panic!("{what}: the retried delete did not return"))
        .unwrap();
    assert_eq!(deleted.status, TenantStatus::Deleted, "{what}");
    sqlite_nothing_remains(sandbox, id, &what).await;
}

#[tokio::test]
async fn sqlite_every_handle() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let patient = sqlite_tenancy(&sandbox, None);
    let tenancy = sqlite_tenancy(&sandbox, Some(SHORT_GRACE));
    for strategy in [Strategy::Shared, Strategy::Database] {
        for kind in [Kind::Conn, Kind::Tx] {
            sqlite_ends_within_grace(&sandbox, &patient, strategy, kind).await;
            sqlite_held_past_grace(&sandbox, &tenancy, strategy, kind).await;
        }
    }
    drop((patient, tenancy));
    sandbox.cleanup().await;
}

/// Both backends' builders share one rule: a grace period above an hour
/// is refused (a deletion would hold the tenant's lock that long).
#[tokio::test]
async fn a_deletion_grace_above_an_hour_is_refused() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let builder = |grace| {
        sandbox
            .builder(sqlite_migrations())
            .unwrap()
            .deletion_grace(grace)
            .build()
    };
    assert!(builder(Duration::from_secs(3600)).is_ok());
    assert!(matches!(
        builder(Duration::from_secs(3601)),
        Err(saas_tenancy::TenancyError::InvalidInput(_))
    ));
    sandbox.cleanup().await;
}
