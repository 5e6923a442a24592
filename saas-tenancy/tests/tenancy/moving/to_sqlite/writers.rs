//! Eight writers routed by the tenant's record — PostgreSQL until it
//! refuses the tenant with `PlacementNotServedHere`, SQLite after — and
//! the check that every acknowledged write is stored exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use saas_core::TenantContext;
use saas_tenancy::TenancyError;
use saas_tenancy::postgres::PgTenancy;
use saas_tenancy::sqlite::SqliteTenancy;

use super::fixture::SEEDED;

/// What the writers saw.
#[derive(Default, Debug)]
pub(super) struct Seen {
    /// Row id → its last acknowledged body.
    pub(super) rows: BTreeMap<i64, String>,
    /// Row id → bodies written after that whose commit failed.
    pub(super) maybe: BTreeMap<i64, Vec<String>>,
    /// Updates acknowledged that found no row.
    pub(super) lost: Vec<i64>,
    pub(super) acked: usize,
    pub(super) refused: usize,
    /// Acknowledged on SQLite.
    pub(super) on_sqlite: usize,
}

pub(super) enum Outcome {
    Acked(u64),
    Refused,
    Unknown,
}

/// One write, routed by the record: PostgreSQL, or SQLite once
/// PostgreSQL says the tenant is placed there.
pub(super) async fn write(
    pg: &PgTenancy,
    sqlite: &SqliteTenancy,
    ctx: &TenantContext,
    id: i64,
    body: &str,
    insert: bool,
) -> (Outcome, bool) {
    match pg.begin(ctx).await {
        Ok(mut tx) => {
            let sql = if insert {
                "INSERT INTO notes (tenant_id, id, body) VALUES ($1, $2, $3)"
            } else {
                "UPDATE notes SET body = $3 WHERE tenant_id = $1 AND id = $2"
            };
            let done = sqlx::query(sql)
                .bind(ctx.tenant_id())
                .bind(id)
                .bind(body)
                .execute(&mut *tx)
                .await;
            let Ok(done) = done else {
                return (Outcome::Refused, false);
            };
            match tx.commit().await {
                Ok(()) => (Outcome::Acked(done.rows_affected()), false),
                Err(_) => (Outcome::Unknown, false),
            }
        }
        Err(TenancyError::PlacementNotServedHere { .. }) => {
            let Ok(mut tx) = sqlite.begin_immediate(ctx).await else {
                return (Outcome::Refused, true);
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
            let Ok(done) = done else {
                return (Outcome::Refused, true);
            };
            // An update through a shared file's view counts no changes
            // (its INSTEAD OF trigger does the work): a lost row shows in
            // `check` as an acknowledged row missing instead.
            let _ = done;
            match tx.commit().await {
                Ok(()) => (Outcome::Acked(1), true),
                Err(_) => (Outcome::Unknown, true),
            }
        }
        Err(_) => (Outcome::Refused, false),
    }
}

/// Eight writers until `stop`: each inserts rows with ids of its own and
/// every other step updates one of its acknowledged rows.
pub(super) fn writers(
    pg: &PgTenancy,
    sqlite: &SqliteTenancy,
    ctx: &TenantContext,
    stop: &Arc<AtomicBool>,
    ops: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    (0..8i64)
        .map(|w| {
            let (pg, sqlite, ctx) = (pg.clone(), sqlite.clone(), ctx.clone());
            let (stop, ops) = (Arc::clone(stop), Arc::clone(ops));
            tokio::spawn(async move {
                let mut seen = Seen::default();
                let (mut next, mut step) = (0i64, 0u64);
                while !stop.load(Ordering::Acquire) {
                    step += 1;
                    let own: Vec<i64> = seen.rows.keys().copied().collect();
                    let (id, insert) = if step.is_multiple_of(2) && !own.is_empty() {
                        (own[(step as usize / 2) % own.len()], false)
                    } else {
                        next += 1;
                        (1_000_000 * (w + 1) + next, true)
                    };
                    let body = format!("w{w} s{step}");
                    match write(&pg, &sqlite, &ctx, id, &body, insert).await {
                        (Outcome::Acked(n), on_sqlite) => {
                            seen.acked += 1;
                            seen.on_sqlite += usize::from(on_sqlite);
                            if n == 0 {
                                seen.lost.push(id);
                            }
                            seen.rows.insert(id, body);
                            seen.maybe.remove(&id);
                        }
                        (Outcome::Refused, _) => {
                            seen.refused += 1;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        (Outcome::Unknown, _) => seen.maybe.entry(id).or_default().push(body),
                    }
                    ops.fetch_add(1, Ordering::AcqRel);
                }
                seen
            })
        })
        .collect()
}

/// Waits for the writers' next `more` operations.
pub(super) async fn progress(ops: &AtomicUsize, more: usize) {
    let target = ops.load(Ordering::Acquire) + more;
    for _ in 0..3000 {
        if ops.load(Ordering::Acquire) >= target {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("writers made no progress");
}

/// Every acknowledged write is stored once with its last acknowledged
/// body (or a later one whose commit failed), no seeded row is lost, and
/// no writer row appears that no writer wrote.
pub(super) fn check(stored: &[(i64, String)], seen: &[Seen]) {
    let by_id: BTreeMap<i64, &String> = stored.iter().map(|(id, b)| (*id, b)).collect();
    assert_eq!(by_id.len(), stored.len(), "a row stored twice");
    for id in 1..=SEEDED {
        assert!(by_id.contains_key(&id), "seeded row {id} lost");
    }
    let mut expected = 0;
    for s in seen {
        assert!(s.lost.is_empty(), "updates found no row: {:?}", s.lost);
        for (id, body) in &s.rows {
            expected += 1;
            let found = by_id
                .get(id)
                .unwrap_or_else(|| panic!("acknowledged row {id} lost"));
            let maybe = s.maybe.get(id).cloned().unwrap_or_default();
            assert!(
                *found == body || maybe.contains(found),
                "row {id}: stored {found:?}, last acknowledged {body:?}"
            );
        }
    }
    let unknown: usize = seen.iter().map(|s| s.maybe.len()).sum();
    let writer_rows = by_id.keys().filter(|id| **id > SEEDED).count();
    assert!(
        writer_rows >= expected && writer_rows <= expected + unknown,
        "{writer_rows} writer rows stored, {expected} acknowledged, {unknown} unknown"
    );
}
