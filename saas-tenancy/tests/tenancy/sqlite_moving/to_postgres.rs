//! SQLite row tenant → PostgreSQL schema, the two tenancies sharing the
//! PostgreSQL catalog: eight writers throughout, the SQLite side refusing
//! the tenant afterwards with the placement it went to, the schema's
//! sequence past the copied keys; stopped moves resumed or aborted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use saas_tenancy::postgres::ScopeMode;
use saas_tenancy::sqlite::SqliteMoveOptions;
use saas_tenancy::testing::pg::PgSandbox;
use saas_tenancy::{MovePhase, Placement, Strategy, TenancyError};

use super::fixture::Fixture;
use super::writers;
use crate::pg_env::sandbox;

const SEEDED: i64 = 3_000;

async fn pg_rows(pg: &PgSandbox, ctx: &saas_core::TenantContext) -> Vec<(i64, String)> {
    let mut conn = pg.tenancy.acquire(ctx).await.unwrap();
    sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_row_tenant_moves_to_a_postgres_schema_while_eight_writers_run() {
    let Some(pg) = sandbox("sqlite_moving::to_postgres", ScopeMode::Shared).await else {
        return;
    };
    let fx = Fixture::over(Some(Arc::clone(pg.tenancy.catalog()))).await;
    let mover = fx.tenant("sqlite-mover", Strategy::Shared, &fx.a).await;
    let neighbour = fx.tenant("sqlite-neighbour", Strategy::Shared, &fx.a).await;
    fx.seed(&mover, SEEDED).await;
    fx.seed(&neighbour, 50).await;
    let neighbour_before = fx.rows(&fx.tenancy, &neighbour).await;
    let from = Placement::Shared {
        cluster: fx.a.clone(),
    };
    let to = Placement::derive(Strategy::Schema, pg.cluster.clone(), mover.tenant_id());

    let second = fx.builder().build().unwrap();
    assert_eq!(fx.rows(&second, &mover).await.len(), SEEDED as usize);
    let mut held_elsewhere = second.acquire(&mover).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let handles = writers::spawn(&[fx.tenancy.clone(), second.clone()], &mover, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = fx
        .tenancy
        .move_tenant_to_postgres(
            mover.tenant_id(),
            &pg.tenancy,
            to.clone(),
            SqliteMoveOptions::default().keep_source(true),
        )
        .await
        .unwrap();
    let source_at_cut_over = fx.raw_rows(&from, mover.tenant_id()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    let acked = writers::join(handles).await;
    eprintln!(
        "SQLite row → PostgreSQL schema: {} rows copied, fence {:?}, phases {:?}, writers \
         acknowledged {} and were refused {} times",
        report.rows["notes"],
        report.fence,
        report.phases,
        acked.iter().map(|a| a.acked).sum::<usize>(),
        acked.iter().map(|a| a.refused).sum::<usize>()
    );
    assert_eq!(report.rows["notes"], source_at_cut_over.len() as u64);

    // The old placement: the held handle is cut, nothing changed there.
    let refused =
        sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 88888888, 'stale')")
            .bind(mover.tenant_id())
            .execute(&mut *held_elsewhere)
            .await
            .unwrap_err();
    assert!(refused.to_string().contains("moved"), "{refused}");
    drop(held_elsewhere);
    assert_eq!(
        fx.raw_rows(&from, mover.tenant_id()).await,
        source_at_cut_over
    );
    // Every SQLite instance refuses the tenant, saying where it went.
    for tenancy in [&fx.tenancy, &second] {
        match tenancy.acquire(&mover).await {
            Err(TenancyError::PlacementNotServedHere { placement, .. }) => {
                assert_eq!(placement, to)
            }
            other => panic!("expected PlacementNotServedHere, got {other:?}"),
        }
    }
    // Nor does it operate on it (a SQLite deletion never touches the schema).
    let refused = second.delete_tenant(mover.tenant_id()).await.unwrap_err();
    assert!(
        matches!(refused, TenancyError::PlacementNotServedHere { .. }),
        "{refused}"
    );
    let refused = second.export_tenant(mover.tenant_id()).await.unwrap_err();
    assert!(
        matches!(refused, TenancyError::PlacementNotServedHere { .. }),
        "{refused}"
    );

    // PostgreSQL serves every acknowledged write, once.
    let stored = pg_rows(&pg, &mover).await;
    writers::check(&stored, &acked, SEEDED);
    let mut conn = pg.tenancy.acquire(&mover).await.unwrap();
    let foreign: i64 = sqlx::query_scalar("SELECT count(*) FROM notes WHERE tenant_id <> $1")
        .bind(mover.tenant_id())
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(foreign, 0);
    // The sequence continues past the copied keys.
    let next: i64 =
        sqlx::query_scalar("INSERT INTO notes (tenant_id, body) VALUES ($1, 'next') RETURNING id")
            .bind(mover.tenant_id())
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert!(
        next > stored.iter().map(|(id, _)| *id).max().unwrap(),
        "{next}"
    );
    drop(conn);
    assert_eq!(fx.rows(&fx.tenancy, &neighbour).await, neighbour_before);
    // The kept SQLite source, purged on request.
    assert!(
        fx.tenancy
            .purge_moved_source(mover.tenant_id())
            .await
            .unwrap()
    );
    assert!(fx.raw_rows(&from, mover.tenant_id()).await.is_empty());

    pg.tenancy.delete_tenant(mover.tenant_id()).await.unwrap();
    fx.cleanup().await;
    pg.cleanup().await;
}

#[tokio::test]
async fn sqlite_to_postgres_move_stopped_in_each_phase_resumes_or_aborts() {
    let Some(pg) = sandbox("sqlite_moving::to_postgres_kill", ScopeMode::Shared).await else {
        return;
    };
    let fx = Fixture::over(Some(Arc::clone(pg.tenancy.catalog()))).await;
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
            let ctx = fx
                .tenant(&format!("pg-kill-{i}-{abort}"), Strategy::Shared, &fx.a)
                .await;
            fx.seed(&ctx, 100).await;
            let from = Placement::Shared {
                cluster: fx.a.clone(),
            };
            let to = Placement::derive(Strategy::Schema, pg.cluster.clone(), ctx.tenant_id());
            let before = fx.raw_rows(&from, ctx.tenant_id()).await;
            let stopped = fx
                .tenancy
                .move_tenant_to_postgres(
                    ctx.tenant_id(),
                    &pg.tenancy,
                    to.clone(),
                    SqliteMoveOptions::default().stop_after(phase),
                )
                .await
                .unwrap_err();
            assert!(
                matches!(stopped, TenancyError::MoveStopped { .. }),
                "{stopped}"
            );
            assert_eq!(
                fx.tenancy
                    .open_move(ctx.tenant_id())
                    .await
                    .unwrap()
                    .unwrap()
                    .1,
                phase
            );
            // The SQLite-only entry points point to the right ones.
            assert!(
                fx.tenancy
                    .resume_move(ctx.tenant_id(), SqliteMoveOptions::default())
                    .await
                    .is_err()
            );
            if abort {
                fx.tenancy
                    .abort_move_to_postgres(ctx.tenant_id(), &pg.tenancy)
                    .await
                    .unwrap();
                assert_eq!(
                    fx.raw_rows(&from, ctx.tenant_id()).await,
                    before,
                    "after {phase}"
                );
                let mut conn = fx.tenancy.acquire(&ctx).await.unwrap();
                sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 1000, 'after')")
                    .bind(ctx.tenant_id())
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                let schema = to.object_name().unwrap().as_str().to_owned();
                let exists: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                )
                .bind(schema)
                .fetch_one(&pg.admin)
                .await
                .unwrap();
                assert!(!exists, "after {phase}: the target schema was left");
            } else {
                fx.tenancy
                    .resume_move_to_postgres(
                        ctx.tenant_id(),
                        &pg.tenancy,
                        SqliteMoveOptions::default(),
                    )
                    .await
                    .unwrap();
                assert_eq!(pg_rows(&pg, &ctx).await, before, "after {phase}");
                assert!(fx.raw_rows(&from, ctx.tenant_id()).await.is_empty());
                pg.tenancy.delete_tenant(ctx.tenant_id()).await.unwrap();
            }
        }
    }
    fx.cleanup().await;
    pg.cleanup().await;
}
