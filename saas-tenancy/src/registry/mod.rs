//! Per-tenant pools under one connection budget, for any sqlx database.

mod heat;
mod placements;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use saas_core::TenantId;
use sqlx::{Database, Pool};
use tokio::sync::{Mutex, Notify};

use self::heat::Heat;
pub(crate) use self::placements::PoolPlacements;
use crate::error::TenancyError;
use crate::observe;
use crate::placement::Placement;

/// Limits of the [`PoolRegistry`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoolLimits {
    /// Connections all tenant-database pools may hold together.
    pub budget: u32,
    /// Connections one tenant's pool may hold.
    pub per_tenant: u32,
    /// How long a caller waits for budget before [`TenancyError::Timeout`].
    pub acquire_timeout: Duration,
    /// Pools unused this long are closed when budget is needed or on
    /// [`PoolRegistry::evict_idle`].
    pub idle_pool_timeout: Duration,
    /// With the budget full, a tenant served without a pool of its own
    /// ([`PoolRegistry::try_lease`]) gets one only once it is this busy
    /// (default 8): its uses counted with each halving every
    /// [`PoolLimits::heat_half_life`] — at a steady rate, about 1.44 × its
    /// uses per half-life, so 8 is reached at about 5.5 uses a second.
    pub promote_after: u32,
    /// How fast a tenant's busyness fades (default 1 s): its count of uses
    /// halves every half-life.
    pub heat_half_life: Duration,
    /// A pool must have been unused this long before a busier tenant's
    /// may replace it (default 1 s), so two tenants cannot take a slot from
    /// each other request after request.
    pub min_pool_idle: Duration,
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            budget: 50,
            per_tenant: 5,
            acquire_timeout: Duration::from_secs(5),
            idle_pool_timeout: Duration::from_secs(300),
            promote_after: 8,
            heat_half_life: Duration::from_secs(1),
            min_pool_idle: Duration::from_secs(1),
        }
    }
}

impl PoolLimits {
    /// `budget` connections in all, at most `per_tenant` for one tenant.
    pub fn new(budget: u32, per_tenant: u32) -> Self {
        Self {
            budget,
            per_tenant,
            ..Self::default()
        }
    }

    /// How long a caller waits for budget.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// How long an unused pool is kept.
    pub fn with_idle_pool_timeout(mut self, timeout: Duration) -> Self {
        self.idle_pool_timeout = timeout;
        self
    }

    /// When, past the budget, a busy tenant's pool replaces another's:
    /// the tenant has had about `uses` uses per `half_life`, and the other
    /// pool has been unused for `min_idle` and served a tenant less than
    /// half as busy.
    pub fn with_promotion(mut self, uses: u32, half_life: Duration, min_idle: Duration) -> Self {
        self.promote_after = uses;
        self.heat_half_life = half_life;
        self.min_pool_idle = min_idle;
        self
    }
}

impl PoolLimits {
    /// A lazily connecting PostgreSQL pool sized by these limits.
    #[cfg(feature = "postgres")]
    pub fn pg_pool(&self, options: sqlx::postgres::PgConnectOptions) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(self.per_tenant)
            .min_connections(0)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(Some(self.idle_pool_timeout))
            .connect_lazy_with(options)
    }
}

/// A snapshot of the registry's gauges and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Tenant pools open now.
    pub open_pools: usize,
    /// Connections those pools hold now.
    pub connections: u32,
    /// Connections reserved: (open pools + evicted pools still closing) ×
    /// per-tenant cap; never above the budget.
    pub reserved: u32,
    /// Pools closed to make room or because they were idle.
    pub evictions: u64,
    /// Times a caller had to wait for budget.
    pub waits: u64,
    /// Times a caller gave up waiting.
    pub timeouts: u64,
    /// Times [`PoolRegistry::try_lease`] found no room and sent the
    /// caller to the shared path.
    pub fallbacks: u64,
    /// Pools that replaced an idle one for a busier tenant.
    pub promotions: u64,
}

struct Entry<DB: Database> {
    pool: Pool<DB>,
    leases: Arc<AtomicUsize>,
    last_used: Instant,
}

