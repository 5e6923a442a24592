//! SQLite tenant → PostgreSQL (a schema, the shared tables of row
//! tenants, a database), the two tenancies sharing the PostgreSQL
//! catalog: eight writers throughout, the SQLite side refusing the tenant
//! afterwards with the placement it went to, the target's sequence past
//! the copied keys (a shared one never lowered), a PostgreSQL row tenant
//! next door untouched (and, during the writers' moves, writing through
//! it all); stopped moves resumed or aborted. Each test is one target
//! (and source) of the same body; failures and refusals are in
//! `to_postgres_refused.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use saas_tenancy::postgres::ScopeMode;
use saas_tenancy::sqlite::SqliteMoveOptions;
use saas_tenancy::{MovePhase, Placement, Strategy, TenancyError};

use super::fixture::Fixture;
use super::pg_side::{Neighbour, next_id, pg_rows, shared_rows, target_left};
use super::writers;
use crate::pg_env::sandbox;

const SEEDED: i64 = 3_000;

async fn moves_while_eight_writers_run(test: &str, source: Strategy, target: Strategy) {
    let Some(mut pg) = sandbox(test, ScopeMode::Shared).await else {
        return;
    };
    let mut next_door = Neighbour::new(&mut pg).await;
    let fx = Fixture::over(Some(Arc::clone(pg.tenancy.catalog()))).await;
    let mover = fx.tenant("sqlite-mover", source, &fx.a).await;
    let neighbour = fx.tenant("sqlite-neighbour", Strategy::Shared, &fx.a).await;
    fx.seed(&mover, SEEDED).await;
    fx.seed(&neighbour, 50).await;
    let neighbour_before = fx.rows(&fx.tenancy, &neighbour).await;
    let from = fx
        .catalog
        .get(mover.tenant_id())
        .await
        .unwrap()
        .unwrap()
        .placement;
    let to = Placement::derive(target, pg.cluster.clone(), mover.tenant_id());

    let second = fx.builder().build().unwrap();
    assert_eq!(fx.rows(&second, &mover).await.len(), SEEDED as usize);
    let mut held_elsewhere = second.acquire(&mover).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let handles = writers::spawn(&[fx.tenancy.clone(), second.clone()], &mover, &stop);
    let neighbour_writer = next_door.write_until(&pg, &stop);
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
    let during = neighbour_writer.await.unwrap();
    assert!(!during.is_empty(), "the neighbour wrote nothing meanwhile");
    next_door.rows.extend(during);
    next_door.rows.sort();
    eprintln!(
        "SQLite {source:?} → PostgreSQL {target:?}: {} rows copied, fence {:?}, phases {:?}, \
         writers acknowledged {} and were refused {} times",
        report.rows["notes"],
        report.fence,
        report.phases,
        acked.iter().map(|a| a.acked).sum::<usize>(),
        acked.iter().map(|a| a.refused).sum::<usize>()
    );
    assert_eq!(report.rows["notes"], source_at_cut_over.len() as u64);
    assert!(acked.iter().map(|a| a.acked).sum::<usize>() > 0);

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
    // Nor does it operate on it (a SQLite deletion never touches PostgreSQL).
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

    // PostgreSQL serves every acknowledged write, once, and to the
    // tenant's scoped handles exactly its rows.
    let stored = pg_rows(&pg, &mover).await;
    assert_eq!(stored, source_at_cut_over);
    writers::check(&stored, &acked, SEEDED);
    if target == Strategy::Shared {
        assert_eq!(shared_rows(&pg, mover.tenant_id()).await, stored);
    }
    let mut conn = pg.tenancy.acquire(&mover).await.unwrap();
    let foreign: i64 = sqlx::query_scalar("SELECT count(*) FROM notes WHERE tenant_id <> $1")
        .bind(mover.tenant_id())
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(foreign, 0);
    drop(conn);
    // The sequence continues past the copied keys.
    let next = next_id(&pg, &mover).await;
    assert!(
        next > stored.iter().map(|(id, _)| *id).max().unwrap(),
        "{next}"
    );
    next_door.check(&pg, "after the move").await;
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
    next_door
        .check(&pg, "after the moved tenant's deletion")
        .await;
    fx.cleanup().await;
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_row_tenant_moves_to_a_postgres_schema_while_eight_writers_run() {
    moves_while_eight_writers_run(
        "sqlite_moving::to_postgres",
        Strategy::Shared,
        Strategy::Schema,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_row_tenant_moves_into_postgres_shared_tables_while_eight_writers_run() {
    moves_while_eight_writers_run(
        "sqlite_moving::to_postgres_row",
        Strategy::Shared,
        Strategy::Shared,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_database_tenant_moves_to_a_postgres_database_while_eight_writers_run() {
    moves_while_eight_writers_run(
        "sqlite_moving::to_postgres_database",
        Strategy::Database,
        Strategy::Database,
    )
    .await;
}

/// The mover stopped after each phase, then resumed or (before the
/// cut-over) aborted; the SQLite source alternates between a row tenant
/// and a tenant file.
async fn stopped_in_each_phase_resumes_or_aborts(test: &str, target: Strategy) {
    let Some(mut pg) = sandbox(test, ScopeMode::Shared).await else {
        return;
    };
    let next_door = Neighbour::new(&mut pg).await;
    // Other tenants have drawn the shared sequence far past the keys
    // moved here: a move must not lower it.
    const DRAWN: i64 = 5_000_000;
    if target == Strategy::Shared {
        sqlx::query("SELECT setval(pg_get_serial_sequence('notes', 'id'), $1)")
            .bind(DRAWN)
            .execute(&pg.admin)
            .await
            .unwrap();
    }
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
            let source = if (i + usize::from(abort)) % 2 == 0 {
                Strategy::Shared
            } else {
                Strategy::Database
            };
            let ctx = fx
                .tenant(&format!("pg-kill-{i}-{abort}"), source, &fx.a)
                .await;
            fx.seed(&ctx, 100).await;
            let from = fx
                .catalog
                .get(ctx.tenant_id())
                .await
                .unwrap()
                .unwrap()
                .placement;
            let to = Placement::derive(target, pg.cluster.clone(), ctx.tenant_id());
            let before = fx.raw_rows(&from, ctx.tenant_id()).await;
            let when = format!("{source:?} → {target:?}, stopped after {phase}, abort {abort}");
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
                "{when}: {stopped}"
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
            // Until the cut-over the source is intact.
            if phase < MovePhase::CutOver {
                assert_eq!(fx.raw_rows(&from, ctx.tenant_id()).await, before, "{when}");
            }
            if abort {
                fx.tenancy
                    .abort_move_to_postgres(ctx.tenant_id(), &pg.tenancy)
                    .await
                    .unwrap();
                assert_eq!(fx.raw_rows(&from, ctx.tenant_id()).await, before, "{when}");
                let mut conn = fx.tenancy.acquire(&ctx).await.unwrap();
                sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 1000, 'after')")
                    .bind(ctx.tenant_id())
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                drop(conn);
                assert!(
                    !target_left(&pg, &to, ctx.tenant_id()).await,
                    "{when}: the target was left"
                );
            } else {
                fx.tenancy
                    .resume_move_to_postgres(
                        ctx.tenant_id(),
                        &pg.tenancy,
                        SqliteMoveOptions::default(),
                    )
                    .await
                    .unwrap();
                assert_eq!(pg_rows(&pg, &ctx).await, before, "{when}");
                if target == Strategy::Shared {
                    assert_eq!(shared_rows(&pg, ctx.tenant_id()).await, before, "{when}");
                }
                assert!(fx.raw_rows(&from, ctx.tenant_id()).await.is_empty());
                let next = next_id(&pg, &ctx).await;
                let floor = if target == Strategy::Shared {
                    DRAWN
                } else {
                    100
                };
                assert!(next > floor, "{when}: next id {next}");
                pg.tenancy.delete_tenant(ctx.tenant_id()).await.unwrap();
            }
            next_door.check(&pg, &when).await;
        }
    }
    fx.cleanup().await;
    pg.cleanup().await;
}

#[tokio::test]
async fn sqlite_to_postgres_move_stopped_in_each_phase_resumes_or_aborts() {
    stopped_in_each_phase_resumes_or_aborts("sqlite_moving::to_postgres_kill", Strategy::Schema)
        .await;
}

#[tokio::test]
async fn sqlite_to_postgres_row_move_stopped_in_each_phase_resumes_or_aborts() {
    stopped_in_each_phase_resumes_or_aborts(
        "sqlite_moving::to_postgres_row_kill",
        Strategy::Shared,
    )
    .await;
}

#[tokio::test]
async fn sqlite_to_postgres_database_move_stopped_in_each_phase_resumes_or_aborts() {
    stopped_in_each_phase_resumes_or_aborts(
        "sqlite_moving::to_postgres_database_kill",
        Strategy::Database,
    )
    .await;
}
