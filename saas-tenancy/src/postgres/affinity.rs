//! Tenant affinity on a shared runtime pool: a connection a tenant's
//! handle has finished with is kept for that tenant for a short window
//! instead of going back to the pool, and the tenant's next handle takes
//! it again.
//!
//! Why: going back to the pool is what makes a shared connection safe for
//! the next tenant — the full reset with its census of prepared
//! statements (see `session`), then sqlx's release ping — and it is the
//! costliest part of a scoped request on a shared pool (two round trips
//! and the census's server time per use, measured in `BENCHMARKS.md`).
//! None of it is needed when the next user is the same tenant: nothing
//! its earlier handle left can reach another tenant, and another tenant
//! never gets the connection without the full reset. So the tenant's next
//! handle on a kept connection only puts its scope on, in the round trip
//! it needs anyway: a session handle ([`PgTenantConn`](super::PgTenantConn))
//! with a statement prepared once per connection
//! ([`super::sql::SCOPE_SESSION_ROW`] / `_SCHEMA`), a transaction
//! ([`PgTenantTx`](super::PgTenantTx)) in its `BEGIN` — session advisory
//! locks released, the handle lock taken, the role set (a row tenant's
//! back to the login's), a schema tenant's search path, the tenant; a
//! transaction also refuses a transaction raw SQL left open, and takes a
//! pool connection instead. Resetting the session there as well (the
//! `RESET ALL`, `DISCARD TEMP`… of the full reset, as a simple query)
//! cost a scoped statement about 100 µs more on a loopback server —
//! one A/B on 2026-12-06 (quiet machine, 3 runs per side, ranges in
//! BENCHMARKS.md): a schema tenant's `acquire` and statement 1.81× the
//! plain pool's without it, 2.24× with it.
//!
//! What a kept connection carries to the same tenant's next handles, and
//! only to them, for at most the window: the session as the tenant's
//! last handle left it — settings, session transaction characteristics,
//! listeners, temporary objects, held cursors, sequence state, statements
//! raw SQL `PREPARE`d or `DEALLOCATE`d, and for a session handle a
//! transaction raw SQL left open on a `PgTenantConn` (its statements then
//! run inside it) — as on a tenant's own pool in
//! [`ScopeMode::TenantPools`](super::ScopeMode::TenantPools) or on any
//! plain sqlx pool. A connection is kept for at most `window` after it
//! last left the pool, however often it is reused, then goes back through
//! the full reset (which closes one left in a transaction, rolling it
//! back).
//!
//! Bounds, so that keeping never starves anyone: at most half the pool is
//! kept; a connection is kept only while the pool can still hand one out
//! without waiting (an idle connection, or room to open one); a scoped
//! checkout that finds the pool exhausted hands the oldest kept connection
//! back first; a sweeper task hands back what outlived the window; a
//! deletion hands back the tenant's kept connections before it waits for
//! handles. A transaction is kept only if it committed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use saas_core::TenantId;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgTransactionManager;
use sqlx::{PgPool, Postgres};
use sqlx_core::transaction::TransactionManager;

use crate::error::TenancyError;
use crate::placement::Placement;

/// The default window (see [`PgTenancyBuilder::connection_affinity`](super::PgTenancyBuilder::connection_affinity)).
pub(crate) const DEFAULT_AFFINITY: Duration = Duration::from_secs(1);

/// The longest window the builder accepts: it bounds how long another
/// process's deletion may wait for a kept session handle's lock, and how
/// long what raw SQL prepared stays with its tenant.
pub(crate) const MAX_AFFINITY: Duration = Duration::from_secs(10);

/// Refuses a window longer than [`MAX_AFFINITY`].
pub(crate) fn check_window(window: Duration) -> Result<(), TenancyError> {
    if window > MAX_AFFINITY {
        return Err(TenancyError::InvalidInput(format!(
            "connection affinity of {window:?} is longer than the maximum of {MAX_AFFINITY:?}; \
             use a shorter window (zero turns affinity off)"
        )));
    }
    Ok(())
}

/// A connection out of a shared runtime pool, with what its handle needs
/// to know about where it came from.
pub(crate) struct SharedCheckout {
    pub(crate) conn: PoolConnection<Postgres>,
    /// When it last left the pool, i.e. when it was last fully reset.
    pub(crate) left_pool: Instant,
    /// Whether it comes from this tenant's kept connections (its session
    /// needs only its scope, its caches are this tenant's).
    pub(crate) reused: bool,
}

impl SharedCheckout {
    /// A connection just taken from the pool.
    pub(crate) fn from_pool(conn: PoolConnection<Postgres>) -> Self {
        Self {
            conn,
            left_pool: Instant::now(),
            reused: false,
        }
    }
}

/// The connections a cluster's shared runtime pool keeps for tenants.
#[derive(Clone)]
pub(crate) struct Affinity {
    lot: Arc<Lot>,
}

struct Lot {
    kept: Mutex<VecDeque<Kept>>,
    pool: PgPool,
    max_connections: u32,
    max_kept: usize,
    window: Duration,
    sweeping: AtomicBool,
}

struct Kept {
    conn: PoolConnection<Postgres>,
    tenant: TenantId,
    placement: Placement,
    left_pool: Instant,
}

