//! Leases: a process spends a block of a quota locally, for hot paths.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Consumption, QuotaKey, QuotaStore, check_amount};
use crate::error::BillingError;

/// A block of one quota counter held by this process and spent locally, so
/// most grants cost an atomic decrement instead of a call to the store.
///
/// How it works:
/// - The first grant (and each one the local block cannot cover) tops
///   the block up to `lease` units (or to the request, if larger) from
///   the store with one durable [`QuotaStore::try_consume`]. When less
///   than that is left under the limit, it takes everything that is left
///   if that covers the request, so the last units are granted too. One
///   block is taken at a time per `LeasedQuota`; racing callers wait.
/// - Grants from the block are a lock-free atomic decrement.
/// - [`release`](LeasedQuota::release) gives the unspent remainder back
///   ([`QuotaStore::give_back`]); call it on shutdown and before dropping.
///
/// Guarantees, across every process and lease on the same store and key:
/// - **Never over the limit**: a unit is granted locally only after the
///   store granted it, so the units granted in all are at most the limit.
/// - **Under-grant bounded by the lease**: the units taken but not yet
///   granted ([`unspent`](LeasedQuota::unspent)) are at most
///   max(lease, largest request) per `LeasedQuota`. A process that crashes, or a
///   `LeasedQuota` dropped without `release`, loses only that: the units
///   stay counted as used until the counter's period ends. After every
///   `LeasedQuota` is released, the store's used amount equals the units
///   granted.
/// - A denial means this process's block and the store together hold
///   less than the request; another process's unspent block may still
///   hold units (at most its lease).
///
/// A lease is per [`QuotaKey`]: a new period is a new key, so make a new
/// `LeasedQuota` for it (and release the old one).
///
/// The limit is fixed for the lease's life; a plan change takes effect
/// with a new `LeasedQuota` (units already taken stay granted).
///
/// ```
/// use std::sync::Arc;
/// use saas_billing::quota::{InMemoryQuotaStore, LeasedQuota, QuotaKey, QuotaStore};
/// use saas_billing::TenantId;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store: Arc<dyn QuotaStore> = Arc::new(InMemoryQuotaStore::new());
/// let key = QuotaKey::new(TenantId::new(), "api_calls", "2026-12")?;
/// // A limit of 1,000, taken 100 at a time.
/// let calls = LeasedQuota::new(store.clone(), key.clone(), 1_000, 100)?;
/// assert!(calls.try_consume(1).await?);
/// assert_eq!(store.used(&key).await?, 100); // one block taken
/// assert_eq!(calls.unspent(), 99);
/// assert_eq!(calls.release().await?, 99); // on shutdown
/// assert_eq!(store.used(&key).await?, 1);
/// # Ok::<(), saas_billing::BillingError>(())
/// # }).unwrap();
/// ```
pub struct LeasedQuota {
    store: Arc<dyn QuotaStore>,
    key: QuotaKey,
    limit: u64,
    lease: u64,
    /// Units taken from the store and neither granted nor given back.
    unspent: AtomicU64,
    /// Held while taking a block or giving back, so there is one block at
    /// a time (what bounds the under-grant).
    refill: async_lock::Mutex<()>,
}

impl fmt::Debug for LeasedQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeasedQuota")
            .field("store", &self.store)
            .field("key", &self.key)
            .field("limit", &self.limit)
            .field("lease", &self.lease)
            .field("unspent", &self.unspent())
            .finish_non_exhaustive()
    }
}

impl LeasedQuota {
    /// Grants of `key` against `limit` from `store`, taken `lease` units at
    /// a time. Nothing is taken until the first grant.
    ///
    /// # Errors
    /// `InvalidInput` if `lease` is zero, or `lease` or `limit` exceeds
    /// [`MAX_QUOTA_AMOUNT`](super::MAX_QUOTA_AMOUNT).
    pub fn new(
        store: Arc<dyn QuotaStore>,
        key: QuotaKey,
        limit: u64,
        lease: u64,
    ) -> Result<LeasedQuota, BillingError> {
        check_amount("quota limit", limit)?;
        check_amount("quota lease", lease)?;
        if lease == 0 {
            return Err(BillingError::InvalidInput {
                field: "quota lease",
                reason: "is 0; take at least 1 unit at a time (1 makes every grant durable)".into(),
            });
        }
        Ok(LeasedQuota {
            store,
            key,
            limit,
            lease,
            unspent: AtomicU64::new(0),
            refill: async_lock::Mutex::new(()),
        })
    }

    /// Grants `amount` units if they fit under the limit: from the local
    /// block when it holds enough, else after taking a block from the
    /// store. `false` (nothing granted) when this block and what is left
    /// in the store together hold less than `amount`. An amount of 0 is
    /// always granted.
    ///
    /// Cancelling the call while it takes a block may lose that block
    /// (under-grant, never over-grant).
    ///
    /// # Errors
    /// `InvalidInput` if `amount` exceeds
    /// [`MAX_QUOTA_AMOUNT`](super::MAX_QUOTA_AMOUNT); the store's errors
    /// (nothing was granted: deny, or retry).
    pub async fn try_consume(&self, amount: u64) -> Result<bool, BillingError> {
        if self.take_local(amount) {
            return Ok(true);
        }
        check_amount("quota amount", amount)?;
        let _refill = self.refill.lock().await;
        loop {
            // Another caller may have taken a block while this one waited.
            if self.take_local(amount) {
                return Ok(true);
            }
            // Only the holder of `refill` adds units, so `held` can only
            // shrink: `need` is at least what is missing now, and topping
            // up to a lease keeps the unspent units at most
            // max(lease, amount).
            let held = self.unspent.load(Ordering::Acquire);
            let need = amount.saturating_sub(held);
            let block = need.max(self.lease.saturating_sub(held));
            match self.store.try_consume(&self.key, block, self.limit).await? {
                Consumption::Granted { .. } => {
                    self.unspent.fetch_add(block, Ordering::AcqRel);
                }
                // Less than a lease is left: take all of it, if that is enough.
                Consumption::Denied { remaining } if remaining >= need && remaining > 0 => {
                    if self
                        .store
                        .try_consume(&self.key, remaining, self.limit)
                        .await?
                        .is_granted()
                    {
                        self.unspent.fetch_add(remaining, Ordering::AcqRel);
                    }
                    // Else another process took some meanwhile: look again.
                }
                Consumption::Denied { .. } => return Ok(false),
            }
        }
    }

    /// Gives the unspent units of the current block back to the store;
    /// how many. Grants after this take a new block.
    ///
    /// # Errors
    /// The store's errors; the units then stay in this lease (call again).
    pub async fn release(&self) -> Result<u64, BillingError> {
        let _refill = self.refill.lock().await;
        let unspent = self.unspent.swap(0, Ordering::AcqRel);
        if unspent > 0
            && let Err(error) = self.store.give_back(&self.key, unspent).await
        {
            self.unspent.fetch_add(unspent, Ordering::AcqRel);
            return Err(error);
        }
        Ok(unspent)
    }

    /// Units taken from the store and not yet granted: what a crash now
    /// would leave counted as used without having been granted.
    pub fn unspent(&self) -> u64 {
        self.unspent.load(Ordering::Acquire)
    }

    /// The counter.
    pub fn key(&self) -> &QuotaKey {
        &self.key
    }

    /// The limit grants are checked against.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The units taken from the store at a time.
    pub fn lease(&self) -> u64 {
        self.lease
    }

    /// Takes `amount` from the local block if it holds that much.
    fn take_local(&self, amount: u64) -> bool {
        self.unspent
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_sub(amount)
            })
            .is_ok()
    }
}
