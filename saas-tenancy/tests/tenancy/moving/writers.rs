//! The writers of the move tests: eight tasks inserting and updating a
//! tenant's rows through the tenancy API, and the check that every write
//! they saw acknowledged is stored exactly once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saas_core::TenantContext;
use saas_tenancy::postgres::PgTenancy;

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

pub(crate) async fn insert(
    tenancy: &PgTenancy,
    ctx: &TenantContext,
    body: &str,
) -> Result<i64, String> {
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
