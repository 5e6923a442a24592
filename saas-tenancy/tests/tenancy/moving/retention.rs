//! Kept sources: moving a tenant back into the placement a move kept
//! (while writers keep writing: every acknowledged write exactly once, no
//! stale row of the kept copy, neighbours untouched), again after another
//! move; and their purge once the retention has passed on the tenancy's
//! clock — not before, once, from two servers at the same time, and never
//! a placement the tenant is served from.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use saas_core::{ManualClock, TenantContext};
use saas_tenancy::postgres::{MoveMethod, MoveOptions, MoveReport, PgTenancy};
use saas_tenancy::{Placement, Strategy};
use sqlx::PgPool;

use super::fixture::{MoveEnv, env};
use super::writers::{Acked, check_acked, insert, progress, writers};

const DAY: Duration = Duration::from_secs(86_400);

async fn placement(tenancy: &PgTenancy, ctx: &TenantContext) -> Placement {
    tenancy
        .catalog()
        .get(ctx.tenant_id())
        .await
        .unwrap()
        .unwrap()
        .placement
}

async fn delete(tenancy: &PgTenancy, ctx: &TenantContext, id: i64) -> u64 {
    let mut tx = tenancy.begin(ctx).await.unwrap();
    let n = sqlx::query("DELETE FROM notes WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    tx.commit().await.unwrap();
    n
}

async fn kept(tenancy: &PgTenancy, ctx: &TenantContext) -> Vec<Placement> {
    tenancy
        .kept_sources(ctx.tenant_id())
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.placement)
        .collect()
}

async fn schema_exists(admin: &PgPool, placement: &Placement) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(placement.object_name().unwrap().as_str())
        .fetch_one(admin)
        .await
        .unwrap()
}

/// Moves `ctx` to `to` keeping its source for a day, then checks a fresh
/// process (no cached record) writes there: the target's lock-out is
/// lifted.
async fn move_keeping(
    env: &MoveEnv,
    mover: &PgTenancy,
    ctx: &TenantContext,
    to: &Placement,
    method: MoveMethod,
) -> MoveReport {
    let report = mover
        .move_tenant(
            ctx.tenant_id(),
            to.clone(),
            MoveOptions::default().keep_source_for(DAY),
        )
        .await
        .unwrap();
    eprintln!(
        "{:?} -> {:?}: fence {:?}, rows {:?}",
        report.from, report.to, report.fence, report.rows
    );
    assert_eq!(report.method, method);
    assert_eq!(&placement(mover, ctx).await, to);
    let fresh = env.tenancy(Duration::from_secs(1), true);
    let body = format!("fresh process after {}", report.move_id);
    let id = insert(&fresh, ctx, &body).await.unwrap();
    assert!(
        env.stored(to, ctx.tenant_id())
            .await
            .contains(&(id, body.clone())),
        "{body} stored on the target"
    );
    report
}

/// The writers of one test, with what they had acknowledged.
struct Running {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
    ops: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    fn start(tenancy: &PgTenancy, ctx: &TenantContext) -> Self {
        let (stop, acked, ops) = Default::default();
        let tasks = writers(tenancy, ctx, &stop, &acked, &ops);
        Self {
            stop,
            acked,
            ops,
            tasks,
        }
    }

    /// Waits for 150 more operations, of which at least 50 acknowledged.
    async fn advance(&self) {
        let before = self.acked.lock().unwrap().rows.len();
        progress(&self.ops, 150).await;
        let after = self.acked.lock().unwrap().rows.len();
        assert!(
            after >= before + 50,
            "writers acknowledged {before} → {after}"
        );
    }

