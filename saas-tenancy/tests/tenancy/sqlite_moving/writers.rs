//! Eight writers inserting and updating a SQLite tenant's rows through
//! the tenancy API (spread over one or more instances), and the check
//! that every write they saw acknowledged is stored exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use saas_core::TenantContext;
use saas_tenancy::sqlite::SqliteTenancy;

/// What the writers saw.
#[derive(Default, Debug)]
pub(crate) struct Acked {
    /// Row id → the body of its last acknowledged write.
    pub(crate) rows: BTreeMap<i64, String>,
    /// Row id → bodies written after that whose outcome is unknown (the
    /// commit itself failed).
    pub(crate) maybe: BTreeMap<i64, Vec<String>>,
    /// Operations refused (fence waits, lock-out, busy), for the log.
    pub(crate) refused: usize,
    /// Acknowledged operations.
    pub(crate) acked: usize,
}

enum Outcome {
    Acked,
    Refused,
    Unknown,
}

async fn write(
    tenancy: &SqliteTenancy,
    ctx: &TenantContext,
    id: i64,
    body: &str,
    insert: bool,
) -> Outcome {
    let Ok(mut tx) = tenancy.begin_immediate(ctx).await else {
        return Outcome::Refused;
    };
    let sql = if insert {
        "INSERT INTO notes (tenant_id, id, body) VALUES (?1, ?2, ?3)"
    } else {
        "UPDATE notes SET body = ?3 WHERE tenant_id = ?1 AND id = ?2"
    };
    let done = sqlx::query(sql)
        .bind(ctx.tenant_id())
        .bind(id)
        .bind(body)
        .execute(&mut *tx)
        .await;
    if done.is_err() {
        return Outcome::Refused;
    }
    match tx.commit().await {
        Ok(()) => Outcome::Acked,
        Err(_) => Outcome::Unknown,
    }
}

/// Runs eight writers, writer `w` on `instances[w % len]`, until `stop`:
/// each inserts rows with ids of its own and updates every other step
/// one of its acknowledged rows.
pub(crate) fn spawn(
    instances: &[SqliteTenancy],
    ctx: &TenantContext,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Acked>> {
    (0..8i64)
        .map(|w| {
            let tenancy = instances[w as usize % instances.len()].clone();
            let (ctx, stop) = (ctx.clone(), Arc::clone(stop));
            tokio::spawn(async move {
                let mut acked = Acked::default();
                let mut next = 0i64;
                let mut step = 0u64;
                while !stop.load(Ordering::Acquire) {
                    step += 1;
                    let own: Vec<i64> = acked.rows.keys().copied().collect();
                    let (id, insert) = if step.is_multiple_of(2) && !own.is_empty() {
                        (own[(step as usize / 2) % own.len()], false)
                    } else {
                        next += 1;
                        (1_000_000 * (w + 1) + next, true)
                    };
                    let body = format!("w{w} s{step}");
                    match write(&tenancy, &ctx, id, &body, insert).await {
                        Outcome::Acked => {
                            acked.acked += 1;
                            acked.rows.insert(id, body);
                            acked.maybe.remove(&id);
                        }
                        Outcome::Refused => {
                            acked.refused += 1;
                            // A fresh id next time: an insert refused is not retried
                            // under the same id only to be told it exists.
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        Outcome::Unknown => acked.maybe.entry(id).or_default().push(body),
                    }
                    tokio::task::yield_now().await;
                }
                acked
            })
        })
        .collect()
}

/// Joins the writers.
pub(crate) async fn join(handles: Vec<tokio::task::JoinHandle<Acked>>) -> Vec<Acked> {
    let mut all = Vec::new();
    for h in handles {
        all.push(h.await.unwrap());
    }
    all
}

/// Every acknowledged write is stored exactly once with its last
/// acknowledged body (or a later one whose outcome was unknown), and no
/// writer row is stored that no writer wrote.
pub(crate) fn check(stored: &[(i64, String)], writers: &[Acked], seeded: i64) {
    let mut by_id: BTreeMap<i64, Vec<&String>> = BTreeMap::new();
    for (id, body) in stored {
        by_id.entry(*id).or_default().push(body);
    }
    for (id, bodies) in &by_id {
        assert_eq!(bodies.len(), 1, "row {id} stored {} times", bodies.len());
    }
    for id in 1..=seeded {
        assert!(by_id.contains_key(&id), "seeded row {id} lost");
    }
    let mut expected = 0usize;
    for acked in writers {
        for (id, body) in &acked.rows {
            expected += 1;
            let Some(found) = by_id.get(id) else {
                panic!("acknowledged row {id} lost");
            };
            let maybe = acked.maybe.get(id).cloned().unwrap_or_default();
            assert!(
                found[0] == body || maybe.contains(found[0]),
                "row {id}: stored {:?}, last acknowledged {body:?}",
                found[0]
            );
        }
    }
    let unknown: usize = writers.iter().map(|a| a.maybe.len()).sum();
    let writer_rows = by_id.keys().filter(|id| **id > seeded).count();
    assert!(
        writer_rows >= expected && writer_rows <= expected + unknown,
        "{writer_rows} writer rows stored, {expected} acknowledged, {unknown} unknown"
    );
}
