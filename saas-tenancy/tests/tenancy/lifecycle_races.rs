//! Operations on one PostgreSQL tenant never interleave: each takes the
//! tenant's lock, then reads the tenant again, so it sees what a concurrent
//! operation did before it. A delete racing an export, import, suspend,
//! provisioning retry, second delete or fleet migration leaves consistent
//! results — a complete archive or a refusal, never a partial one; no rows
//! of a deleted tenant; no resurrection.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use saas_core::{TenantContext, TenantId, TenantSlug, TenantStatus};
use saas_tenancy::postgres::{MigrationOptions, PgTenancy, ScopeMode};
use saas_tenancy::testing::pg::PgSandbox;
use saas_tenancy::{
    Catalog, DynCatalog, ListOptions, NewTenant, Strategy, TenancyError, TenantObjectName,
    TenantPage, TenantRecord,
};
use sqlx::{AssertSqlSafe, Executor};

use crate::lifecycle::Recorder;
use crate::pg_env::sandbox;

/// How long the slow catalog holds a read back: the reader acts on what it
/// read this long ago. Much longer than a whole delete on the test machine.
const STALE: Duration = Duration::from_millis(600);
/// When the delete starts, after the slow operation has read the tenant.
const LEAD: Duration = Duration::from_millis(30);

/// A catalog whose reads come back late (stale): the window between an
/// operation's read and its action, which only the tenant's lock closes,
/// made wide enough to hit every time.
#[derive(Debug)]
struct SlowReads {
    inner: DynCatalog,
    get: Duration,
    list: Duration,
}

#[async_trait]
impl Catalog for SlowReads {
    async fn create(&self, tenant: NewTenant) -> Result<TenantRecord, TenancyError> {
        self.inner.create(tenant).await
    }

    async fn get(&self, id: TenantId) -> Result<Option<TenantRecord>, TenancyError> {
        let read = self.inner.get(id).await;
        tokio::time::sleep(self.get).await;
        read
    }

    async fn get_by_slug(&self, slug: &TenantSlug) -> Result<Option<TenantRecord>, TenancyError> {
        self.inner.get_by_slug(slug).await
    }

    async fn list(&self, options: &ListOptions) -> Result<TenantPage, TenancyError> {
        let read = self.inner.list(options).await;
        tokio::time::sleep(self.list).await;
        read
    }

    async fn set_status(
        &self,
        id: TenantId,
        to: TenantStatus,
    ) -> Result<TenantRecord, TenancyError> {
        self.inner.set_status(id, to).await
    }
}

fn slow(env: &PgSandbox, get: Duration, list: Duration, hooks: &Arc<Recorder>) -> PgTenancy {
    let catalog = Arc::new(SlowReads {
        inner: Arc::clone(env.tenancy.catalog()),
        get,
        list,
    });
    let hooks = Arc::clone(hooks);
    env.tenancy_over(catalog, |b| b.hooks(hooks)).unwrap()
}

async fn delete_later(tenancy: &PgTenancy, id: TenantId) -> Result<TenantRecord, TenancyError> {
    tokio::time::sleep(LEAD).await;
    tenancy.delete_tenant(id).await
}

async fn add_note(env: &PgSandbox, ctx: &TenantContext) {
    let mut tx = env.tenancy.begin(ctx).await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, 'n')")
        .bind(ctx.tenant_id())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn rows_of(env: &PgSandbox, table: &str, tenant: TenantId) -> i64 {
    // The sandbox's admin is a superuser: it sees through RLS.
    let sql = format!("SELECT count(*) FROM {table} WHERE tenant_id = $1");
    sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(tenant)
        .fetch_one(&env.admin)
        .await
        .unwrap()
}

async fn status(env: &PgSandbox, id: TenantId) -> TenantStatus {
    env.tenancy.catalog().get(id).await.unwrap().unwrap().status
}

