//! The fence and the transactions open on the source when it goes up:
//! one that commits within the grace moves with the tenant; one still
//! open after it is cut — its commit fails and its write is nowhere.

use std::time::Duration;

use saas_core::TenantContext;
use saas_tenancy::postgres::{MoveOptions, MovePhase, PgTenancy, PgTenantTx};
use saas_tenancy::{Placement, Strategy, TenancyError};

use super::fixture::{MoveEnv, env};

async fn open_insert(tenancy: &PgTenancy, ctx: &TenantContext, body: &str) -> PgTenantTx {
    let mut tx = tenancy.begin(ctx).await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, $2)")
        .bind(ctx.tenant_id())
        .bind(body)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

async fn bodies(env: &MoveEnv, placement: &Placement, ctx: &TenantContext) -> Vec<String> {
    env.stored(placement, ctx.tenant_id())
        .await
        .into_iter()
        .map(|(_, b)| b)
        .collect()
}

/// A row tenant on its way to the other server, stopped once replication
/// caught up (a transaction open earlier would hold up the slot).
async fn caught_up(env: &MoveEnv, tenancy: &PgTenancy, slug: &str) -> (TenantContext, Placement) {
    let ctx = env
        .tenant(tenancy, slug, Strategy::Shared, &env.one.name)
        .await;
    let target = Placement::derive(Strategy::Shared, env.two.name.clone(), ctx.tenant_id());
    let stopped = tenancy
        .move_tenant(
            ctx.tenant_id(),
            target.clone(),
            MoveOptions::default()
                .keep_source(true)
                .stop_after(MovePhase::Copying),
        )
        .await;
    assert!(matches!(stopped, Err(TenancyError::MoveStopped { .. })));
    (ctx, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_still_open_after_the_grace_is_cut() {
    let Some(env) = env("moving::fence::cut").await else {
        return;
    };
    let mover = env.tenancy(Duration::from_secs(1), true);
    let other = env.tenancy(Duration::from_secs(1), true);
    let (ctx, target) = caught_up(&env, &mover, "cut").await;
    let source = Placement::derive(Strategy::Shared, env.one.name.clone(), ctx.tenant_id());
    let open = open_insert(&other, &ctx, "never committed").await;
    let report = mover
        .resume_move(
            ctx.tenant_id(),
            MoveOptions::default().fence_grace(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert!(
        report.fence >= Duration::from_millis(300),
        "the grace was waited"
    );
    assert!(open.commit().await.is_err(), "its session was cut");
    assert!(bodies(&env, &target, &ctx).await.is_empty());
    assert!(bodies(&env, &source, &ctx).await.is_empty());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_commits_within_the_grace_moves_with_the_tenant() {
    let Some(env) = env("moving::fence::grace").await else {
        return;
    };
    let mover = env.tenancy(Duration::from_secs(1), true);
    let other = env.tenancy(Duration::from_secs(1), true);
    let (ctx, target) = caught_up(&env, &mover, "grace").await;
    let open = open_insert(&other, &ctx, "committed in the grace").await;
    // It commits while the fence waits for it (the grace is 5 s).
    let committer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        open.commit().await
    });
    let report = mover
        .resume_move(ctx.tenant_id(), MoveOptions::default())
        .await
        .unwrap();
    committer.await.unwrap().unwrap();
    assert!(report.fence < Duration::from_secs(5), "not cut: {report:?}");
    assert_eq!(
        bodies(&env, &target, &ctx).await,
        ["committed in the grace"]
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_open_on_the_source_server_holds_up_the_slot_boundedly() {
    let Some(env) = env("moving::fence::slot").await else {
        return;
    };
    let tenancy = env.tenancy(Duration::from_secs(1), true);
    let ctx = env
        .tenant(&tenancy, "slot", Strategy::Shared, &env.one.name)
        .await;
    let open = open_insert(&tenancy, &ctx, "open while the slot is made").await;
    let target = Placement::derive(Strategy::Shared, env.two.name.clone(), ctx.tenant_id());
    let stopped = tenancy
        .move_tenant(
            ctx.tenant_id(),
            target.clone(),
            MoveOptions::default().catch_up_timeout(Duration::from_millis(500)),
        )
        .await;
    match stopped {
        Err(TenancyError::MoveStopped { detail, .. }) => {
            assert!(detail.contains("still open"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    open.commit().await.unwrap();
    tenancy
        .resume_move(ctx.tenant_id(), MoveOptions::default())
        .await
        .unwrap();
    assert_eq!(
        bodies(&env, &target, &ctx).await,
        ["open while the slot is made"]
    );
    env.cleanup().await;
}