    async fn stop(self) -> Acked {
        self.stop.store(true, Ordering::Release);
        for t in self.tasks {
            t.await.unwrap();
        }
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

async fn neighbours(env: &MoveEnv, tenancy: &PgTenancy) -> Vec<(TenantContext, Placement)> {
    let mut all = Vec::new();
    for (slug, strategy, cluster) in [
        ("next-row", Strategy::Shared, &env.one.name),
        ("next-schema", Strategy::Schema, &env.one.name),
        ("far-row", Strategy::Shared, &env.two.name),
    ] {
        let n = env.tenant(tenancy, slug, strategy, cluster).await;
        for i in 0..5 {
            insert(tenancy, &n, &format!("{slug} {i}")).await.unwrap();
        }
        let p = placement(tenancy, &n).await;
        all.push((n, p));
    }
    all
}

async fn snapshot(
    env: &MoveEnv,
    neighbours: &[(TenantContext, Placement)],
) -> Vec<Vec<(i64, String)>> {
    let mut rows = Vec::new();
    for (n, p) in neighbours {
        rows.push(env.stored(p, n.tenant_id()).await);
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row_to_schema_and_back_to_row_and_back_again_within_retention() {
    let Some(env) = env("moving::retention_row_back").await else {
        return;
    };
    let mover = env.tenancy(Duration::from_secs(1), true);
    let ctx = env
        .tenant(&mover, "goes-back", Strategy::Shared, &env.one.name)
        .await;
    let next = neighbours(&env, &mover).await;
    let before = snapshot(&env, &next).await;
    let row = placement(&mover, &ctx).await;
    let schema = Placement::derive(Strategy::Schema, env.one.name.clone(), ctx.tenant_id());
    // Rows deleted while the tenant is away: the kept copy still has them.
    let mut doomed = Vec::new();
    for i in 0..10 {
        doomed.push(insert(&mover, &ctx, &format!("doomed {i}")).await.unwrap());
    }

    let running = Running::start(&mover, &ctx);
    running.advance().await;
    move_keeping(&env, &mover, &ctx, &schema, MoveMethod::CapturedCopy).await;
    assert_eq!(kept(&mover, &ctx).await, vec![row.clone()]);
    running.advance().await;
    for id in &doomed {
        assert_eq!(delete(&mover, &ctx, *id).await, 1);
    }
    let stale = env.stored(&row, ctx.tenant_id()).await;
    assert!(
        doomed
            .iter()
            .all(|id| stale.iter().any(|(stored, _)| stored == id)),
        "the kept copy holds the rows deleted since"
    );

    // Back into the kept row placement.
    let back = move_keeping(&env, &mover, &ctx, &row, MoveMethod::CapturedCopy).await;
    assert_eq!(
        kept(&mover, &ctx).await,
        vec![schema.clone()],
        "the row source is in use again, the schema is kept"
    );
    running.advance().await;
    let on_row = env.stored(&row, ctx.tenant_id()).await;
    assert!(
        on_row.iter().all(|(id, _)| !doomed.contains(id)),
        "no stale row of the kept copy"
    );
    assert!(on_row.len() as u64 >= back.rows["notes"]);

    // And back into the schema the last move kept.
    let again = move_keeping(&env, &mover, &ctx, &schema, MoveMethod::CapturedCopy).await;
    assert_eq!(kept(&mover, &ctx).await, vec![row.clone()]);
    running.advance().await;
    let acked = running.stop().await;

    let on_schema = env.stored(&schema, ctx.tenant_id()).await;
    check_acked(&acked, &on_schema);
    assert!(on_schema.iter().all(|(id, _)| !doomed.contains(id)));
    // The row copy kept by the last move: what the tenant held at its
    // fence, deleted rows included nowhere.
    let kept_rows = env.stored(&row, ctx.tenant_id()).await;
    assert_eq!(kept_rows.len() as u64, again.rows["notes"]);
    assert!(kept_rows.iter().all(|(id, _)| !doomed.contains(id)));
    let ids: BTreeMap<i64, &String> = on_schema.iter().map(|(id, b)| (*id, b)).collect();
    assert!(kept_rows.iter().all(|(id, _)| ids.contains_key(id)));
    assert_eq!(snapshot(&env, &next).await, before, "neighbours untouched");
    assert_eq!(env.replication_leftovers().await, 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_to_database_and_back_to_the_kept_schema() {
    let Some(env) = env("moving::retention_schema_back").await else {
        return;
    };
    let mover = env.tenancy(Duration::from_secs(1), true);
    let ctx = env
        .tenant(&mover, "goes-back", Strategy::Schema, &env.one.name)
        .await;
    let next = neighbours(&env, &mover).await;
    let before = snapshot(&env, &next).await;
    let schema = placement(&mover, &ctx).await;
    let database = Placement::derive(Strategy::Database, env.one.name.clone(), ctx.tenant_id());
    let doomed = insert(&mover, &ctx, "doomed").await.unwrap();

    let running = Running::start(&mover, &ctx);
    running.advance().await;
    move_keeping(
        &env,
        &mover,
        &ctx,
        &database,
        MoveMethod::LogicalReplication,
    )
    .await;
    assert_eq!(kept(&mover, &ctx).await, vec![schema.clone()]);
    running.advance().await;
    assert_eq!(delete(&mover, &ctx, doomed).await, 1);
    assert!(
        env.stored(&schema, ctx.tenant_id())
            .await
            .iter()
            .any(|(id, _)| *id == doomed),
        "the kept schema still holds the row deleted since"
    );

    let back = move_keeping(&env, &mover, &ctx, &schema, MoveMethod::CapturedCopy).await;
    assert_eq!(kept(&mover, &ctx).await, vec![database.clone()]);
    running.advance().await;
    // Once more to the database the last move kept (replication again).
    move_keeping(
        &env,
        &mover,
        &ctx,
        &database,
        MoveMethod::LogicalReplication,
    )
    .await;
    assert_eq!(kept(&mover, &ctx).await, vec![schema.clone()]);
    running.advance().await;
    let acked = running.stop().await;

    let on_database = env.stored(&database, ctx.tenant_id()).await;
    check_acked(&acked, &on_database);
    assert!(on_database.iter().all(|(id, _)| *id != doomed));
    let kept_rows = env.stored(&schema, ctx.tenant_id()).await;
    assert!(kept_rows.iter().all(|(id, _)| *id != doomed));
    assert!(kept_rows.len() as u64 >= back.rows["notes"]);
    assert_eq!(snapshot(&env, &next).await, before, "neighbours untouched");
    assert_eq!(env.replication_leftovers().await, 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kept_sources_are_purged_once_their_retention_has_passed_and_not_before() {
    let Some(env) = env("moving::retention_purge").await else {
        return;
    };
    let start = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let clock = ManualClock::new(start);
    let tenancy = env.tenancy_with_clock(Arc::new(clock.clone()));
    let other_server = env.tenancy_with_clock(Arc::new(clock.clone()));
    let hour = Duration::from_secs(3600);
    let (away, back, forever) = (
        env.tenant(&tenancy, "away", Strategy::Shared, &env.one.name)
            .await,
        env.tenant(&tenancy, "back", Strategy::Shared, &env.one.name)
            .await,
        env.tenant(&tenancy, "forever", Strategy::Shared, &env.one.name)
            .await,
    );
    for ctx in [&away, &back, &forever] {
        for i in 0..20 {
            insert(&tenancy, ctx, &format!("row {i}")).await.unwrap();
        }
    }
    let next = neighbours(&env, &tenancy).await;
    let before = snapshot(&env, &next).await;
    let row = |ctx: &TenantContext| {
        Placement::derive(Strategy::Shared, env.one.name.clone(), ctx.tenant_id())
    };
    let schema = |ctx: &TenantContext| {
        Placement::derive(Strategy::Schema, env.one.name.clone(), ctx.tenant_id())
    };
    let database = |ctx: &TenantContext| {
        Placement::derive(Strategy::Database, env.one.name.clone(), ctx.tenant_id())
    };
    let keep = |d| MoveOptions::default().keep_source_for(d);

    // away: row → schema (kept 1 h) → database (kept 2 h), a placement
    // other than the kept one. back: row → schema → row (back into the
    // kept row source). forever: kept without a retention.
    tenancy
        .move_tenant(away.tenant_id(), schema(&away), keep(hour))
        .await
        .unwrap();
    tenancy
        .move_tenant(back.tenant_id(), schema(&back), keep(hour))
        .await
        .unwrap();
    tenancy
        .move_tenant(
            forever.tenant_id(),
            schema(&forever),
            MoveOptions::default().keep_source(true),
        )
        .await
        .unwrap();
    let sources = tenancy.kept_sources(away.tenant_id()).await.unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].placement, row(&away));
    assert_eq!(
        sources[0].kept_until,
        Some(start + chrono::Duration::hours(1)),
        "the retention runs from the cut-over, on the tenancy's clock"
    );
    let nothing = tenancy.purge_expired_sources().await.unwrap();
    assert!(nothing.purged.is_empty() && nothing.deferred.is_empty() && nothing.failed.is_empty());
    assert_eq!(env.stored(&row(&away), away.tenant_id()).await.len(), 20);

    tenancy
        .move_tenant(away.tenant_id(), database(&away), keep(2 * hour))
        .await
        .unwrap();
    assert_eq!(kept(&tenancy, &away).await, vec![row(&away), schema(&away)]);
    assert_eq!(
        env.stored(&row(&away), away.tenant_id()).await.len(),
        20,
        "a move elsewhere leaves the kept source alone"
    );
    clock.advance(chrono::Duration::minutes(30));
    tenancy
        .move_tenant(back.tenant_id(), row(&back), keep(hour))
        .await
        .unwrap();
    assert_eq!(kept(&tenancy, &back).await, vec![schema(&back)]);

    // Before the retention ends: nothing.
    clock.advance(chrono::Duration::minutes(29));
    let early = tenancy.purge_expired_sources().await.unwrap();
    assert!(early.purged.is_empty(), "{early:?}");
    assert_eq!(env.stored(&row(&away), away.tenant_id()).await.len(), 20);

    // Past away's first retention: two servers purge at once; the row
    // source goes exactly once, the back tenant's live rows stay.
    clock.advance(chrono::Duration::minutes(2));
    let (a, b) = tokio::join!(
        tenancy.purge_expired_sources(),
        other_server.purge_expired_sources()
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.failed.is_empty() && b.failed.is_empty(), "{a:?} {b:?}");
    let purged: Vec<_> = a.purged.iter().chain(&b.purged).collect();
    assert_eq!(purged.len(), 1, "{a:?} {b:?}");
    assert_eq!(purged[0].tenant, away.tenant_id());
    assert_eq!(purged[0].placement, row(&away));
    assert!(env.stored(&row(&away), away.tenant_id()).await.is_empty());
    assert!(schema_exists(&env.one.admin, &schema(&away)).await);
    assert_eq!(
        env.stored(&row(&back), back.tenant_id()).await.len(),
        20,
        "the source the tenant moved back into is not purged"
    );
    assert_eq!(kept(&tenancy, &away).await, vec![schema(&away)]);
    let again = tenancy.purge_expired_sources().await.unwrap();
    assert!(
        again.purged.is_empty() && again.deferred.is_empty(),
        "{again:?}"
    );

    // Past every retention: away's schema and back's schema go; the
    // source kept without a retention stays.
    clock.advance(chrono::Duration::hours(2));
    let late = other_server.purge_expired_sources().await.unwrap();
    let mut tenants: Vec<_> = late.purged.iter().map(|k| k.tenant).collect();
    tenants.sort();
    let mut expected = vec![away.tenant_id(), back.tenant_id()];
    expected.sort();
    assert_eq!(tenants, expected, "{late:?}");
    assert!(!schema_exists(&env.one.admin, &schema(&away)).await);
    assert!(!schema_exists(&env.one.admin, &schema(&back)).await);
    assert_eq!(
        env.stored(&row(&forever), forever.tenant_id()).await.len(),
        20
    );
    assert_eq!(kept(&tenancy, &forever).await, vec![row(&forever)]);
    assert!(kept(&tenancy, &away).await.is_empty());
    assert!(kept(&tenancy, &back).await.is_empty());

    // Every tenant is served where the catalog says.
    for ctx in [&away, &back, &forever] {
        insert(&tenancy, ctx, "after the purge").await.unwrap();
    }
    assert_eq!(env.stored(&row(&back), back.tenant_id()).await.len(), 21);
    assert_eq!(snapshot(&env, &next).await, before, "neighbours untouched");
    env.cleanup().await;
}

/// A process whose cached record still names the kept source (it missed
/// every notification) cannot write there while the tenant is moved back
/// — the move clears that placement and fills it; it opens for the
/// tenant at the cut-over.
async fn stale_process_kept_out_of_the_kept_source(test: &str, from: Strategy, away: Strategy) {
    let Some(env) = env(test).await else { return };
    let mover = env.tenancy(Duration::from_secs(1), true);
    let deaf = env.tenancy(Duration::from_secs(3600), false);
    let ctx = env.tenant(&mover, "goes-back", from, &env.one.name).await;
    let source = placement(&mover, &ctx).await;
    insert(&deaf, &ctx, "warm-up").await.unwrap();
    let to = Placement::derive(away, env.one.name.clone(), ctx.tenant_id());
    mover
        .move_tenant(
            ctx.tenant_id(),
            to,
            MoveOptions::default().keep_source_for(DAY),
        )
        .await
        .unwrap();
    // (No write by the stale process here: a refused one may make it read
    // its record again, and it would no longer be stale.)
    let stopped = mover
        .move_tenant(
            ctx.tenant_id(),
            source.clone(),
            MoveOptions::default()
                .keep_source_for(DAY)
                .stop_after(saas_tenancy::postgres::MovePhase::Prepared),
        )
        .await;
    assert!(stopped.is_err());
    // Prepared: the kept source is emptied and being filled, but still
    // locked out. (A process's failed scope may read its record again:
    // only writes that land on the source matter.)
    let stale = insert(&deaf, &ctx, "stale 2").await;
    assert!(
        env.stored(&source, ctx.tenant_id())
            .await
            .iter()
            .all(|(_, body)| body != "stale 2"),
        "nothing written into the kept source before the cut-over ({stale:?})"
    );
    mover
        .resume_move(ctx.tenant_id(), MoveOptions::default())
        .await
        .unwrap();
    assert_eq!(placement(&mover, &ctx).await, source);
    let fresh = env.tenancy(Duration::from_secs(1), true);
    let id = insert(&fresh, &ctx, "after").await.unwrap();
    assert!(
        env.stored(&source, ctx.tenant_id())
            .await
            .contains(&(id, "after".to_owned())),
        "served from the kept placement again"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_stale_process_cannot_write_into_a_kept_row_source_during_the_move_back() {
    stale_process_kept_out_of_the_kept_source(
        "moving::retention_stale_row",
        Strategy::Shared,
        Strategy::Schema,
    )
    .await;
}

#[tokio::test]
async fn a_stale_process_cannot_write_into_a_kept_schema_during_the_move_back() {
    stale_process_kept_out_of_the_kept_source(
        "moving::retention_stale_schema",
        Strategy::Schema,
        Strategy::Database,
    )
    .await;
}

/// A move back into a kept source that is aborted: the tenant stays where
/// it is, the kept source is no longer counted as kept (the move emptied
/// it), and moving back again works.
#[tokio::test]
async fn an_aborted_move_back_leaves_the_tenant_served_and_can_be_done_again() {
    let Some(env) = env("moving::retention_abort_back").await else {
        return;
    };
    let mover = env.tenancy(Duration::from_secs(1), true);
    let ctx = env
        .tenant(&mover, "tries-back", Strategy::Shared, &env.one.name)
        .await;
    for i in 0..10 {
        insert(&mover, &ctx, &format!("row {i}")).await.unwrap();
    }
    let row = placement(&mover, &ctx).await;
    let schema = Placement::derive(Strategy::Schema, env.one.name.clone(), ctx.tenant_id());
    mover
        .move_tenant(
            ctx.tenant_id(),
            schema.clone(),
            MoveOptions::default().keep_source_for(DAY),
        )
        .await
        .unwrap();
    insert(&mover, &ctx, "on the schema").await.unwrap();
    let stopped = mover
        .move_tenant(
            ctx.tenant_id(),
            row.clone(),
            MoveOptions::default()
                .keep_source_for(DAY)
                .stop_after(saas_tenancy::postgres::MovePhase::Prepared),
        )
        .await;
    assert!(stopped.is_err());
    assert!(
        mover
            .kept_sources(ctx.tenant_id())
            .await
            .unwrap()
            .is_empty(),
        "the move back took the kept source over"
    );
    mover.abort_move(ctx.tenant_id()).await.unwrap();
    assert_eq!(placement(&mover, &ctx).await, schema);
    assert_eq!(env.stored(&schema, ctx.tenant_id()).await.len(), 11);
    insert(&mover, &ctx, "still on the schema").await.unwrap();
    assert!(
        mover
            .purge_expired_sources()
            .await
            .unwrap()
            .purged
            .is_empty()
    );
    move_keeping(&env, &mover, &ctx, &row, MoveMethod::CapturedCopy).await;
    // 12 rows, and the fresh process's one.
    assert_eq!(env.stored(&row, ctx.tenant_id()).await.len(), 13);
    assert_eq!(kept(&mover, &ctx).await, vec![schema]);
    env.cleanup().await;
}