/// Each operation read the tenant (active) before a delete started, and
/// acts after the delete finished. Without the lock-then-re-read, the
/// second delete fails with `deleted -> deleting`, the export returns an
/// empty archive as if complete, the import writes rows for a deleted
/// tenant and the retry reports a deleted tenant active.
#[tokio::test]
async fn operations_that_read_the_tenant_before_a_delete_act_on_it_deleted() {
    let Some(mut env) = sandbox("races::stale", ScopeMode::Shared).await else {
        return;
    };
    let recorder = Arc::new(Recorder::default());
    let slow = slow(&env, STALE, Duration::ZERO, &recorder);
    let fast = env.tenancy_with(|b| b.hooks(recorder.clone())).unwrap();
    let source = env.tenant("stale-source", Strategy::Shared).await.unwrap();
    add_note(&env, &source).await;
    let archive = env.tenancy.export_tenant(source.tenant_id()).await.unwrap();

    // Two deletes: both done, the deletion (and its hook) once.
    let t = env.tenant("stale-delete", Strategy::Schema).await.unwrap();
    let (a, b) = tokio::join!(
        slow.delete_tenant(t.tenant_id()),
        delete_later(&fast, t.tenant_id())
    );
    assert_eq!(a.unwrap().status, TenantStatus::Deleted);
    assert_eq!(b.unwrap().status, TenantStatus::Deleted);
    assert_eq!(recorder.count("deleted stale-delete"), 1);

    // Export: refused, not an empty archive passed off as the tenant's.
    let t = env.tenant("stale-export", Strategy::Shared).await.unwrap();
    add_note(&env, &t).await;
    let (exported, deleted) = tokio::join!(
        slow.export_tenant(t.tenant_id()),
        delete_later(&fast, t.tenant_id())
    );
    deleted.unwrap();
    match exported {
        Err(TenancyError::TenantNotServable { status, .. }) => {
            assert_eq!(status, TenantStatus::Deleted)
        }
        other => panic!("export of a tenant deleted meanwhile: {other:?}"),
    }

    // Import: refused, and no rows of the deleted tenant left behind.
    let t = env.tenant("stale-import", Strategy::Shared).await.unwrap();
    let (imported, deleted) = tokio::join!(
        slow.import_tenant(&t, &archive),
        delete_later(&fast, t.tenant_id())
    );
    deleted.unwrap();
    assert!(
        matches!(imported, Err(TenancyError::TenantNotServable { .. })),
        "{imported:?}"
    );
    assert_eq!(rows_of(&env, "notes", t.tenant_id()).await, 0);

    // Suspend and provisioning retry: typed errors, the tenant stays deleted.
    let t = env.tenant("stale-suspend", Strategy::Shared).await.unwrap();
    let (suspended, deleted) = tokio::join!(
        slow.set_status(t.tenant_id(), TenantStatus::Suspended),
        delete_later(&fast, t.tenant_id())
    );
    deleted.unwrap();
    assert!(
        matches!(
            suspended,
            Err(TenancyError::InvalidTransition {
                from: TenantStatus::Deleted,
                ..
            })
        ),
        "{suspended:?}"
    );
    assert_eq!(status(&env, t.tenant_id()).await, TenantStatus::Deleted);
    let t = env.tenant("stale-retry", Strategy::Shared).await.unwrap();
    let (retried, deleted) = tokio::join!(
        slow.retry_provisioning(t.tenant_id()),
        delete_later(&fast, t.tenant_id())
    );
    deleted.unwrap();
    assert!(
        matches!(
            retried,
            Err(TenancyError::InvalidTransition {
                from: TenantStatus::Deleted,
                ..
            })
        ),
        "{retried:?}"
    );
    assert_eq!(status(&env, t.tenant_id()).await, TenantStatus::Deleted);
    env.cleanup().await;
}

/// A fleet migration that listed a tenant before it was deleted skips it
/// (reported not attempted) instead of failing on its dropped schema.
#[tokio::test]
async fn a_fleet_migration_skips_a_tenant_deleted_after_the_listing() {
    let Some(mut env) = sandbox("races::migrate", ScopeMode::Shared).await else {
        return;
    };
    let recorder = Arc::new(Recorder::default());
    let fleet = slow(&env, Duration::ZERO, STALE, &recorder);
    let gone = env.tenant("listed-gone", Strategy::Schema).await.unwrap();
    let kept = env.tenant("listed-kept", Strategy::Database).await.unwrap();
    let (report, deleted) = tokio::join!(
        fleet.migrate_tenants(MigrationOptions::default().with_canaries(0)),
        delete_later(&env.tenancy, gone.tenant_id())
    );
    deleted.unwrap();
    let report = report.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.not_attempted, vec![gone.tenant_id()]);
    assert_eq!(report.up_to_date, vec![kept.tenant_id()]);
    env.cleanup().await;
}

