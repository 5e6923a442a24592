//! Moves stopped in each phase, then resumed or aborted; refusals before
//! the fence.

use std::time::Duration;

use saas_tenancy::TenancyError;
use saas_tenancy::postgres::MoveOptions;
use saas_tenancy::{MovePhase, Placement, Strategy};
use sqlx::Executor;

use super::fixture::{pg_at, pg_notes, process, provision, seed, world, write_kinds};

#[tokio::test]
async fn pg_to_sqlite_move_stopped_in_each_phase_resumes_or_aborts() {
    let Some((pg, edge)) = world("moving::to_sqlite_kill").await else {
        return;
    };
    let mover = process(&pg, Duration::from_secs(1), true);
    let phases = [
        MovePhase::Started,
        MovePhase::Prepared,
        MovePhase::Fenced,
        MovePhase::Synced,
        MovePhase::CutOver,
    ];
    for (i, phase) in phases.into_iter().enumerate() {
        for abort in [false, true] {
            if abort && phase == MovePhase::CutOver {
                continue;
            }
            // Row → shared file and schema → tenant file in turn.
            let (from, to) = match (i + usize::from(abort)) % 2 {
                0 => (Strategy::Shared, Strategy::Shared),
                _ => (Strategy::Schema, Strategy::Database),
            };
            let ctx = provision(&pg, &mover, &format!("p2s-kill-{i}-{abort}"), from).await;
            seed(&mover, &ctx, 30).await;
            let kinds = write_kinds(&pg, &ctx).await;
            let at = pg_at(&pg, &ctx, "notes").await;
            let before = pg_notes(&ctx, &at).await;
            let target = edge.target(to, &ctx);
            let stopped = mover
                .move_tenant_to_sqlite(
                    ctx.tenant_id(),
                    &edge.sqlite,
                    target.clone(),
                    MoveOptions::default().stop_after(phase),
                )
                .await
                .unwrap_err();
            assert!(
                matches!(stopped, TenancyError::MoveStopped { .. }),
                "{stopped}"
            );
            assert_eq!(
                mover.open_move(ctx.tenant_id()).await.unwrap().unwrap().1,
                phase
            );
            // The PostgreSQL-only entry points point to the right ones.
            let wrong = mover
                .resume_move(ctx.tenant_id(), MoveOptions::default())
                .await
                .unwrap_err();
            assert!(wrong.to_string().contains("to_sqlite"), "{wrong}");
            if abort {
                mover
                    .abort_move_to_sqlite(ctx.tenant_id(), &edge.sqlite)
                    .await
                    .unwrap();
                assert_eq!(pg_notes(&ctx, &at).await, before, "after {phase}");
                // The source serves and takes writes again.
                let mut tx = mover.begin(&ctx).await.unwrap();
                sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES ($1, 1000, 'after')")
                    .bind(ctx.tenant_id())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                // Nothing is left on the SQLite side.
                match &target {
                    Placement::Database { database, .. } => assert!(
                        !edge.dir.join(format!("{database}.sqlite")).exists(),
                        "after {phase}: the tenant file was left"
                    ),
                    _ => assert_eq!(edge.raw_shared(&ctx).await, 0, "after {phase}"),
                }
                assert!(mover.open_move(ctx.tenant_id()).await.unwrap().is_none());
                mover.delete_tenant(ctx.tenant_id()).await.unwrap();
            } else {
                let wrong = mover.abort_move(ctx.tenant_id()).await.unwrap_err();
                assert!(wrong.to_string().contains("to_sqlite"), "{wrong}");
                mover
                    .resume_move_to_sqlite(ctx.tenant_id(), &edge.sqlite, MoveOptions::default())
                    .await
                    .unwrap();
                assert_eq!(edge.notes(&ctx).await, before, "after {phase}");
                assert_eq!(edge.kinds(&ctx).await, kinds, "after {phase}");
                assert!(mover.open_move(ctx.tenant_id()).await.unwrap().is_none());
                if from == Strategy::Shared {
                    assert!(pg_notes(&ctx, &at).await.is_empty(), "source purged");
                }
                edge.sqlite.delete_tenant(ctx.tenant_id()).await.unwrap();
            }
        }
    }
    edge.cleanup();
    pg.cleanup().await;
}

