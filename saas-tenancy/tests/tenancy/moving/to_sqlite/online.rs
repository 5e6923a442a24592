//! Moves while eight writers write, and a kept source's retention.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use saas_core::{ManualClock, TenantContext, TenantSlug};
use saas_tenancy::TenancyError;
use saas_tenancy::postgres::{MoveOptions, ScopeMode};
use saas_tenancy::{MovePhase, NewTenant, Strategy};

use super::fixture::{
    SEEDED, pg_at, pg_notes, process, provision, seed, world, world_over, write_kinds,
};
use super::writers::{check, progress, writers};

async fn move_while_writing(test: &str, from: Strategy, to: Strategy) {
    let Some((pg, edge)) = world(test).await else {
        return;
    };
    let mover = process(&pg, Duration::from_secs(1), true);
    // "Other processes" with a warm record cache: one follows moves, one
    // does not (only the source's lock-out stops it).
    let follower = process(&pg, Duration::from_secs(3600), true);
    let deaf = process(&pg, Duration::from_secs(3600), false);
    let ctx = provision(&pg, &mover, "p2s-mover", from).await;
    let neighbour = provision(&pg, &mover, "p2s-neighbour", Strategy::Shared).await;
    seed(&mover, &ctx, SEEDED).await;
    seed(&mover, &neighbour, 20).await;
    let kinds = write_kinds(&pg, &ctx).await;
    // A SQLite neighbour in the shared file the row tenant moves into.
    let sqlite_neighbour = {
        let slug = TenantSlug::parse("p2s-sqlite-neighbour").unwrap();
        let new = NewTenant::new(slug, "n", Strategy::Shared, edge.cluster.clone()).unwrap();
        let record = edge.sqlite.provision(new).await.unwrap();
        let ctx = TenantContext::new(record.id, record.slug);
        let mut tx = edge.sqlite.begin_immediate(&ctx).await.unwrap();
        for id in 1..=20i64 {
            sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, ?, 'sqlite')")
                .bind(ctx.tenant_id())
                .bind(id)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        ctx
    };
    let sqlite_neighbour_before = edge.notes(&sqlite_neighbour).await;
    let neighbour_at = pg_at(&pg, &neighbour, "notes").await;
    let neighbour_before = pg_notes(&neighbour, &neighbour_at).await;
    let source_at = pg_at(&pg, &ctx, "notes").await;
    for (tenancy, body) in [(&follower, "follower warm-up"), (&deaf, "deaf warm-up")] {
        let mut tx = tenancy.begin(&ctx).await.unwrap();
        sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES ($1, $2, $3)")
            .bind(ctx.tenant_id())
            .bind(if body.starts_with('f') {
                SEEDED + 1
            } else {
                SEEDED + 2
            })
            .bind(body)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicUsize::new(0));
    let handles = writers(&mover, &edge.sqlite, &ctx, &stop, &ops);
    progress(&ops, 200).await;
    let target = edge.target(to, &ctx);
    let report = mover
        .move_tenant_to_sqlite(
            ctx.tenant_id(),
            &edge.sqlite,
            target.clone(),
            MoveOptions::default().keep_source(true),
        )
        .await
        .unwrap();
    let source_at_cut_over = pg_notes(&ctx, &source_at).await;
    progress(&ops, 200).await;
    stop.store(true, Ordering::Release);
    let mut seen = Vec::new();
    for h in handles {
        seen.push(h.await.unwrap());
    }
    eprintln!(
        "{test}: rows {:?}, fence {:?}, phases {:?}; writers acknowledged {} ({} on SQLite), \
         refused {}",
        report.rows,
        report.fence,
        report.phases,
        seen.iter().map(|s| s.acked).sum::<usize>(),
        seen.iter().map(|s| s.on_sqlite).sum::<usize>(),
        seen.iter().map(|s| s.refused).sum::<usize>()
    );
    assert_eq!(report.to, target);
    assert!(report.phases.iter().any(|(p, _)| *p == MovePhase::Done));
    assert!(seen.iter().map(|s| s.on_sqlite).sum::<usize>() > 0);
    assert_eq!(
        report.rows["notes"],
        source_at_cut_over.len() as u64,
        "the copy holds what the source held at the fence"
    );

    // Every acknowledged write, once, served by SQLite.
    let stored: Vec<(i64, String)> = edge
        .notes(&ctx)
        .await
        .into_iter()
        .filter(|(id, _)| *id <= SEEDED || *id > SEEDED + 2)
        .collect();
    check(&stored, &seen);
    // Every type round trip, read through the SQLite tenancy with sqlx,
    // stored in the forms the mapping names.
    assert_eq!(edge.kinds(&ctx).await, kinds);
    let mut conn = edge.sqlite.acquire(&ctx).await.unwrap();
    let stored: (String, String, i64, String, String, String, String, String) = sqlx::query_as(
        "SELECT typeof(flag), typeof(ref), length(ref), typeof(at), at, typeof(amount), \
         typeof(raw), typeof(big) FROM kinds WHERE id = 1",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    assert_eq!(
        stored,
        (
            "integer".into(),
            "blob".into(),
            16,
            "text".into(),
            "2026-12-06T13:55:53.123456+00:00".into(),
            "text".into(),
            "blob".into(),
            "integer".into()
        )
    );

    // PostgreSQL refuses the tenant, saying where it is — the mover at
    // once, the follower once notified; the deaf process's write by its
    // stale record is refused by the lock-out.
    for tenancy in [&mover, &follower] {
        let mut refused = None;
        for _ in 0..200 {
            match tenancy.begin(&ctx).await {
                Err(TenancyError::PlacementNotServedHere { placement, .. }) => {
                    refused = Some(placement);
                    break;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(e) => panic!("expected PlacementNotServedHere, got {e}"),
            }
        }
        assert_eq!(refused, Some(target.clone()));
    }
    // Nor does it operate on it (a PostgreSQL deletion never touches the
    // SQLite file).
    let refused = mover.delete_tenant(ctx.tenant_id()).await.unwrap_err();
    assert!(
        matches!(refused, TenancyError::PlacementNotServedHere { .. }),
        "{refused}"
    );
    let refused = mover.export_tenant(ctx.tenant_id()).await.unwrap_err();
    assert!(
        matches!(refused, TenancyError::PlacementNotServedHere { .. }),
        "{refused}"
    );
    let stale = async {
        let mut tx = deaf.begin(&ctx).await?;
        sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES ($1, 99999999, 'stale')")
            .bind(ctx.tenant_id())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok::<(), TenancyError>(())
    }
    .await;
    assert!(stale.is_err(), "a stale process wrote to the old placement");
    assert_eq!(
        pg_notes(&ctx, &source_at).await,
        source_at_cut_over,
        "no write on the old placement after the fence"
    );
    // The neighbour: untouched, still served by PostgreSQL.
    assert_eq!(pg_notes(&neighbour, &neighbour_at).await, neighbour_before);
    assert!(mover.begin(&neighbour).await.is_ok());
    assert_eq!(edge.notes(&sqlite_neighbour).await, sqlite_neighbour_before);
    // The kept source goes when asked.
    assert_eq!(mover.kept_sources(ctx.tenant_id()).await.unwrap().len(), 1);
    mover.purge_moved_source(ctx.tenant_id()).await.unwrap();
    match from {
        Strategy::Shared => assert!(pg_notes(&ctx, &source_at).await.is_empty()),
        _ => {
            if from == Strategy::Database {
                source_at.pool.close().await;
            }
            let name = format!("t_{}", ctx.tenant_id().simple());
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) \
                 OR EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            )
            .bind(name)
            .fetch_one(&pg.admin)
            .await
            .unwrap();
            assert!(!exists, "the kept schema or database was purged");
        }
    }
    // SQLite keeps serving it.
    assert_eq!(edge.kinds(&ctx).await, kinds);

    edge.sqlite.delete_tenant(ctx.tenant_id()).await.unwrap();
    edge.sqlite
        .delete_tenant(sqlite_neighbour.tenant_id())
        .await
        .unwrap();
    mover.delete_tenant(neighbour.tenant_id()).await.unwrap();
    edge.cleanup();
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_row_tenant_moves_to_the_sqlite_shared_file_while_eight_writers_run() {
    move_while_writing("moving::to_sqlite_row", Strategy::Shared, Strategy::Shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_schema_tenant_moves_to_a_sqlite_tenant_file_while_eight_writers_run() {
    move_while_writing(
        "moving::to_sqlite_schema",
        Strategy::Schema,
        Strategy::Database,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_database_tenant_moves_to_a_sqlite_tenant_file_while_eight_writers_run() {
    move_while_writing(
        "moving::to_sqlite_database",
        Strategy::Database,
        Strategy::Database,
    )
    .await;
}

#[tokio::test]
async fn pg_to_sqlite_kept_source_is_purged_once_its_retention_has_passed() {
    let start = "2030-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
    let clock = ManualClock::new(start);
    let Some(pg) = crate::pg_env::sandbox_with_clock(
        "moving::to_sqlite_retention",
        ScopeMode::Shared,
        Arc::new(clock.clone()),
    )
    .await
    else {
        return;
    };
    let (pg, edge) = world_over(pg).await;
    let mover = process(&pg, Duration::from_secs(1), true);
    let ctx = provision(&pg, &mover, "p2s-kept", Strategy::Schema).await;
    seed(&mover, &ctx, 10).await;
    let schema = format!("t_{}", ctx.tenant_id().simple());
    let schema_exists = || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
        )
        .bind(&schema)
        .fetch_one(&pg.admin)
        .await
        .unwrap()
    };
    mover
        .move_tenant_to_sqlite(
            ctx.tenant_id(),
            &edge.sqlite,
            edge.target(Strategy::Database, &ctx),
            MoveOptions::default().keep_source_for(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let kept = mover.kept_sources(ctx.tenant_id()).await.unwrap();
    assert_eq!(kept[0].kept_until, Some(start + chrono::Duration::hours(1)));
    // Not before its retention has passed…
    clock.advance(chrono::Duration::minutes(59));
    assert!(
        mover
            .purge_expired_sources()
            .await
            .unwrap()
            .purged
            .is_empty()
    );
    assert!(schema_exists().await);
    // …then purged, though the tenant is served by another backend now.
    clock.advance(chrono::Duration::minutes(2));
    let done = mover.purge_expired_sources().await.unwrap();
    assert_eq!(done.purged.len(), 1, "{done:?}");
    assert!(!schema_exists().await);
    assert_eq!(edge.notes(&ctx).await.len(), 10);

    edge.sqlite.delete_tenant(ctx.tenant_id()).await.unwrap();
    edge.cleanup();
    pg.cleanup().await;
}
