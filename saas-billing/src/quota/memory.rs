//! The in-memory quota store: exact within one process only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use saas_core::{SharedClock, SystemClock, TenantId};
use uuid::Uuid;

use super::grants::grant_conflict;
use super::{
    Consumption, QuotaGrant, QuotaGrantStore, QuotaKey, QuotaStore, Reservation, ReserveOutcome,
    check_amount, expiry, give_back_too_much, reservation_not_found,
};
use crate::error::BillingError;

/// A [`QuotaStore`] in process memory, for tests and single-process hosts.
/// Counts are lost on restart and not shared between processes; use
/// `PgQuotaStore` (feature `postgres`) or `RedisQuotaStore`
/// (feature `redis`) for several servers.
#[derive(Debug, Clone)]
pub struct InMemoryQuotaStore {
    inner: Arc<Mutex<State>>,
    clock: SharedClock,
}

#[derive(Debug, Default)]
struct State {
    used: HashMap<QuotaKey, u64>,
    reservations: HashMap<Uuid, Reservation>,
    grants: HashMap<Uuid, QuotaGrant>,
}

impl Default for InMemoryQuotaStore {
    fn default() -> Self {
        InMemoryQuotaStore::new()
    }
}

impl InMemoryQuotaStore {
    /// An empty store on the system clock.
    pub fn new() -> InMemoryQuotaStore {
        InMemoryQuotaStore::with_clock(Arc::new(SystemClock))
    }

    /// An empty store whose reservations expire by `clock`.
    pub fn with_clock(clock: SharedClock) -> InMemoryQuotaStore {
        InMemoryQuotaStore {
            inner: Arc::new(Mutex::new(State::default())),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent maps (every
        // update is a single insert), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops the key's expired reservations, giving their units back.
    fn reclaim(&self, state: &mut State, key: &QuotaKey) {
        let now = self.clock.now();
        let expired: Vec<Uuid> = state
            .reservations
            .values()
            .filter(|r| &r.key == key && r.expires_at <= now)
            .map(|r| r.id)
            .collect();
        for id in expired {
            if let Some(r) = state.reservations.remove(&id)
                && let Some(used) = state.used.get_mut(&r.key)
            {
                *used = used.saturating_sub(r.amount);
            }
        }
    }

    /// Adds `amount` if it fits; the remaining amount either way.
    fn add(state: &mut State, key: &QuotaKey, amount: u64, limit: u64) -> (bool, u64) {
        let used = state.used.get(key).copied().unwrap_or(0);
        let fits = used.checked_add(amount).is_some_and(|sum| sum <= limit);
        if fits {
            let sum = used + amount;
            state.used.insert(key.clone(), sum);
            (true, limit - sum)
        } else {
            (false, limit.saturating_sub(used))
        }
    }
}

#[async_trait]
impl QuotaStore for InMemoryQuotaStore {
    async fn try_consume(
        &self,
        key: &QuotaKey,
        amount: u64,
        limit: u64,
    ) -> Result<Consumption, BillingError> {
        check_amount("quota amount", amount)?;
        check_amount("quota limit", limit)?;
        let mut state = self.lock();
        self.reclaim(&mut state, key);
        Ok(match Self::add(&mut state, key, amount, limit) {
            (true, remaining) => Consumption::Granted { remaining },
            (false, remaining) => Consumption::Denied { remaining },
        })
    }

    async fn reserve(
        &self,
        key: &QuotaKey,
        amount: u64,
        limit: u64,
        ttl: Duration,
    ) -> Result<ReserveOutcome, BillingError> {
        check_amount("quota amount", amount)?;
        check_amount("quota limit", limit)?;
        let expires_at = expiry(self.clock.now(), ttl)?;
        let mut state = self.lock();
        self.reclaim(&mut state, key);
        Ok(match Self::add(&mut state, key, amount, limit) {
            (true, _) => {
                let reservation = Reservation {
                    id: Uuid::new_v4(),
                    key: key.clone(),
                    amount,
                    expires_at,
                };
                state
                    .reservations
                    .insert(reservation.id, reservation.clone());
                ReserveOutcome::Reserved(reservation)
            }
            (false, remaining) => ReserveOutcome::Denied { remaining },
        })
    }

    async fn commit(&self, reservation: &Reservation) -> Result<(), BillingError> {
        let mut state = self.lock();
        self.reclaim(&mut state, &reservation.key);
        match state.reservations.get(&reservation.id) {
            Some(held) if held.key == reservation.key => {
                state.reservations.remove(&reservation.id);
                Ok(())
            }
            _ => Err(reservation_not_found(reservation)),
        }
    }

    async fn release(&self, reservation: &Reservation) -> Result<(), BillingError> {
        let mut state = self.lock();
        if state
            .reservations
            .get(&reservation.id)
            .is_some_and(|held| held.key == reservation.key)
            && let Some(held) = state.reservations.remove(&reservation.id)
            && let Some(used) = state.used.get_mut(&held.key)
        {
            *used = used.saturating_sub(held.amount);
        }
        Ok(())
    }

    async fn give_back(&self, key: &QuotaKey, amount: u64) -> Result<(), BillingError> {
        check_amount("give_back amount", amount)?;
        let mut state = self.lock();
        self.reclaim(&mut state, key);
        let reserved: u64 = state
            .reservations
            .values()
            .filter(|r| &r.key == key)
            .map(|r| r.amount)
            .sum();
        let used = state.used.get(key).copied().unwrap_or(0);
        if used.saturating_sub(reserved) < amount {
            return Err(give_back_too_much(key, amount));
        }
        state.used.insert(key.clone(), used - amount);
        Ok(())
    }

    async fn used(&self, key: &QuotaKey) -> Result<u64, BillingError> {
        let mut state = self.lock();
        self.reclaim(&mut state, key);
        Ok(state.used.get(key).copied().unwrap_or(0))
    }
}

#[async_trait]
impl QuotaGrantStore for InMemoryQuotaStore {
    async fn add_grant(&self, grant: &QuotaGrant) -> Result<(), BillingError> {
        let mut state = self.lock();
        match state.grants.get(&grant.id()) {
            Some(held) if held == grant => Ok(()),
            Some(_) => Err(grant_conflict(grant)),
            None => {
                state.grants.insert(grant.id(), grant.clone());
                Ok(())
            }
        }
    }

    async fn grants(&self, tenant: TenantId, name: &str) -> Result<Vec<QuotaGrant>, BillingError> {
        let state = self.lock();
        Ok(state
            .grants
            .values()
            .filter(|g| g.tenant() == tenant && g.name() == name)
            .cloned()
            .collect())
    }
}