/// Keeps one pool per tenant database, LRU-evicting unused pools so that
/// `(open pools + closing pools) × per_tenant ≤ budget` always holds: an
/// evicted pool's room is reused only once its connections are closed
/// (closing waits for connections still on their way back). A pool in use
/// (a lease is alive) is never evicted.
pub struct PoolRegistry<DB: Database> {
    limits: PoolLimits,
    pools: Mutex<HashMap<TenantId, Entry<DB>>>,
    /// Pools taken out of `pools` whose `close()` has not returned; only
    /// raised under the `pools` lock, so a caller holding it sees them all.
    closing: Arc<AtomicU32>,
    freed: Arc<Notify>,
    evictions: AtomicU64,
    waits: AtomicU64,
    timeouts: AtomicU64,
    fallbacks: AtomicU64,
    promotions: AtomicU64,
    /// Promotions whose victim is closing: each keeps one pool's room for
    /// its tenant (raised under the `pools` lock).
    promoting: Arc<AtomicU32>,
    /// How busy each tenant has been (a short lock, never held across
    /// an await).
    heat: std::sync::Mutex<Heat>,
}

/// A tenant pool checked out of the registry; keeps it from eviction.
pub struct PoolLease<DB: Database> {
    pool: Pool<DB>,
    leases: Arc<AtomicUsize>,
    freed: Arc<Notify>,
    /// Whatever else the lease keeps (a pass through the tenant's gate).
    hold: Option<Box<dyn Send + Sync>>,
    /// The placement the pool reaches, when the lender set it.
    placement: Option<Placement>,
}

impl<DB: Database> PoolLease<DB> {
    /// The pool.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// The tenant placement this pool reaches, as the tenant's record said
    /// when the lease was granted (set by `lease_database_pool`). Work that
    /// was started against one placement — an outbox relay confirming rows
    /// it read there — checks it: after a move the same tenant's lease
    /// reaches another database, whose rows are numbered differently.
    pub fn placement(&self) -> Option<&Placement> {
        self.placement.as_ref()
    }

    /// Records the placement the pool reaches.
    pub(crate) fn at(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
    }

    /// Keeps `hold` as long as the lease.
    #[cfg(feature = "sqlite")]
    pub(crate) fn holding(mut self, hold: impl Send + Sync + 'static) -> Self {
        self.hold = Some(Box::new(hold));
        self
    }
}

impl<DB: Database> Drop for PoolLease<DB> {
    fn drop(&mut self) {
        self.leases.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_waiters();
    }
}

impl<DB: Database> std::fmt::Debug for PoolLease<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolLease")
            .field("holds", &self.hold.is_some())
            .finish_non_exhaustive()
    }
}

