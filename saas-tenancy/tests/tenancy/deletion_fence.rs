//! Deletion is final: a scoped handle opened before `delete_tenant` —
//! a `PgTenantTx` or a `PgTenantConn`, in either scope mode, for every
//! placement — cannot leave rows of the deleted tenant behind. The
//! deletion fences the tenant first (new handles refused), waits up to
//! the grace period for held handles to end, cuts the rest, then deletes
//! the data: a handle that finishes within the grace has its writes
//! deleted with the tenant; one held past it is cut and writes nothing
//! more. No deadlock, and the delete returns `Ok` with the tenant
//! `deleted`.

use std::time::Duration;

use saas_core::{TenantContext, TenantId, TenantStatus};
use saas_tenancy::postgres::{PgTenancy, PgTenantConn, PgTenantTx, ScopeMode};
use saas_tenancy::testing::pg::PgSandbox;
use saas_tenancy::{Strategy, TenancyError};

use crate::pg_env::sandbox;

mod requests;
mod sqlite;

/// How long a delete may take in these tests before it counts as hung
/// (a deadlock, or a wait for a handle that never ends).
const DELETE_LIMIT: Duration = Duration::from_secs(20);
/// How long a held handle waits after the delete fenced the tenant before
/// it writes again: longer than a whole delete that does not wait for it.
const SETTLE: Duration = Duration::from_millis(300);
/// The grace of the tenancies whose held handles are cut.
const SHORT_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tx,
    Conn,
}

enum Handle {
    Tx(PgTenantTx),
    Conn(PgTenantConn),
}

impl Handle {
    async fn open(tenancy: &PgTenancy, ctx: &TenantContext, kind: Kind) -> Self {
        match kind {
            Kind::Tx => Self::Tx(tenancy.begin(ctx).await.unwrap()),
            Kind::Conn => Self::Conn(tenancy.acquire(ctx).await.unwrap()),
        }
    }

    async fn insert(&mut self, ctx: &TenantContext, body: &str) -> Result<(), sqlx::Error> {
        let query = sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, $2)")
            .bind(ctx.tenant_id())
            .bind(body);
        match self {
            Self::Tx(tx) => query.execute(&mut **tx).await.map(drop),
            Self::Conn(conn) => query.execute(&mut **conn).await.map(drop),
        }
    }

    /// Commits a transaction; gives a connection back.
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

/// A tenancy in `mode` whose deletions wait up to `grace` (the default
/// when `None`) for held handles.
fn tenancy_for(env: &PgSandbox, mode: ScopeMode, grace: Option<Duration>) -> PgTenancy {
    env.tenancy_with(|b| match grace {
        Some(grace) => b.scope_mode(mode).deletion_grace(grace),
        None => b.scope_mode(mode),
    })
    .unwrap()
}

async fn status(env: &PgSandbox, id: TenantId) -> TenantStatus {
    env.tenancy.catalog().get(id).await.unwrap().unwrap().status
}

