//! The mover stopped in each phase (as if its process died there):
//! `resume_move` finishes the move, `abort_move` leaves the source intact
//! and serving and removes the target and the replication objects.

use std::time::Duration;

use saas_core::TenantContext;
use saas_tenancy::postgres::{MoveOptions, MovePhase, PgTenancy};
use saas_tenancy::{Placement, Strategy, TenancyError};
use sqlx::Executor;

use super::fixture::{MoveEnv, env};

const STOPS: [MovePhase; 5] = [
    MovePhase::Prepared,
    MovePhase::Copying,
    MovePhase::Fenced,
    MovePhase::Synced,
    MovePhase::CutOver,
];

async fn write(tenancy: &PgTenancy, ctx: &TenantContext, body: &str) -> Result<(), TenancyError> {
    let mut tx = tenancy.begin(ctx).await?;
    sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, $2)")
        .bind(ctx.tenant_id())
        .bind(body)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A tenant with 50 rows, stopped after `phase` on its way from `from` to
/// a database of its own on the same server.
async fn stopped(
    env: &MoveEnv,
    tenancy: &PgTenancy,
    slug: &str,
    from: Strategy,
    phase: MovePhase,
) -> (TenantContext, Placement, Placement) {
    let ctx = env.tenant(tenancy, slug, from, &env.one.name).await;
    for i in 0..50 {
        write(tenancy, &ctx, &format!("before {i}")).await.unwrap();
    }
    let source = tenancy
        .catalog()
        .get(ctx.tenant_id())
        .await
        .unwrap()
        .unwrap()
        .placement;
    let target = Placement::derive(Strategy::Database, env.one.name.clone(), ctx.tenant_id());
    let stop = tenancy
        .move_tenant(
            ctx.tenant_id(),
            target.clone(),
            MoveOptions::default().stop_after(phase),
        )
        .await;
    assert!(
        matches!(stop, Err(TenancyError::MoveStopped { phase: ref p, .. }) if p == phase.as_str()),
        "{stop:?}"
    );
    assert_eq!(
        tenancy
            .open_move(ctx.tenant_id())
            .await
            .unwrap()
            .map(|(_, p)| p),
        Some(phase)
    );
    (ctx, source, target)
}