impl<DB: Database> std::fmt::Debug for PoolRegistry<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolRegistry")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<DB: Database> PoolRegistry<DB> {
    /// A registry with `limits`; the per-tenant cap must fit the budget.
    pub fn new(limits: PoolLimits) -> Result<Self, TenancyError> {
        if limits.per_tenant == 0 || limits.per_tenant > limits.budget {
            return Err(TenancyError::InvalidInput(format!(
                "per-tenant pool size {} must be between 1 and the budget {}",
                limits.per_tenant, limits.budget
            )));
        }
        Ok(Self {
            pools: Mutex::new(HashMap::new()),
            closing: Arc::new(AtomicU32::new(0)),
            freed: Arc::new(Notify::new()),
            evictions: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            promotions: AtomicU64::new(0),
            promoting: Arc::new(AtomicU32::new(0)),
            heat: std::sync::Mutex::new(Heat::new(limits.heat_half_life)),
            limits: {
                observe::budget(limits.budget, true);
                limits
            },
        })
    }

    /// The limits (open pools with at most `per_tenant` connections).
    pub fn limits(&self) -> &PoolLimits {
        &self.limits
    }

    /// The pool for `tenant`, opening it with `open` if needed (which must
    /// connect lazily and hold at most [`PoolLimits::per_tenant`]
    /// connections); waits up to the acquire timeout for budget.
    pub async fn lease(
        &self,
        tenant: TenantId,
        open: impl FnOnce(&PoolLimits) -> Pool<DB>,
    ) -> Result<PoolLease<DB>, TenancyError> {
        let deadline = Instant::now() + self.limits.acquire_timeout;
        self.touch(tenant, Instant::now());
        let mut open = Some(open);
        let mut waited: Option<Instant> = None;
        loop {
            // Register interest before checking, so a release in between
            // is not missed.
            let freed = self.freed.notified();
            let victim = {
                let mut pools = self.pools.lock().await;
                if let Some(entry) = pools.get_mut(&tenant) {
                    entry.last_used = Instant::now();
                    Self::note_wait(waited, false);
                    return Ok(self.lease_of(entry));
                }
                if self.reserved(pools.len()) + self.limits.per_tenant <= self.limits.budget {
                    let open = open.take().ok_or_else(|| {
                        TenancyError::InvalidInput("pool opener already used".to_owned())
                    })?;
                    Self::note_wait(waited, false);
                    return Ok(self.open_entry(&mut pools, tenant, open, Instant::now()));
                }
                // Least recently used pool that nobody holds.
                let victim = pools
                    .iter()
                    .filter(|(_, e)| e.leases.load(Ordering::Acquire) == 0)
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(id, _)| *id);
                victim.and_then(|id| self.take(&mut pools, id))
            };
            if let Some(entry) = victim {
                self.evictions.fetch_add(1, Ordering::Relaxed);
                observe::evicted(1);
                self.close_taken([entry]).await;
                continue;
            }
            if waited.is_none() {
                waited = Some(Instant::now());
                self.waits.fetch_add(1, Ordering::Relaxed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, freed).await.is_err() {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                Self::note_wait(waited, true);
                return Err(TenancyError::Timeout(format!(
                    "all {} tenant-database connections are in use; raise the budget or retry",
                    self.limits.budget
                )));
            }
        }
    }

    /// The pool for `tenant` if it has one or one fits the budget — for a
    /// tenant that can also be served without a pool of its own (on a
    /// shared connection): `None` sends it there instead of evicting or
    /// waiting, so a budget smaller than the set of active tenants costs
    /// the shared path's price rather than a connect per request.
    ///
    /// Past the budget, a tenant gets a pool only when it has become busy
    /// ([`PoolLimits::promote_after`]) and a pool has been unused for
    /// [`PoolLimits::min_pool_idle`] whose tenant is less than half as
    /// busy: that pool is closed (this call waits for it; it was idle)
    /// and the busy tenant's opened, its room kept for it meanwhile. One
    /// replacement at a time, and none while any pool is still closing
    /// (evicted, idle, or a deleted tenant's).
    ///
    /// # Errors
    /// None today (no waits, so no timeouts); the `Result` leaves room for
    /// a failing opener.
    pub async fn try_lease(
        &self,
        tenant: TenantId,
        open: impl FnOnce(&PoolLimits) -> Pool<DB>,
    ) -> Result<Option<PoolLease<DB>>, TenancyError> {
        let victim = {
            let mut pools = self.pools.lock().await;
            let now = Instant::now();
            let heat = self.touch(tenant, now);
            if let Some(entry) = pools.get_mut(&tenant) {
                entry.last_used = now;
                return Ok(Some(self.lease_of(entry)));
            }
            if self.reserved(pools.len()) + self.limits.per_tenant <= self.limits.budget {
                return Ok(Some(self.open_entry(&mut pools, tenant, open, now)));
            }
            let idle = self.closing.load(Ordering::Acquire) == 0
                && self.promoting.load(Ordering::Acquire) == 0;
            match self.promotion_victim(&pools, heat, now) {
                Some(victim) if idle => {
                    // The victim's room is kept for this tenant while the
                    // victim closes, so nobody else takes it meanwhile.
                    let promotion = Promotion::reserve(&self.promoting);
                    self.take(&mut pools, victim)
                        .map(|entry| (entry, promotion))
                }
                _ => None,
            }
        };
        let Some((victim, promotion)) = victim else {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            observe::fell_back();
            return Ok(None);
        };
        self.evictions.fetch_add(1, Ordering::Relaxed);
        observe::evicted(1);
        self.close_taken([victim]).await;
        let mut pools = self.pools.lock().await;
        // The reserved room becomes the tenant's pool, under the lock.
        drop(promotion);
        let now = Instant::now();
        if let Some(entry) = pools.get_mut(&tenant) {
            entry.last_used = now;
            return Ok(Some(self.lease_of(entry)));
        }
        if self.reserved(pools.len()) + self.limits.per_tenant <= self.limits.budget {
            self.promotions.fetch_add(1, Ordering::Relaxed);
            observe::promoted();
            return Ok(Some(self.open_entry(&mut pools, tenant, open, now)));
        }
        // Unreachable while every opener counts `promoting` in
        // `reserved`; a guard all the same: never open past the budget.
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        observe::fell_back();
        Ok(None)
    }

    /// Records a wait for budget that began at `since` (if it did).
    fn note_wait(since: Option<Instant>, timed_out: bool) {
        if let Some(since) = since {
            observe::waited(since.elapsed(), timed_out);
        }
    }

    /// Counts a use of `tenant`; its heat.
    fn touch(&self, tenant: TenantId, now: Instant) -> f64 {
        self.heats().touch(tenant, now)
    }

    /// The heat counts; after a panic while counting, forgotten (not the
    /// pools) and the lock usable again.
    fn heats(&self) -> std::sync::MutexGuard<'_, Heat> {
        match self.heat.lock() {
            Ok(heat) => heat,
            Err(poisoned) => {
                self.heat.clear_poison();
                let mut heat = poisoned.into_inner();
                *heat = Heat::new(self.limits.heat_half_life);
                heat
            }
        }
    }

    /// The pool a tenant as busy as `heat` may replace: unused for the
    /// minimum idle time, its own tenant less than half as busy — the
    /// coldest such.
    fn promotion_victim(
        &self,
        pools: &HashMap<TenantId, Entry<DB>>,
        heat: f64,
        now: Instant,
    ) -> Option<TenantId> {
        if heat < f64::from(self.limits.promote_after) {
            return None;
        }
        let heats = self.heats();
        pools
            .iter()
            .filter(|(_, e)| {
                e.leases.load(Ordering::Acquire) == 0
                    && now.saturating_duration_since(e.last_used) >= self.limits.min_pool_idle
            })
            .map(|(id, _)| (*id, heats.of(*id, now)))
            .filter(|(_, other)| other * 2.0 < heat)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(id, _)| id)
    }

    /// Opens `tenant`'s pool (room was checked) and leases it.
    fn open_entry(
        &self,
        pools: &mut HashMap<TenantId, Entry<DB>>,
        tenant: TenantId,
        open: impl FnOnce(&PoolLimits) -> Pool<DB>,
        now: Instant,
    ) -> PoolLease<DB> {
        let entry = pools.entry(tenant).or_insert_with(|| {
            observe::pool_opened(self.limits.per_tenant);
            Entry {
                pool: open(&self.limits),
                leases: Arc::new(AtomicUsize::new(0)),
                last_used: now,
            }
        });
        self.lease_of(entry)
    }

    /// Connections reserved by `open` pools, by pools still closing and
    /// by promotions (each keeps its victim's room from the moment it is
    /// taken until the promoted pool opens, overlapping the victim's own
    /// count while it closes): what a new pool must fit beside.
    fn reserved(&self, open: usize) -> u32 {
        self.held(open) + self.promoting.load(Ordering::Acquire) * self.limits.per_tenant
    }

    /// Connections open and closing pools may hold.
    fn held(&self, open: usize) -> u32 {
        (open as u32 + self.closing.load(Ordering::Acquire)) * self.limits.per_tenant
    }

    /// Takes `tenant`'s pool out of the map, still counted until
    /// [`close_taken`](Self::close_taken) has closed it. Call with the lock held.
    fn take(
        &self,
        pools: &mut HashMap<TenantId, Entry<DB>>,
        tenant: TenantId,
    ) -> Option<Entry<DB>> {
        let entry = pools.remove(&tenant)?;
        self.closing.fetch_add(1, Ordering::AcqRel);
        observe::pool_taken();
        Some(entry)
    }

    /// Closes pools taken out of the map, then gives their room back. The
    /// closing runs in its own task, so that a caller cancelled while
    /// waiting for it neither leaves a pool half-closed nor keeps its room
    /// reserved for ever.
    async fn close_taken(&self, entries: impl IntoIterator<Item = Entry<DB>>) {
        let tasks: Vec<_> = entries
            .into_iter()
            .map(|entry| self.spawn_close(entry))
            .collect();
        for task in tasks {
            // A close that panicked keeps its room reserved: the budget
            // shrinks rather than being exceeded.
            let _ = task.await;
        }
    }

    /// Closes a pool taken out of the map in a task of its own, then
    /// gives its room back.
    fn spawn_close(&self, entry: Entry<DB>) -> tokio::task::JoinHandle<()> {
        let closing = Arc::clone(&self.closing);
        let freed = Arc::clone(&self.freed);
        let per_tenant = self.limits.per_tenant;
        tokio::spawn(async move {
            entry.pool.close().await;
            observe::pool_closed(per_tenant);
            closing.fetch_sub(1, Ordering::AcqRel);
            freed.notify_waiters();
        })
    }

    fn lease_of(&self, entry: &Entry<DB>) -> PoolLease<DB> {
        entry.leases.fetch_add(1, Ordering::AcqRel);
        PoolLease {
            pool: entry.pool.clone(),
            leases: Arc::clone(&entry.leases),
            freed: Arc::clone(&self.freed),
            hold: None,
            placement: None,
        }
    }

    /// Closes pools unused for longer than the idle timeout.
    pub async fn evict_idle(&self) -> usize {
        let idle: Vec<Entry<DB>> = {
            let mut pools = self.pools.lock().await;
            let limit = self.limits.idle_pool_timeout;
            let ids: Vec<TenantId> = pools
                .iter()
                .filter(|(_, e)| {
                    e.leases.load(Ordering::Acquire) == 0 && e.last_used.elapsed() >= limit
                })
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| self.take(&mut pools, id))
                .collect()
        };
        let closed = idle.len();
        self.evictions.fetch_add(closed as u64, Ordering::Relaxed);
        observe::evicted(closed);
        self.close_taken(idle).await;
        closed
    }

    /// Closes `tenant`'s pool (before dropping its database): waits until
    /// every connection checked out of it has come back.
    pub async fn close(&self, tenant: TenantId) {
        let entry = {
            let mut pools = self.pools.lock().await;
            self.take(&mut pools, tenant)
        };
        self.close_taken(entry).await;
    }

    /// Closes `tenant`'s pool — it hands out no more connections — and
    /// waits up to `limit` for the connections checked out of it to come
    /// back; `true` when they all did (or there was no pool). Otherwise the
    /// closing goes on in the background, its room in the budget reserved
    /// until the last connection is back.
    pub async fn close_within(&self, tenant: TenantId, limit: Duration) -> bool {
        let entry = {
            let mut pools = self.pools.lock().await;
            self.take(&mut pools, tenant)
        };
        let Some(entry) = entry else {
            return true;
        };
        let task = self.spawn_close(entry);
        matches!(tokio::time::timeout(limit, task).await, Ok(Ok(())))
    }

    /// Gauges and counters.
    pub async fn stats(&self) -> PoolStats {
        let pools = self.pools.lock().await;
        PoolStats {
            open_pools: pools.len(),
            connections: pools.values().map(|e| e.pool.size()).sum(),
            reserved: self.held(pools.len()),
            evictions: self.evictions.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            promotions: self.promotions.load(Ordering::Relaxed),
        }
    }
}

/// A room kept for a promoting tenant while its victim closes; given back
/// when dropped — also when the caller is cancelled while waiting.
struct Promotion {
    promoting: Arc<AtomicU32>,
}

impl Promotion {
    /// Reserves one pool's room. Call with the `pools` lock held.
    fn reserve(promoting: &Arc<AtomicU32>) -> Self {
        promoting.fetch_add(1, Ordering::AcqRel);
        Promotion {
            promoting: Arc::clone(promoting),
        }
    }
}

// The process-wide gauges count this registry's budget and open pools
// (pools still closing give their room back when their close ends).
impl<DB: Database> Drop for PoolRegistry<DB> {
    fn drop(&mut self) {
        observe::budget(self.limits.budget, false);
        for _ in self.pools.get_mut().drain() {
            observe::pool_taken();
            observe::pool_closed(self.limits.per_tenant);
        }
    }
}

impl Drop for Promotion {
    fn drop(&mut self) {
        self.promoting.fetch_sub(1, Ordering::AcqRel);
    }
}
