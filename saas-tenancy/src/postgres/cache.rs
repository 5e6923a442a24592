//! A short-lived cache of catalog records, read through the injected clock.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};
use saas_core::{SharedClock, TenantId};

use crate::record::TenantRecord;

pub(super) struct RecordCache {
    ttl: Duration,
    clock: SharedClock,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    records: HashMap<TenantId, (TenantRecord, DateTime<Utc>)>,
    /// Tenants being deleted by this process: never served from the cache
    /// (nor cached) until the deletion ends, so every request reads the
    /// catalog and sees `deleting` as soon as it is written.
    fenced: HashSet<TenantId>,
}

impl RecordCache {
    pub(super) fn new(ttl: Duration, clock: SharedClock) -> Self {
        Self {
            ttl,
            clock,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn get(&self, id: TenantId) -> Option<TenantRecord> {
        if self.ttl.is_zero() {
            return None;
        }
        let now = self.clock.now();
        let state = self.state();
        if state.fenced.contains(&id) {
            return None;
        }
        state
            .records
            .get(&id)
            .filter(|(_, fetched)| now < *fetched + self.ttl && now >= *fetched)
            .map(|(record, _)| record.clone())
    }

    pub(super) fn put(&self, record: TenantRecord) {
        if self.ttl.is_zero() {
            return;
        }
        let now = self.clock.now();
        let mut state = self.state();
        if state.fenced.contains(&record.id) {
            return;
        }
        // Bounded: stale entries are dropped when the map grows large.
        if state.records.len() >= 10_000 {
            state
                .records
                .retain(|_, (_, fetched)| now < *fetched + self.ttl);
        }
        state.records.insert(record.id, (record, now));
    }

    pub(super) fn forget(&self, id: TenantId) {
        self.state().records.remove(&id);
    }

    /// Drops every cached record (after missing notifications).
    pub(super) fn clear(&self) {
        self.state().records.clear();
    }

    /// Drops `id`'s record and keeps it out of the cache until
    /// [`unfence`](Self::unfence).
    pub(super) fn fence(&self, id: TenantId) {
        let mut state = self.state();
        state.records.remove(&id);
        state.fenced.insert(id);
    }

    /// Lets `id`'s record be cached again.
    pub(super) fn unfence(&self, id: TenantId) {
        self.state().fenced.remove(&id);
    }
}
