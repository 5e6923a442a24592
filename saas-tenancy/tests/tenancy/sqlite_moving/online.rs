//! Moves with eight writers running throughout, spread over two tenancy
//! instances sharing the catalog and the files (as two processes would):
//! every acknowledged write ends up on the target exactly once, nothing
//! lands on the old placement after the cut-over, neighbours untouched.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use saas_core::TenantStatus;
use saas_tenancy::sqlite::SqliteMoveOptions;
use saas_tenancy::{MoveMethod, MovePhase, Placement, Strategy, TenancyError};
use sqlx::{Connection, SqliteConnection};

use super::fixture::Fixture;
use super::writers;

const SEEDED: i64 = 3_000;

/// Tries to write `tenant`'s row into the file of `placement` without the
/// library, as SQL naming the physical table would.
async fn raw_insert(
    fx: &Fixture,
    placement: &Placement,
    tenant: saas_core::TenantId,
) -> Result<(), sqlx::Error> {
    let table = match placement {
        Placement::Database { .. } => "notes",
        _ => "notes_rows",
    };
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(fx.file_of(placement))
        .create_if_missing(false);
    let mut conn = SqliteConnection::connect_with(&options).await?;
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (tenant_id, id, body) VALUES (?, 99999999, 'raw')"
    )))
    .bind(tenant)
    .execute(&mut conn)
    .await;
    conn.close().await?;
    done.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_shared_to_own_file_keeps_every_acknowledged_write_and_refuses_the_old_placement() {
    let fx = Fixture::new().await;
    let mover = fx.tenant("mover", Strategy::Shared, &fx.a).await;
    let row_neighbour = fx.tenant("row-neighbour", Strategy::Shared, &fx.a).await;
    let file_neighbour = fx.tenant("file-neighbour", Strategy::Database, &fx.a).await;
    fx.seed(&mover, SEEDED).await;
    fx.seed(&row_neighbour, 50).await;
    fx.seed(&file_neighbour, 50).await;
    let from = Placement::Shared {
        cluster: fx.a.clone(),
    };
    let to = Placement::derive(Strategy::Database, fx.a.clone(), mover.tenant_id());
    let neighbours_before = (
        fx.rows(&fx.tenancy, &row_neighbour).await,
        fx.rows(&fx.tenancy, &file_neighbour).await,
    );

    // A second instance with a warm pool and a handle held across the move.
    let second = fx.builder().build().unwrap();
    assert_eq!(fx.rows(&second, &mover).await.len(), SEEDED as usize);
    let mut held_elsewhere = second.acquire(&mover).await.unwrap();
    let mut held_here = fx.tenancy.acquire(&mover).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let handles = writers::spawn(&[fx.tenancy.clone(), second.clone()], &mover, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let phases = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&phases);
    let options = SqliteMoveOptions::default()
        .keep_source(true)
        .fence_grace(Duration::from_millis(200))
        .on_progress(move |p| seen.lock().unwrap().push(p.phase));
    let report = fx
        .tenancy
        .move_tenant(mover.tenant_id(), to.clone(), options)
        .await
        .unwrap();
    // The source as the cut-over left it.
    let source_at_cut_over = fx.raw_rows(&from, mover.tenant_id()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    let acked = writers::join(handles).await;
    eprintln!(
        "shared → own file: {} rows copied, fence {:?}, phases {:?}, writers acknowledged {} and \
         were refused {} times",
        report.rows["notes"],
        report.fence,
        report.phases,
        acked.iter().map(|a| a.acked).sum::<usize>(),
        acked.iter().map(|a| a.refused).sum::<usize>()
    );
    assert_eq!(report.method, MoveMethod::CopyUnderFence);
    assert_eq!(
        *phases.lock().unwrap(),
        [
            MovePhase::Prepared,
            MovePhase::Fenced,
            MovePhase::Synced,
            MovePhase::CutOver,
            MovePhase::Done
        ]
    );
    assert_eq!(report.rows["notes"], source_at_cut_over.len() as u64);
    assert!(source_at_cut_over.len() as i64 >= SEEDED);

    // Handles opened before the move, in either instance, are cut.
    for held in [&mut held_elsewhere, &mut held_here] {
        let refused =
            sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 88888888, 'stale')")
                .bind(mover.tenant_id())
                .execute(&mut **held)
                .await
                .unwrap_err();
        assert!(refused.to_string().contains("moved"), "{refused}");
        let refused = sqlx::query("UPDATE notes SET body = 'stale' WHERE id = 1")
            .execute(&mut **held)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("moved"), "{refused}");
    }
    drop((held_elsewhere, held_here));
    // SQL naming the physical table is refused too.
    assert!(raw_insert(&fx, &from, mover.tenant_id()).await.is_err());
    // Nothing was written to the old placement after the cut-over.
    assert_eq!(
        fx.raw_rows(&from, mover.tenant_id()).await,
        source_at_cut_over
    );

    // Both instances serve the tenant from its new placement.
    for tenancy in [&fx.tenancy, &second] {
        let conn = tenancy.acquire(&mover).await.unwrap();
        assert_eq!(conn.record().placement, to);
        assert_eq!(conn.record().status, TenantStatus::Active);
    }
    let stored = fx.rows(&second, &mover).await;
    assert_eq!(stored, fx.raw_rows(&to, mover.tenant_id()).await);
    writers::check(&stored, &acked, SEEDED);
    assert!(second.open_move(mover.tenant_id()).await.unwrap().is_none());

    // The kept source, purged on request; its lock-out stays.
    assert!(
        fx.tenancy
            .purge_moved_source(mover.tenant_id())
            .await
            .unwrap()
    );
    assert!(fx.raw_rows(&from, mover.tenant_id()).await.is_empty());
    assert!(raw_insert(&fx, &from, mover.tenant_id()).await.is_err());
    assert!(
        !fx.tenancy
            .purge_moved_source(mover.tenant_id())
            .await
            .unwrap()
    );
    assert_eq!(fx.rows(&second, &mover).await, stored);

    // Neighbours untouched, and still writable.
    assert_eq!(
        neighbours_before,
        (
            fx.rows(&fx.tenancy, &row_neighbour).await,
            fx.rows(&fx.tenancy, &file_neighbour).await,
        )
    );
    for n in [&row_neighbour, &file_neighbour] {
        let mut conn = second.acquire(n).await.unwrap();
        sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 777, 'still here')")
            .bind(n.tenant_id())
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_own_file_to_shared_file_on_another_cluster_keeps_every_acknowledged_write() {
    let fx = Fixture::new().await;
    let mover = fx.tenant("mover", Strategy::Database, &fx.a).await;
    let neighbour = fx.tenant("neighbour", Strategy::Shared, &fx.b).await;
    fx.seed(&mover, SEEDED).await;
    fx.seed(&neighbour, 50).await;
    let from = Placement::derive(Strategy::Database, fx.a.clone(), mover.tenant_id());
    let to = Placement::Shared {
        cluster: fx.b.clone(),
    };
    let neighbour_before = fx.rows(&fx.tenancy, &neighbour).await;
    let second = fx.builder().build().unwrap();
    assert_eq!(fx.rows(&second, &mover).await.len(), SEEDED as usize);
    let mut held_elsewhere = second.acquire(&mover).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let handles = writers::spawn(&[fx.tenancy.clone(), second.clone()], &mover, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = fx
        .tenancy
        .move_tenant(mover.tenant_id(), to.clone(), SqliteMoveOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    let acked = writers::join(handles).await;
    eprintln!(
        "own file → shared file on another cluster: {} rows copied, fence {:?}, writers \
         acknowledged {} and were refused {} times",
        report.rows["notes"],
        report.fence,
        acked.iter().map(|a| a.acked).sum::<usize>(),
        acked.iter().map(|a| a.refused).sum::<usize>()
    );
    // The source file is gone; a handle that kept it open cannot write to it.
    assert!(!fx.file_of(&from).exists());
    let refused =
        sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 88888888, 'stale')")
            .bind(mover.tenant_id())
            .execute(&mut *held_elsewhere)
            .await
            .unwrap_err();
    assert!(refused.to_string().contains("moved"), "{refused}");
    drop(held_elsewhere);

    let stored = fx.rows(&second, &mover).await;
    assert_eq!(stored, fx.raw_rows(&to, mover.tenant_id()).await);
    writers::check(&stored, &acked, SEEDED);
    assert_eq!(fx.rows(&fx.tenancy, &neighbour).await, neighbour_before);
    // The tenant's rows carry it in the shared file's tenant column.
    assert_eq!(
        fx.raw_rows(&to, neighbour.tenant_id()).await,
        neighbour_before
    );

    // And back: the fence its earlier move left is lifted from the target.
    let back = Placement::derive(Strategy::Database, fx.a.clone(), mover.tenant_id());
    let report = fx
        .tenancy
        .move_tenant(
            mover.tenant_id(),
            back.clone(),
            SqliteMoveOptions::default(),
        )
        .await
        .unwrap();
    eprintln!(
        "shared file → own file, no writers: {} rows copied, fence {:?}",
        report.rows["notes"], report.fence
    );
    assert_eq!(report.rows["notes"], stored.len() as u64);
    assert_eq!(fx.rows(&second, &mover).await, stored);
    assert!(fx.raw_rows(&to, mover.tenant_id()).await.is_empty());
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_new_handles_wait_for_the_cut_over_then_run_on_the_new_placement() {
    let fx = Fixture::new().await;
    let mover = fx.tenant("mover", Strategy::Shared, &fx.a).await;
    fx.seed(&mover, 100).await;
    let to = Placement::derive(Strategy::Database, fx.b.clone(), mover.tenant_id());
    let stopped = fx
        .tenancy
        .move_tenant(
            mover.tenant_id(),
            to.clone(),
            SqliteMoveOptions::default().stop_after(MovePhase::Fenced),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(stopped, TenancyError::MoveStopped { .. }),
        "{stopped}"
    );

    // A short wait ends with a typed, retryable error.
    let impatient = fx
        .builder()
        .move_wait(Duration::from_millis(100))
        .build()
        .unwrap();
    let refused = impatient.acquire(&mover).await.unwrap_err();
    assert!(
        matches!(refused, TenancyError::TenantMoving { .. }),
        "{refused}"
    );
    assert!(refused.is_retryable());

    // A patient one, in another instance, waits and lands on the target.
    let patient = fx
        .builder()
        .move_wait(Duration::from_secs(20))
        .build()
        .unwrap();
    let ctx = mover.clone();
    let waiting = tokio::spawn(async move {
        let mut conn = patient.acquire(&ctx).await?;
        sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 5000, 'after')")
            .bind(ctx.tenant_id())
            .execute(&mut *conn)
            .await?;
        Ok::<_, TenancyError>(conn.record().placement.clone())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a handle was served while the tenant was fenced"
    );
    fx.tenancy
        .resume_move(mover.tenant_id(), SqliteMoveOptions::default())
        .await
        .unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), to);
    let rows = fx.raw_rows(&to, mover.tenant_id()).await;
    assert_eq!(rows.len(), 101);
    fx.cleanup().await;
}
