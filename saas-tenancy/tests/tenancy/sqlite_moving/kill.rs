//! The mover stopped after each phase (as if its process died there):
//! `resume_move` completes the move; `abort_move`, before the cut-over,
//! leaves the source intact and serving.

use saas_core::{TenantContext, TenantStatus};
use saas_tenancy::sqlite::SqliteMoveOptions;
use saas_tenancy::{MovePhase, Placement, Strategy, TenancyError};

use super::fixture::Fixture;

const BEFORE_CUT_OVER: [MovePhase; 4] = [
    MovePhase::Started,
    MovePhase::Prepared,
    MovePhase::Fenced,
    MovePhase::Synced,
];

async fn stop_at(fx: &Fixture, ctx: &TenantContext, to: &Placement, phase: MovePhase) {
    let stopped = fx
        .tenancy
        .move_tenant(
            ctx.tenant_id(),
            to.clone(),
            SqliteMoveOptions::default().stop_after(phase),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&stopped, TenancyError::MoveStopped { phase: p, .. } if *p == phase.to_string()),
        "{stopped}"
    );
    let (_, recorded) = fx
        .tenancy
        .open_move(ctx.tenant_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recorded, phase);
}

async fn write_one(fx: &Fixture, ctx: &TenantContext, id: i64) {
    let mut conn = fx.tenancy.acquire(ctx).await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, ?, 'after')")
        .bind(ctx.tenant_id())
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap();
}

async fn check_resume(from: Strategy, to_strategy: Strategy) {
    let fx = Fixture::new().await;
    let phases = BEFORE_CUT_OVER.iter().chain([MovePhase::CutOver].iter());
    for (i, phase) in phases.enumerate() {
        let ctx = fx.tenant(&format!("resume-{i}"), from, &fx.a).await;
        fx.seed(&ctx, 200).await;
        let source = fx
            .tenancy
            .catalog()
            .get(ctx.tenant_id())
            .await
            .unwrap()
            .unwrap()
            .placement;
        let before = fx.raw_rows(&source, ctx.tenant_id()).await;
        let to = match to_strategy {
            Strategy::Shared => Placement::Shared {
                cluster: fx.b.clone(),
            },
            s => Placement::derive(s, fx.b.clone(), ctx.tenant_id()),
        };
        stop_at(&fx, &ctx, &to, *phase).await;
        if *phase == MovePhase::CutOver {
            let refused = fx.tenancy.abort_move(ctx.tenant_id()).await.unwrap_err();
            assert!(refused.to_string().contains("cut over"), "{refused}");
        }
        // Another instance finishes it, as a restarted process would.
        let other = fx.builder().build().unwrap();
        other
            .resume_move(ctx.tenant_id(), SqliteMoveOptions::default())
            .await
            .unwrap();
        assert!(other.open_move(ctx.tenant_id()).await.unwrap().is_none());
        let record = other.catalog().get(ctx.tenant_id()).await.unwrap().unwrap();
        assert_eq!(
            (record.placement.clone(), record.status),
            (to.clone(), TenantStatus::Active)
        );
        assert_eq!(
            fx.raw_rows(&to, ctx.tenant_id()).await,
            before,
            "after {phase}"
        );
        assert!(
            fx.raw_rows(&source, ctx.tenant_id()).await.is_empty(),
            "after {phase}"
        );
        write_one(&fx, &ctx, 1000).await;
        assert_eq!(
            fx.raw_rows(&to, ctx.tenant_id()).await.len(),
            before.len() + 1
        );
    }
    fx.cleanup().await;
}

async fn check_abort(from: Strategy, to_strategy: Strategy) {
    let fx = Fixture::new().await;
    for (i, phase) in BEFORE_CUT_OVER.iter().enumerate() {
        let ctx = fx.tenant(&format!("abort-{i}"), from, &fx.a).await;
        fx.seed(&ctx, 200).await;
        let source = fx
            .tenancy
            .catalog()
            .get(ctx.tenant_id())
            .await
            .unwrap()
            .unwrap()
            .placement;
        let before = fx.raw_rows(&source, ctx.tenant_id()).await;
        let to = match to_strategy {
            Strategy::Shared => Placement::Shared {
                cluster: fx.b.clone(),
            },
            s => Placement::derive(s, fx.b.clone(), ctx.tenant_id()),
        };
        stop_at(&fx, &ctx, &to, *phase).await;
        fx.tenancy.abort_move(ctx.tenant_id()).await.unwrap();
        assert!(
            fx.tenancy
                .open_move(ctx.tenant_id())
                .await
                .unwrap()
                .is_none()
        );
        let record = fx
            .tenancy
            .catalog()
            .get(ctx.tenant_id())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (record.placement, record.status),
            (source.clone(), TenantStatus::Active)
        );
        // Intact, nothing left on the target, and serving (lock-out lifted).
        assert_eq!(
            fx.raw_rows(&source, ctx.tenant_id()).await,
            before,
            "after {phase}"
        );
        assert!(
            fx.raw_rows(&to, ctx.tenant_id()).await.is_empty(),
            "after {phase}"
        );
        if let Placement::Database { .. } = to {
            assert!(!fx.file_of(&to).exists(), "after {phase}");
        }
        write_one(&fx, &ctx, 1000).await;
        let mut tx = fx.tenancy.begin(&ctx).await.unwrap();
        sqlx::query("UPDATE notes SET body = 'changed' WHERE id = 1")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("DELETE FROM notes WHERE id = 2")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            fx.raw_rows(&source, ctx.tenant_id()).await.len(),
            before.len()
        );
        // And it can be moved again.
        fx.tenancy
            .move_tenant(ctx.tenant_id(), to.clone(), SqliteMoveOptions::default())
            .await
            .unwrap();
        assert_eq!(fx.raw_rows(&to, ctx.tenant_id()).await.len(), before.len());
    }
    fx.cleanup().await;
}

#[tokio::test]
async fn sqlite_shared_to_file_move_stopped_in_each_phase_resumes_to_completion() {
    check_resume(Strategy::Shared, Strategy::Database).await;
}

#[tokio::test]
async fn sqlite_file_to_shared_move_stopped_in_each_phase_resumes_to_completion() {
    check_resume(Strategy::Database, Strategy::Shared).await;
}

#[tokio::test]
async fn sqlite_shared_to_file_move_aborted_in_each_phase_leaves_the_source_serving() {
    check_abort(Strategy::Shared, Strategy::Database).await;
}

#[tokio::test]
async fn sqlite_file_to_shared_move_aborted_in_each_phase_leaves_the_source_serving() {
    check_abort(Strategy::Database, Strategy::Shared).await;
}