/// Whether the tenant is served now, by a process that waits 200 ms at
/// most for a fence.
async fn served(env: &MoveEnv, ctx: &TenantContext) -> Result<(), TenancyError> {
    let probe = env.tenancy(Duration::from_secs(1), true);
    let mut tx = probe.begin(ctx).await?;
    sqlx::query("SELECT count(*) FROM notes")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_finishes_a_move_stopped_in_any_phase() {
    let Some(env) = env("moving::kill::resume").await else {
        return;
    };
    let tenancy = env.tenancy(Duration::from_secs(1), true);
    for (i, phase) in STOPS.into_iter().enumerate() {
        let (ctx, _, target) = stopped(
            &env,
            &tenancy,
            &format!("resume-{i}"),
            Strategy::Shared,
            phase,
        )
        .await;
        if phase < MovePhase::Fenced {
            // Before the fence the tenant is served on its source.
            write(&tenancy, &ctx, "while stopped").await.unwrap();
        }
        let report = tenancy
            .resume_move(ctx.tenant_id(), MoveOptions::default())
            .await
            .unwrap();
        assert_eq!(report.to, target, "{phase}");
        assert_eq!(tenancy.open_move(ctx.tenant_id()).await.unwrap(), None);
        let rows = env.stored(&target, ctx.tenant_id()).await;
        let expected = if phase < MovePhase::Fenced { 51 } else { 50 };
        assert_eq!(rows.len(), expected, "{phase}");
        write(&tenancy, &ctx, "after").await.unwrap();
        assert_eq!(
            env.stored(&target, ctx.tenant_id()).await.len(),
            expected + 1
        );
    }
    assert_eq!(env.replication_leftovers().await, 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_leaves_the_source_serving_from_any_phase_before_the_cut_over() {
    let Some(env) = env("moving::kill::abort").await else {
        return;
    };
    let tenancy = env.tenancy(Duration::from_secs(1), true);
    for (i, phase) in STOPS[..4].iter().copied().enumerate() {
        for from in [Strategy::Shared, Strategy::Schema] {
            let slug = format!("abort-{i}-{}", from.as_str());
            let (ctx, source, target) = stopped(&env, &tenancy, &slug, from, phase).await;
            let before = env.stored(&source, ctx.tenant_id()).await;
            if phase >= MovePhase::Fenced {
                // Fenced: new handles wait, then give up.
                let probe = env_probe(&env);
                let waited =
                    tokio::time::timeout(Duration::from_secs(30), write(&probe, &ctx, "refused"))
                        .await
                        .unwrap();
                assert!(
                    matches!(waited, Err(TenancyError::TenantMoving { .. })),
                    "{waited:?}"
                );
            }
            tenancy.abort_move(ctx.tenant_id()).await.unwrap();
            assert_eq!(tenancy.open_move(ctx.tenant_id()).await.unwrap(), None);
            assert_eq!(
                tenancy
                    .catalog()
                    .get(ctx.tenant_id())
                    .await
                    .unwrap()
                    .unwrap()
                    .placement,
                source
            );
            assert_eq!(
                env.stored(&source, ctx.tenant_id()).await,
                before,
                "{phase}: source intact"
            );
            served(&env, &ctx).await.unwrap();
            write(&tenancy, &ctx, "after abort").await.unwrap();
            assert_eq!(
                env.stored(&source, ctx.tenant_id()).await.len(),
                before.len() + 1
            );
            let target_db: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(target.object_name().unwrap().as_str())
                    .fetch_one(&env.one.admin)
                    .await
                    .unwrap();
            assert!(!target_db, "{phase}: the target database is gone");
        }
    }
    assert_eq!(env.replication_leftovers().await, 0);
    env.cleanup().await;
}

/// A process that waits 200 ms at most for a fence.
fn env_probe(env: &MoveEnv) -> PgTenancy {
    env.tenancy_with_wait(Duration::from_millis(200))
}

#[tokio::test]
async fn a_move_that_has_cut_over_cannot_be_aborted() {
    let Some(env) = env("moving::kill::no_abort").await else {
        return;
    };
    let tenancy = env.tenancy(Duration::from_secs(1), true);
    let (ctx, _, target) =
        stopped(&env, &tenancy, "cut", Strategy::Shared, MovePhase::CutOver).await;
    assert!(matches!(
        tenancy.abort_move(ctx.tenant_id()).await,
        Err(TenancyError::InvalidInput(_))
    ));
    // Served from the target already; resume cleans up.
    write(&tenancy, &ctx, "on target").await.unwrap();
    assert_eq!(env.stored(&target, ctx.tenant_id()).await.len(), 51);
    tenancy
        .resume_move(ctx.tenant_id(), MoveOptions::default())
        .await
        .unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn a_table_without_a_key_is_refused_before_anything_starts() {
    let Some(env) = env("moving::kill::no_key").await else {
        return;
    };
    env.one
        .admin
        .execute("CREATE TABLE public.keyless (tenant_id uuid NOT NULL, body text)")
        .await
        .unwrap();
    let tenancy = env.tenancy(Duration::from_secs(1), true);
    let ctx = env
        .tenant(&tenancy, "keyless", Strategy::Shared, &env.one.name)
        .await;
    let target = Placement::derive(Strategy::Shared, env.two.name.clone(), ctx.tenant_id());
    let refused = tenancy
        .move_tenant(ctx.tenant_id(), target, MoveOptions::default())
        .await;
    match refused {
        Err(TenancyError::NoReplicaIdentity { table }) => {
            assert_eq!(table, "\"public\".\"keyless\"")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(tenancy.open_move(ctx.tenant_id()).await.unwrap(), None);
    served(&env, &ctx).await.unwrap();
    env.cleanup().await;
}

/// The mover's future dropped while it works on `phase` (its process
/// killed there): a resume finishes the move. Twice in the copy: during
/// the mover's own `COPY` under the slot's snapshot (the slot exists, the
/// subscription not yet: the resume drops the slot, empties the target
/// and copies again under a new one — no row twice), and once the
/// subscription follows the slot (it reports a lag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mover_dropped_mid_phase_is_resumed() {
    let Some(env) = env("moving::kill::dropped").await else {
        return;
    };
    let tenancy = env.tenancy(Duration::from_secs(1), true);
    for (i, (phase, subscribed)) in [
        (MovePhase::Copying, false),
        (MovePhase::Copying, true),
        (MovePhase::Fenced, true),
        (MovePhase::Synced, true),
    ]
    .into_iter()
    .enumerate()
    {
        let ctx = env
            .tenant(
                &tenancy,
                &format!("dropped-{i}"),
                Strategy::Shared,
                &env.one.name,
            )
            .await;
        for i in 0..50 {
            write(&tenancy, &ctx, &format!("before {i}")).await.unwrap();
        }
        let target = Placement::derive(Strategy::Shared, env.two.name.clone(), ctx.tenant_id());
        let (reached, mut at) = tokio::sync::watch::channel(false);
        let options = MoveOptions::default().on_progress(move |p| {
            // In the copy, a lag is reported once the subscription follows.
            let copying = p.phase == MovePhase::Copying;
            if p.phase == phase && (!copying || p.lag_bytes.is_some() == subscribed) {
                let _ = reached.send(true);
            }
        });
        tokio::select! {
            moved = tenancy.move_tenant(ctx.tenant_id(), target.clone(), options) => {
                panic!("the move ended before it was dropped: {moved:?}")
            }
            _ = at.wait_for(|r| *r) => {}
        }
        assert!(tenancy.open_move(ctx.tenant_id()).await.unwrap().is_some());
        if !subscribed {
            assert_eq!(
                env.slots_and_subscriptions().await,
                (1, 0),
                "dropped with the move's slot made and no subscription yet"
            );
        }
        let report = tenancy
            .resume_move(ctx.tenant_id(), MoveOptions::default())
            .await
            .unwrap();
        assert_eq!(report.to, target, "{phase}");
        assert_eq!(
            env.stored(&target, ctx.tenant_id()).await.len(),
            50,
            "{phase}"
        );
        write(&tenancy, &ctx, "after").await.unwrap();
    }
    assert_eq!(env.replication_leftovers().await, 0);
    env.cleanup().await;
}