/// Extra tenant tables, so an export reads several tables one after the
/// other — the window a delete could fall into.
const EXTRA_TABLES: usize = 6;

async fn fill(env: &PgSandbox, ctx: &TenantContext, strategy: Strategy) {
    let schema = match strategy {
        Strategy::Schema => TenantObjectName::for_tenant(ctx.tenant_id()).quoted(),
        _ => format!("\"{}\"", env.shared_schema),
    };
    for k in 0..EXTRA_TABLES {
        let table = format!("{schema}.race_{k}");
        let statements = [
            format!("CREATE TABLE IF NOT EXISTS {table} (tenant_id uuid NOT NULL, n int NOT NULL)"),
            format!(
                "INSERT INTO {table} SELECT '{}', g FROM generate_series(1, 3) g",
                ctx.tenant_id()
            ),
        ];
        for statement in statements {
            env.admin.execute(AssertSqlSafe(statement)).await.unwrap();
        }
    }
    add_note(env, ctx).await;
}

/// Delete, export and suspend started together, the delete shifted from
/// 3 ms before to 8 ms after the others, on row and schema tenants: the
/// delete always succeeds; the export is complete (every table, every
/// row) or refused as not servable; the suspend succeeds only before the
/// delete and is a transition error after; the tenant ends deleted.
#[tokio::test]
async fn a_delete_racing_an_export_and_a_suspend_never_leaves_partial_results() {
    let Some(mut env) = sandbox("races::sweep", ScopeMode::Shared).await else {
        return;
    };
    let (mut complete, mut refused) = (0, 0);
    for shift in -3i64..=8 {
        let strategy = if shift % 2 == 0 {
            Strategy::Shared
        } else {
            Strategy::Schema
        };
        let ctx = env
            .tenant(&format!("sweep{}", shift + 3), strategy)
            .await
            .unwrap();
        fill(&env, &ctx, strategy).await;
        let id = ctx.tenant_id();
        let wait = |ms: i64| tokio::time::sleep(Duration::from_millis(ms.max(0) as u64));
        let (deleted, exported, suspended) = tokio::join!(
            async {
                wait(shift).await;
                env.tenancy.delete_tenant(id).await
            },
            async {
                wait(-shift).await;
                env.tenancy.export_tenant(id).await
            },
            async {
                wait(-shift).await;
                env.tenancy.set_status(id, TenantStatus::Suspended).await
            },
        );
        assert_eq!(deleted.unwrap().status, TenantStatus::Deleted, "{shift}");
        match exported {
            Ok(archive) => {
                complete += 1;
                let tables = &archive.manifest.tables;
                assert_eq!(tables.len(), EXTRA_TABLES + 1, "shift {shift}: {tables:?}");
                for table in tables {
                    let rows = if table.table == "notes" { 1 } else { 3 };
                    assert_eq!(table.rows, rows, "shift {shift}: {}", table.table);
                }
            }
            Err(TenancyError::TenantNotServable { .. }) => refused += 1,
            Err(e) => panic!("shift {shift}: export failed midway: {e}"),
        }
        match suspended {
            Ok(record) => assert_eq!(record.status, TenantStatus::Suspended),
            Err(TenancyError::InvalidTransition { from, .. }) => assert!(
                matches!(from, TenantStatus::Deleting | TenantStatus::Deleted),
                "shift {shift}: {from}"
            ),
            Err(e) => panic!("shift {shift}: suspend: {e}"),
        }
        assert_eq!(status(&env, id).await, TenantStatus::Deleted, "{shift}");
        assert_eq!(rows_of(&env, "notes", id).await, 0);
    }
    eprintln!("exports complete: {complete}, refused: {refused}");
    env.cleanup().await;
}
