//! A short-lived cache of catalog records, read through the injected clock.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};
use saas_core::{SharedClock, TenantId};

use crate::record::TenantRecord;

pub(super) struct RecordCache {
    ttl: Duration,
    clock: SharedClock,
    records: Mutex<HashMap<TenantId, (TenantRecord, DateTime<Utc>)>>,
}

impl RecordCache {
    pub(super) fn new(ttl: Duration, clock: SharedClock) -> Self {
        Self {
            ttl,
            clock,
            records: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn get(&self, id: TenantId) -> Option<TenantRecord> {
        if self.ttl.is_zero() {
            return None;
        }
        let now = self.clock.now();
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        records
            .get(&id)
            .filter(|(_, fetched)| now < *fetched + self.ttl && now >= *fetched)
            .map(|(record, _)| record.clone())
    }

    pub(super) fn put(&self, record: TenantRecord) {
        if self.ttl.is_zero() {
            return;
        }
        let now = self.clock.now();
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        // Bounded: stale entries are dropped when the map grows large.
        if records.len() >= 10_000 {
            records.retain(|_, (_, fetched)| now < *fetched + self.ttl);
        }
        records.insert(record.id, (record, now));
    }

    pub(super) fn forget(&self, id: TenantId) {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}
