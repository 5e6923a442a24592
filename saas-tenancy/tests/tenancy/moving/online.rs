//! Moves while 8 writers keep inserting and updating the tenant's rows:
//! every acknowledged write ends on the new placement exactly once, the
//! old placement takes no write after the cut-over (also not from a
//! second process with a warm record cache, with or without the move's
//! notification), and other tenants are untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saas_core::TenantContext;
use saas_tenancy::postgres::{MoveMethod, MoveOptions, MovePhase, PgTenancy, ScopeMode};
use saas_tenancy::{Placement, Strategy};

use super::fixture::env;

/// What the writers had acknowledged.
#[derive(Default)]
pub(crate) struct Acked {
    /// Row id → the body its last acknowledged write gave it.
    pub(crate) rows: BTreeMap<i64, String>,
    /// Bodies of inserts whose outcome is unknown (an error after sending).
    pub(crate) maybe: Vec<String>,
    /// Updates that succeeded but found no row (a lost row).
    pub(crate) lost: Vec<i64>,
}

async fn insert(tenancy: &PgTenancy, ctx: &TenantContext, body: &str) -> Result<i64, String> {
    let mut tx = tenancy.begin(ctx).await.map_err(|e| e.to_string())?;
    let id: i64 =
        sqlx::query_scalar("INSERT INTO notes (tenant_id, body) VALUES ($1, $2) RETURNING id")
            .bind(ctx.tenant_id())
            .bind(body)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(id)
}

async fn update(
    tenancy: &PgTenancy,
    ctx: &TenantContext,
    id: i64,
    body: &str,
) -> Result<u64, String> {
    let mut tx = tenancy.begin(ctx).await.map_err(|e| e.to_string())?;
    let done = sqlx::query("UPDATE notes SET body = $2 WHERE id = $1")
        .bind(id)
        .bind(body)
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(done.rows_affected())
}

/// Eight writers on `tenancy` until `stop`: each inserts, and every third
/// operation updates one of its own acknowledged rows (retrying the same
/// value until acknowledged).
pub(crate) fn writers(
    tenancy: &PgTenancy,
    ctx: &TenantContext,
    stop: &Arc<AtomicBool>,
    acked: &Arc<Mutex<Acked>>,
    ops: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..8)
        .map(|w| {
            let (tenancy, ctx) = (tenancy.clone(), ctx.clone());
            let (stop, acked, ops) = (Arc::clone(stop), Arc::clone(acked), Arc::clone(ops));
            tokio::spawn(async move {
                let mut mine: Vec<i64> = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    n += 1;
                    if n.is_multiple_of(3) && !mine.is_empty() {
                        let id = mine[(n as usize / 3) % mine.len()];
                        let body = format!("w{w}-u{n}");
                        loop {
                            match update(&tenancy, &ctx, id, &body).await {
                                Ok(1) => {
                                    acked.lock().unwrap().rows.insert(id, body.clone());
                                    break;
                                }
                                Ok(_) => {
                                    acked.lock().unwrap().lost.push(id);
                                    break;
                                }
                                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                            }
                        }
                    } else {
                        let body = format!("w{w}-i{n}");
                        match insert(&tenancy, &ctx, &body).await {
                            Ok(id) => {
                                acked.lock().unwrap().rows.insert(id, body);
                                mine.push(id);
                            }
                            Err(_) => {
                                acked.lock().unwrap().maybe.push(body);
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                    }
                    ops.fetch_add(1, Ordering::AcqRel);
                }
            })
        })
        .collect()
}

