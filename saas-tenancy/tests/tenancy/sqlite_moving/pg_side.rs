//! The PostgreSQL side of the SQLite → PostgreSQL move tests: the
//! tenant's rows as a scoped handle and as the admin see them, what a
//! move left on its target, and a PostgreSQL row tenant next door.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use saas_core::{TenantContext, TenantId};
use saas_tenancy::testing::pg::PgSandbox;
use saas_tenancy::{Placement, Strategy};

use crate::pg_env::add_note;

/// The tenant's rows through a `PgTenancy` scoped handle.
pub(crate) async fn pg_rows(pg: &PgSandbox, ctx: &TenantContext) -> Vec<(i64, String)> {
    let mut conn = pg.tenancy.acquire(ctx).await.unwrap();
    sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
}

/// The tenant's rows in the shared `notes` table, read as the admin
/// (no RLS, no library).
pub(crate) async fn shared_rows(pg: &PgSandbox, tenant: TenantId) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT id, body FROM notes WHERE tenant_id = $1 ORDER BY id")
        .bind(tenant)
        .fetch_all(&pg.admin)
        .await
        .unwrap()
}

/// Whether anything of the move is left on `to`: its schema or database,
/// or the tenant's rows in the shared tables.
pub(crate) async fn target_left(pg: &PgSandbox, to: &Placement, tenant: TenantId) -> bool {
    let sql = match to.strategy() {
        Strategy::Shared => return !shared_rows(pg, tenant).await.is_empty(),
        Strategy::Schema => "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
        Strategy::Database => "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
        other => panic!("no such target in these tests: {other:?}"),
    };
    sqlx::query_scalar(sql)
        .bind(to.object_name().unwrap().as_str())
        .fetch_one(&pg.admin)
        .await
        .unwrap()
}

/// A PostgreSQL row tenant with rows of its own in the shared tables the
/// moves write into (or next to).
pub(crate) struct Neighbour {
    pub(crate) ctx: TenantContext,
    pub(crate) rows: Vec<(i64, String)>,
}

impl Neighbour {
    pub(crate) async fn new(pg: &mut PgSandbox) -> Self {
        let ctx = pg.tenant("pg-neighbour", Strategy::Shared).await.unwrap();
        for n in 0..25 {
            add_note(pg, &ctx, &format!("neighbour {n}")).await;
        }
        let rows = shared_rows(pg, ctx.tenant_id()).await;
        assert_eq!(rows.len(), 25);
        Neighbour { ctx, rows }
    }

    /// Writes a row at a time through its scoped transactions until
    /// `stop`, each of which must succeed (it is never fenced; its keys
    /// come from the shared sequence a move into the shared tables
    /// advances meanwhile); returns the rows written.
    pub(crate) fn write_until(
        &self,
        pg: &PgSandbox,
        stop: &Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<Vec<(i64, String)>> {
        let (tenancy, ctx, stop) = (pg.tenancy.clone(), self.ctx.clone(), Arc::clone(stop));
        tokio::spawn(async move {
            let mut written = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let body = format!("neighbour during {}", written.len());
                let mut tx = tenancy.begin(&ctx).await.unwrap();
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO notes (tenant_id, body) VALUES ($1, $2) RETURNING id",
                )
                .bind(ctx.tenant_id())
                .bind(&body)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
                tx.commit().await.unwrap();
                written.push((id, body));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            written
        })
    }

    /// Its rows are what they were, as stored and as it sees them.
    pub(crate) async fn check(&self, pg: &PgSandbox, when: &str) {
        assert_eq!(
            shared_rows(pg, self.ctx.tenant_id()).await,
            self.rows,
            "{when}"
        );
        assert_eq!(pg_rows(pg, &self.ctx).await, self.rows, "{when}");
    }
}

/// The id the target's sequence hands out next, drawn through a scoped
/// handle.
pub(crate) async fn next_id(pg: &PgSandbox, ctx: &TenantContext) -> i64 {
    let mut conn = pg.tenancy.acquire(ctx).await.unwrap();
    sqlx::query_scalar("INSERT INTO notes (tenant_id, body) VALUES ($1, 'next') RETURNING id")
        .bind(ctx.tenant_id())
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}