#[tokio::test]
async fn pg_to_sqlite_refuses_unsupported_and_unmatched_columns_before_the_fence() {
    let Some((pg, edge)) = world("moving::to_sqlite_refusals").await else {
        return;
    };
    let mover = process(&pg, Duration::from_secs(1), true);
    let ctx = provision(&pg, &mover, "p2s-odd", Strategy::Shared).await;
    seed(&mover, &ctx, 5).await;
    let at = pg_at(&pg, &ctx, "notes").await;
    let before = pg_notes(&ctx, &at).await;
    let target = edge.target(Strategy::Database, &ctx);

    // An interval has no faithful SQLite form: refused, naming it.
    pg.admin
        .execute("ALTER TABLE notes ADD COLUMN span interval")
        .await
        .unwrap();
    let refused = mover
        .move_tenant_to_sqlite(
            ctx.tenant_id(),
            &edge.sqlite,
            target.clone(),
            MoveOptions::default(),
        )
        .await
        .unwrap_err();
    match &refused {
        TenancyError::UnsupportedColumnType {
            table,
            column,
            type_name,
        } => {
            assert!(table.ends_with(".\"notes\""), "{table}");
            assert_eq!((column.as_str(), type_name.as_str()), ("span", "interval"));
        }
        other => panic!("expected UnsupportedColumnType, got {other}"),
    }
    assert!(mover.open_move(ctx.tenant_id()).await.unwrap().is_none());

    // A column the SQLite table lacks: stopped before the fence.
    pg.admin
        .execute("ALTER TABLE notes DROP COLUMN span, ADD COLUMN extra text")
        .await
        .unwrap();
    let stopped = mover
        .move_tenant_to_sqlite(
            ctx.tenant_id(),
            &edge.sqlite,
            target.clone(),
            MoveOptions::default(),
        )
        .await
        .unwrap_err();
    match &stopped {
        TenancyError::MoveStopped { phase, detail, .. } => {
            assert_eq!(phase, "started");
            assert!(detail.contains("extra"), "{detail}");
        }
        other => panic!("expected MoveStopped, got {other}"),
    }
    // Never fenced: still served by PostgreSQL, untouched.
    let record = pg
        .tenancy
        .catalog()
        .get(ctx.tenant_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, saas_core::TenantStatus::Active);
    assert!(mover.begin(&ctx).await.is_ok());
    mover
        .abort_move_to_sqlite(ctx.tenant_id(), &edge.sqlite)
        .await
        .unwrap();
    assert_eq!(pg_notes(&ctx, &at).await, before);
    // A float NaN, which SQLite would store as NULL: the copy stops under
    // the fence, and the abort leaves the source as it was.
    pg.admin
        .execute("ALTER TABLE notes DROP COLUMN extra")
        .await
        .unwrap();
    sqlx::query("INSERT INTO kinds (tenant_id, id, ratio) VALUES ($1, 1, 'NaN')")
        .bind(ctx.tenant_id())
        .execute(&pg.admin)
        .await
        .unwrap();
    let stopped = mover
        .move_tenant_to_sqlite(
            ctx.tenant_id(),
            &edge.sqlite,
            target.clone(),
            MoveOptions::default(),
        )
        .await
        .unwrap_err();
    match &stopped {
        TenancyError::MoveStopped { phase, detail, .. } => {
            assert_eq!(phase, "fenced");
            assert!(
                detail.contains("NaN") && detail.contains("ratio"),
                "{detail}"
            );
        }
        other => panic!("expected MoveStopped, got {other}"),
    }
    mover
        .abort_move_to_sqlite(ctx.tenant_id(), &edge.sqlite)
        .await
        .unwrap();
    assert_eq!(pg_notes(&ctx, &at).await, before);
    let nan: f64 = sqlx::query_scalar("SELECT ratio FROM kinds WHERE tenant_id = $1")
        .bind(ctx.tenant_id())
        .fetch_one(&pg.admin)
        .await
        .unwrap();
    assert!(nan.is_nan());
    assert!(mover.begin(&ctx).await.is_ok());
    // A target on one of PostgreSQL's own clusters is refused.
    let own = Placement::derive(Strategy::Database, pg.cluster.clone(), ctx.tenant_id());
    let refused = mover
        .move_tenant_to_sqlite(ctx.tenant_id(), &edge.sqlite, own, MoveOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, TenancyError::InvalidInput(_)),
        "{refused}"
    );

    mover.delete_tenant(ctx.tenant_id()).await.unwrap();
    edge.cleanup();
    pg.cleanup().await;
}