/// Waits until the writers have done `more` further operations.
pub(crate) async fn progress(ops: &AtomicUsize, more: usize) {
    let target = ops.load(Ordering::Acquire) + more;
    for _ in 0..6000 {
        if ops.load(Ordering::Acquire) >= target {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("writers made no progress");
}

/// Every acknowledged write is on `rows` exactly once; an insert of
/// unknown outcome at most once.
pub(crate) fn check_acked(acked: &Acked, rows: &[(i64, String)]) {
    assert!(
        acked.lost.is_empty(),
        "updates found no row: {:?}",
        acked.lost
    );
    let stored: BTreeMap<i64, &String> = rows.iter().map(|(id, b)| (*id, b)).collect();
    assert_eq!(stored.len(), rows.len(), "ids are unique");
    for (id, body) in &acked.rows {
        assert_eq!(
            stored.get(id).copied(),
            Some(body),
            "acknowledged write of row {id}"
        );
    }
    let mut bodies: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, body) in rows {
        *bodies.entry(body.as_str()).or_default() += 1;
    }
    for (body, n) in &bodies {
        assert_eq!(*n, 1, "{body} stored {n} times");
    }
    for body in &acked.maybe {
        assert!(bodies.get(body.as_str()).copied().unwrap_or(0) <= 1);
    }
}

async fn move_while_writing(
    test: &str,
    from: Strategy,
    on_two: bool,
    to: Strategy,
    to_two: bool,
    method: MoveMethod,
) {
    move_while_writing_in(test, from, on_two, to, to_two, method, ScopeMode::Shared).await;
}

/// Moves a tenant of `from` (on server two if `on_two`) to `to` (on two
/// if `to_two`) while 8 writers write, every tenancy in scope mode
/// `mode`, then checks everything the issue asks.
#[allow(clippy::too_many_arguments)]
async fn move_while_writing_in(
    test: &str,
    from: Strategy,
    on_two: bool,
    to: Strategy,
    to_two: bool,
    method: MoveMethod,
    mode: ScopeMode,
) {
    let Some(env) = env(test).await else { return };
    let cluster = |two: bool| {
        if two {
            env.two.name.clone()
        } else {
            env.one.name.clone()
        }
    };
    let mover = env.tenancy_in(Duration::from_secs(1), true, mode);
    // "Other processes" with a warm record cache: one follows moves by
    // notification, one does not (only the lock-out stops it).
    let follower = env.tenancy_in(Duration::from_secs(3600), true, mode);
    let deaf = env.tenancy_in(Duration::from_secs(3600), false, mode);
    let ctx = env.tenant(&mover, "moving", from, &cluster(on_two)).await;
    let neighbours = [
        env.tenant(&mover, "neighbour-one", Strategy::Shared, &env.one.name)
            .await,
        env.tenant(&mover, "neighbour-two", Strategy::Shared, &env.two.name)
            .await,
    ];
    for n in &neighbours {
        for i in 0..5 {
            insert(&mover, n, &format!("neighbour {i}")).await.unwrap();
        }
    }
    let before = [
        env.stored(
            &placement(&mover, &neighbours[0]).await,
            neighbours[0].tenant_id(),
        )
        .await,
        env.stored(
            &placement(&mover, &neighbours[1]).await,
            neighbours[1].tenant_id(),
        )
        .await,
    ];
    let source = placement(&mover, &ctx).await;
    // Warm both caches.
    insert(&follower, &ctx, "follower warm-up").await.unwrap();
    insert(&deaf, &ctx, "deaf warm-up").await.unwrap();

    let (stop, acked, ops) = Default::default();
    let (stop, acked, ops): (Arc<AtomicBool>, Arc<Mutex<Acked>>, Arc<AtomicUsize>) =
        (stop, acked, ops);
    let tasks = writers(&mover, &ctx, &stop, &acked, &ops);
    progress(&ops, 200).await;
    let phases = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = Arc::clone(&phases);
    let target = Placement::derive(to, cluster(to_two), ctx.tenant_id());
    let report = mover
        .move_tenant(
            ctx.tenant_id(),
            target.clone(),
            MoveOptions::default()
                .keep_source(true)
                .on_progress(move |p| {
                    seen.lock().unwrap().insert(p.phase);
                }),
        )
        .await
        .unwrap();
    progress(&ops, 200).await;
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("{test}: {report:?}");
    assert_eq!(report.method, method);
    assert_eq!(report.to, target);
    assert_eq!(placement(&mover, &ctx).await, target);
    assert!(phases.lock().unwrap().contains(&MovePhase::Fenced));
    assert!(report.phases.iter().any(|(p, _)| *p == MovePhase::Done));

    // Every acknowledged write, exactly once, on the target.
    let on_target = env.stored(&target, ctx.tenant_id()).await;
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.rows.len() > 200, "writers wrote throughout");
    check_acked(&acked, &on_target);
    // The source holds what it held at the fence and nothing later.
    let on_source = env.stored(&source, ctx.tenant_id()).await;
    assert_eq!(
        on_source.len() as u64,
        report.rows["notes"],
        "no row added on the source after the fence"
    );
    let target_ids: BTreeSet<i64> = on_target.iter().map(|(id, _)| *id).collect();
    assert!(on_source.iter().all(|(id, _)| target_ids.contains(id)));

    // A process with a warm cache that follows moves writes to the target;
    // one that does not is refused on the source. The source never changes.
    let mut follower_ok = None;
    for _ in 0..200 {
        if let Ok(id) = insert(&follower, &ctx, "follower after").await {
            follower_ok = Some(id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let id = follower_ok.expect("the follower reaches the new placement");
    assert!(
        env.stored(&target, ctx.tenant_id())
            .await
            .iter()
            .any(|(i, b)| *i == id && b == "follower after")
    );
    // Its first write goes by its stale record and is refused; a failed
    // connection may make it read the catalog again, and then it writes
    // to the target.
    let stale = insert(&deaf, &ctx, "deaf after").await;
    assert!(
        stale.is_err(),
        "a stale process cannot write to the old placement"
    );
    for i in 0..3 {
        let body = format!("deaf after {i}");
        if let Ok(id) = insert(&deaf, &ctx, &body).await {
            let on_target = env.stored(&target, ctx.tenant_id()).await;
            assert!(on_target.iter().any(|(i, b)| *i == id && *b == body));
        }
    }
    assert_eq!(
        env.stored(&source, ctx.tenant_id()).await,
        on_source,
        "old placement unchanged"
    );
    // Other tenants untouched.
    assert_eq!(
        env.stored(
            &placement(&mover, &neighbours[0]).await,
            neighbours[0].tenant_id()
        )
        .await,
        before[0]
    );
    assert_eq!(
        env.stored(
            &placement(&mover, &neighbours[1]).await,
            neighbours[1].tenant_id()
        )
        .await,
        before[1]
    );
    assert_eq!(env.replication_leftovers().await, 0);
    // New ids continue past the moved ones.
    let max = on_target.iter().map(|(id, _)| *id).max().unwrap_or(0);
    assert!(insert(&mover, &ctx, "after").await.unwrap() > max);
    mover.purge_moved_source(ctx.tenant_id()).await.unwrap();
    env.cleanup().await;
}

async fn placement(tenancy: &PgTenancy, ctx: &TenantContext) -> Placement {
    tenancy
        .catalog()
        .get(ctx.tenant_id())
        .await
        .unwrap()
        .unwrap()
        .placement
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row_to_row_on_another_server() {
    move_while_writing(
        "moving::row_to_row",
        Strategy::Shared,
        false,
        Strategy::Shared,
        true,
        MoveMethod::LogicalReplication,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_to_database() {
    move_while_writing(
        "moving::schema_to_database",
        Strategy::Schema,
        false,
        Strategy::Database,
        false,
        MoveMethod::LogicalReplication,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_to_row() {
    move_while_writing(
        "moving::database_to_row",
        Strategy::Database,
        false,
        Strategy::Shared,
        false,
        MoveMethod::LogicalReplication,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row_to_schema() {
    move_while_writing(
        "moving::row_to_schema",
        Strategy::Shared,
        false,
        Strategy::Schema,
        false,
        MoveMethod::CopyUnderFence,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row_to_database_with_tenant_pools() {
    move_while_writing_in(
        "moving::row_to_database_pools",
        Strategy::Shared,
        false,
        Strategy::Database,
        true,
        MoveMethod::LogicalReplication,
        ScopeMode::TenantPools,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_to_row() {
    move_while_writing(
        "moving::schema_to_row",
        Strategy::Schema,
        false,
        Strategy::Shared,
        false,
        MoveMethod::CopyUnderFence,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_to_schema_on_another_server() {
    move_while_writing(
        "moving::schema_to_schema",
        Strategy::Schema,
        false,
        Strategy::Schema,
        true,
        MoveMethod::LogicalReplication,
    )
    .await;
}