impl Affinity {
    /// Affinity on `pool` (of `max_connections`), keeping connections for
    /// `window` (zero: never).
    pub(crate) fn new(pool: PgPool, max_connections: u32, window: Duration) -> Self {
        let max_kept = if window.is_zero() {
            0
        } else {
            usize::try_from(max_connections / 2).unwrap_or(usize::MAX)
        };
        Self {
            lot: Arc::new(Lot {
                kept: Mutex::new(VecDeque::new()),
                pool,
                max_connections,
                max_kept,
                window,
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// The connection most recently kept for `tenant` at `placement`, if
    /// one is still within the window.
    pub(crate) fn take(&self, tenant: TenantId, placement: &Placement) -> Option<SharedCheckout> {
        if self.lot.max_kept == 0 {
            return None;
        }
        let found = {
            let mut kept = self.lot.lock();
            let at = kept.iter().rposition(|k| k.tenant == tenant)?;
            kept.remove(at)?
        };
        // A placement that changed since (the tenant moved) starts over
        // from the pool: the kept caches belong to the old placement.
        if &found.placement != placement || found.left_pool.elapsed() >= self.lot.window {
            hand_back(found);
            return None;
        }
        Some(SharedCheckout {
            conn: found.conn,
            left_pool: found.left_pool,
            reused: true,
        })
    }

    /// Keeps `conn` for `tenant` if the bounds allow; otherwise hands it
    /// back to the pool (through the full reset).
    pub(crate) fn keep(
        &self,
        conn: PoolConnection<Postgres>,
        tenant: TenantId,
        placement: Placement,
        left_pool: Instant,
    ) {
        let entry = Kept {
            conn,
            tenant,
            placement,
            left_pool,
        };
        let lot = &self.lot;
        let pool_can_serve = || lot.pool.num_idle() > 0 || lot.pool.size() < lot.max_connections;
        // A transaction sqlx still counts as open (a leaked nested one)
        // is for the full reset to judge (it closes the connection).
        let in_transaction = PgTransactionManager::get_transaction_depth(&entry.conn) != 0;
        let keepable = lot.max_kept > 0
            && !in_transaction
            && left_pool.elapsed() < lot.window
            && !lot.pool.is_closed()
            && pool_can_serve()
            && tokio::runtime::Handle::try_current().is_ok();
        if !keepable {
            hand_back(entry);
            return;
        }
        let overflow = {
            let mut kept = lot.lock();
            kept.push_back(entry);
            if kept.len() > lot.max_kept {
                kept.pop_front()
            } else {
                None
            }
        };
        if let Some(oldest) = overflow {
            hand_back(oldest);
        }
        self.start_sweeper();
    }

    /// Hands the oldest kept connection back when the pool has nothing to
    /// hand out (called before a scoped checkout waits for the pool).
    pub(crate) fn make_room(&self) {
        let lot = &self.lot;
        if lot.pool.num_idle() > 0 || lot.pool.size() < lot.max_connections {
            return;
        }
        let oldest = lot.lock().pop_front();
        if let Some(oldest) = oldest {
            hand_back(oldest);
        }
    }

    /// Hands back every connection kept for `tenant` (a deletion starts).
    pub(crate) fn release_tenant(&self, tenant: TenantId) {
        let taken: Vec<Kept> = {
            let mut kept = self.lot.lock();
            let (theirs, others): (VecDeque<Kept>, VecDeque<Kept>) =
                kept.drain(..).partition(|k| k.tenant == tenant);
            *kept = others;
            theirs.into()
        };
        taken.into_iter().for_each(hand_back);
    }

    /// How many connections are kept.
    pub(crate) fn len(&self) -> usize {
        self.lot.lock().len()
    }

    /// Hands back every kept connection; returns how many.
    pub(crate) fn release_all(&self) -> usize {
        let taken: Vec<Kept> = self.lot.lock().drain(..).collect();
        let n = taken.len();
        taken.into_iter().for_each(hand_back);
        n
    }

    /// Starts the task that hands back what outlived the window (once per
    /// lot and runtime; it ends with the lot or the runtime).
    fn start_sweeper(&self) {
        if self.lot.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.lot.sweeping.store(false, Ordering::Release);
            return;
        };
        let lot: Weak<Lot> = Arc::downgrade(&self.lot);
        let period = (self.lot.window / 4).max(Duration::from_millis(10));
        runtime.spawn(async move {
            // Cleared however the task ends (the runtime shutting down
            // drops it), so a later `keep` starts another.
            let _running = SweeperRunning(lot.clone());
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(lot) = lot.upgrade() else { return };
                lot.sweep();
            }
        });
    }
}

impl Lot {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Kept>> {
        // Nothing panics while holding it; a poisoned list is still a list.
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands back what outlived the window, or everything once the pool
    /// is closing (so that `close` does not wait for the window).
    fn sweep(&self) {
        let closing = self.pool.is_closed();
        let expired: Vec<Kept> = {
            let mut kept = self.lock();
            let (out, stay): (VecDeque<Kept>, VecDeque<Kept>) = kept
                .drain(..)
                .partition(|k| closing || k.left_pool.elapsed() >= self.window);
            *kept = stay;
            out.into()
        };
        expired.into_iter().for_each(hand_back);
    }
}

impl Drop for Lot {
    fn drop(&mut self) {
        let kept: Vec<Kept> = self.lock().drain(..).collect();
        if tokio::runtime::Handle::try_current().is_ok() {
            kept.into_iter().for_each(hand_back);
        } else {
            // Outside a runtime sqlx cannot return (or close) a pooled
            // connection; detached, it just closes its socket — and the
            // server ends the session, with everything on it.
            for k in kept {
                drop(k.conn.detach());
            }
        }
    }
}

struct SweeperRunning(Weak<Lot>);

impl Drop for SweeperRunning {
    fn drop(&mut self) {
        if let Some(lot) = self.0.upgrade() {
            lot.sweeping.store(false, Ordering::Release);
        }
    }
}

/// Returns a kept connection to its pool: through the full reset, with
/// sqlx's caches emptied first if it served a schema tenant.
fn hand_back(kept: Kept) {
    if matches!(kept.placement, Placement::Schema { .. }) {
        super::conn::release_with_caches_emptied(kept.conn);
    } else {
        drop(kept.conn);
    }
}