/// Waits until the delete has fenced the tenant (it is no longer active).
async fn fenced(env: &PgSandbox, id: TenantId) {
    for _ in 0..1000 {
        if status(env, id).await != TenantStatus::Active {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the delete never fenced tenant {id}");
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, TenancyError>, what: &str) {
    match result {
        Err(TenancyError::TenantNotServable {
            status: TenantStatus::Deleting | TenantStatus::Deleted,
            ..
        }) => {}
        other => panic!("{what}: a new handle must be refused, got {other:?}"),
    }
}

/// Nothing of the tenant is left: no row in the shared tables, no schema,
/// role or database (the sandbox's admin is a superuser: it sees through RLS).
async fn assert_nothing_remains(env: &PgSandbox, id: TenantId, what: &str) {
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM notes WHERE tenant_id = $1")
        .bind(id)
        .fetch_one(&env.admin)
        .await
        .unwrap();
    assert_eq!(rows, 0, "{what}: {rows} rows of the deleted tenant remain");
    let record = env.tenancy.catalog().get(id).await.unwrap().unwrap();
    if let Some(name) = record.placement.object_name() {
        let left: Vec<String> = sqlx::query_scalar(
            "SELECT 'schema' FROM pg_namespace WHERE nspname = $1 \
             UNION ALL SELECT 'role' FROM pg_roles WHERE rolname = $1 \
             UNION ALL SELECT 'database' FROM pg_database WHERE datname = $1",
        )
        .bind(name.as_str())
        .fetch_all(&env.admin)
        .await
        .unwrap();
        assert!(
            left.is_empty(),
            "{what}: {left:?} of the deleted tenant remain"
        );
    }
    assert_eq!(status(env, id).await, TenantStatus::Deleted, "{what}");
}

async fn delete_within_limit(tenancy: &PgTenancy, id: TenantId, what: &str) {
    let deleted = tokio::time::timeout(DELETE_LIMIT, tenancy.delete_tenant(id))
        .await
        .unwrap_or_else(|_| panic!("{what}: the delete did not return (deadlock or endless wait)"));
    match deleted {
        Ok(record) => assert_eq!(record.status, TenantStatus::Deleted, "{what}"),
        Err(e) => panic!("{what}: the delete failed: {e}"),
    }
}

/// A handle that writes after the delete started and then ends (within
/// the grace): its work succeeds, and is deleted with the tenant.
async fn ends_within_grace(
    env: &mut PgSandbox,
    tenancy: &PgTenancy,
    strategy: Strategy,
    kind: Kind,
) {
    let what = format!("{strategy} {kind:?} ending within the grace");
    let slug = format!("ends-{strategy}-{kind:?}").to_lowercase();
    let ctx = env.tenant(&slug, strategy).await.unwrap();
    let id = ctx.tenant_id();
    let mut handle = Handle::open(tenancy, &ctx, kind).await;
    handle.insert(&ctx, "before").await.unwrap();

    let deleting = tenancy.clone();
    let delete = tokio::spawn(async move {
        tokio::time::timeout(DELETE_LIMIT, deleting.delete_tenant(id)).await
    });
    fenced(env, id).await;
    assert_refused(tenancy.begin(&ctx).await, &what);
    assert_refused(tenancy.acquire(&ctx).await, &what);
    tokio::time::sleep(SETTLE).await;

    handle
        .insert(&ctx, "during")
        .await
        .unwrap_or_else(|e| panic!("{what}: the held handle's work failed: {e}"));
    handle
        .finish()
        .await
        .unwrap_or_else(|e| panic!("{what}: the held handle's commit failed: {e}"));
    let deleted = delete
        .await
        .unwrap()
        .unwrap_or_else(|_| panic!("{what}: the delete did not return (deadlock or endless wait)"));
    match deleted {
        Ok(record) => assert_eq!(record.status, TenantStatus::Deleted, "{what}"),
        Err(e) => panic!("{what}: the delete failed: {e}"),
    }
    assert_nothing_remains(env, id, &what).await;
    assert_refused(tenancy.begin(&ctx).await, &what);
    assert_refused(tenancy.acquire(&ctx).await, &what);
}

/// A handle held, idle, through the whole delete (opened by `holder`,
/// another instance — another process — or the deleting one): the delete
/// cuts it after the grace, and nothing it tries afterwards is written.
async fn cut_after_grace(
    env: &mut PgSandbox,
    holder: &PgTenancy,
    tenancy: &PgTenancy,
    strategy: Strategy,
    kind: Kind,
    what: &str,
) {
    let what = format!("{strategy} {kind:?} held past the grace, {what}");
    let slug = format!("cut-{strategy}-{kind:?}-{}", holder_tag(holder, tenancy)).to_lowercase();
    let ctx = env.tenant(&slug, strategy).await.unwrap();
    let id = ctx.tenant_id();
    let mut handle = Handle::open(holder, &ctx, kind).await;
    handle.insert(&ctx, "before").await.unwrap();

    delete_within_limit(tenancy, id, &what).await;
    let late = handle.insert(&ctx, "after").await;
    let finished = handle.finish().await;
    assert!(
        late.is_err() || finished.is_err(),
        "{what}: the held handle still wrote after the delete returned"
    );
    assert_nothing_remains(env, id, &what).await;
    assert_refused(tenancy.begin(&ctx).await, &what);
}

fn holder_tag(holder: &PgTenancy, tenancy: &PgTenancy) -> &'static str {
    if std::ptr::eq(holder, tenancy) {
        "own"
    } else {
        "other"
    }
}

async fn every_handle(name: &str, mode: ScopeMode, strategy: Strategy) {
    let Some(mut env) = sandbox(name, mode).await else {
        return;
    };
    let patient = tenancy_for(&env, mode, None);
    let tenancy = tenancy_for(&env, mode, Some(SHORT_GRACE));
    let other = tenancy_for(&env, mode, Some(SHORT_GRACE));
    for kind in [Kind::Tx, Kind::Conn] {
        ends_within_grace(&mut env, &patient, strategy, kind).await;
        cut_after_grace(
            &mut env,
            &tenancy,
            &tenancy,
            strategy,
            kind,
            "same instance",
        )
        .await;
        cut_after_grace(&mut env, &other, &tenancy, strategy, kind, "other instance").await;
    }
    for t in [&patient, &tenancy, &other] {
        t.runtime_pool(&env.cluster).unwrap().close().await;
    }
    env.cleanup().await;
}

#[tokio::test]
async fn pg_row_tenant_in_shared_mode() {
    every_handle("fence::row_shared", ScopeMode::Shared, Strategy::Shared).await;
}

#[tokio::test]
async fn pg_row_tenant_in_tenant_pools_mode() {
    every_handle("fence::row_pools", ScopeMode::TenantPools, Strategy::Shared).await;
}

#[tokio::test]
async fn pg_schema_tenant_in_shared_mode() {
    every_handle("fence::schema_shared", ScopeMode::Shared, Strategy::Schema).await;
}

#[tokio::test]
async fn pg_schema_tenant_in_tenant_pools_mode() {
    every_handle(
        "fence::schema_pools",
        ScopeMode::TenantPools,
        Strategy::Schema,
    )
    .await;
}

#[tokio::test]
async fn pg_database_tenant() {
    every_handle("fence::database", ScopeMode::Shared, Strategy::Database).await;
}
