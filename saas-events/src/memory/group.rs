//! One consumer group's queue: pending events, deliveries in flight, and
//! the per-key ordering rule.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use saas_core::TenantId;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::envelope::Event;
use crate::partition::key_hash;
use crate::receipt::{CopyGuard, Tracker};

/// Hashes `u64`s that are sequence numbers or key hashes: one multiply
/// instead of SipHash on the per-event path.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Spread sequential values over the high bits the table probes with.
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type U64Build = BuildHasherDefault<U64Hasher>;

/// An event waiting in, or handed out by, a group.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) seq: u64,
    pub(super) event: Arc<Event>,
    key: Option<u64>,
    pub(super) attempts: u32,
    not_before: Option<Instant>,
    /// Tracked publications waiting for this entry's acknowledgement
    /// (empty for plain publishes).
    copies: Vec<CopyGuard>,
}

impl Entry {
    pub(super) fn new(seq: u64, event: Arc<Event>, ordered: bool) -> Self {
        // Keys are compared by hash: two keys sharing one only wait for each
        // other (order is kept for both), costing parallelism, never order.
        let key = if ordered { key_hash(&event) } else { None };
        Self {
            seq,
            event,
            key,
            attempts: 0,
            not_before: None,
            copies: Vec::new(),
        }
    }
}

/// What [`GroupState::take`] found.
#[derive(Debug)]
pub(super) enum Take {
    /// An event to hand out (already moved in flight).
    Ready {
        seq: u64,
        event: Arc<Event>,
        attempt: u32,
    },
    /// Nothing ready; the earliest delayed entry becomes ready then.
    WaitUntil(Instant),
    /// Nothing to hand out.
    Empty,
}

#[derive(Debug, Default)]
pub(super) struct GroupState {
    /// Waiting events, in publish (sequence) order.
    pending: VecDeque<Entry>,
    in_flight: HashMap<u64, Entry, U64Build>,
    busy_keys: HashSet<u64, U64Build>,
    /// Event id → sequence of the entries holding tracked copies, pending
    /// or in flight: a tracked event published again while held is not
    /// queued twice.
    tracked: HashMap<String, u64>,
    pub(super) closed: bool,
    pub(super) consumers: usize,
}

impl GroupState {
    pub(super) fn push(&mut self, entry: Entry) {
        self.pending.push_back(entry);
    }

    /// Queues `entry` for a tracked publication, or, if this group already
    /// holds the same event from an earlier one, makes that entry's
    /// acknowledgement count for this publication too.
    pub(super) fn push_tracked(&mut self, mut entry: Entry, tracker: &Arc<Tracker>) {
        let identity = identity(&entry.event);
        if let Some(&seq) = self.tracked.get(&identity) {
            let held = match self.in_flight.get_mut(&seq) {
                Some(held) => Some(held),
                None => {
                    let at = self.pending.partition_point(|e| e.seq < seq);
                    self.pending.get_mut(at).filter(|e| e.seq == seq)
                }
            };
            // The same event, not merely the same id: only then does the
            // held copy's acknowledgement stand for this one.
            if let Some(held) = held.filter(|held| same_event(&held.event, &entry.event)) {
                held.copies.push(tracker.copy());
                return;
            }
        }
        self.tracked.insert(identity, entry.seq);
        entry.copies.push(tracker.copy());
        self.pending.push_back(entry);
    }

    /// The bus is closing: events still waiting will never be handled, so
    /// the publications tracking them fail now rather than time out.
    pub(super) fn drop_waiting_copies(&mut self) {
        for entry in &mut self.pending {
            if !entry.copies.is_empty() {
                forget(&mut self.tracked, entry);
                entry.copies.clear();
            }
        }
    }

    /// Hands out the oldest ready entry whose partition key has nothing in
    /// flight and no older entry waiting.
    pub(super) fn take(&mut self) -> Take {
        let mut blocked: HashSet<u64, U64Build> = HashSet::default();
        let mut wake: Option<Instant> = None;
        // Read the clock only when a delayed entry is met.
        let mut now: Option<Instant> = None;
        let mut found = None;
        for (index, entry) in self.pending.iter().enumerate() {
            if let Some(key) = entry.key
                && (self.busy_keys.contains(&key) || blocked.contains(&key))
            {
                continue;
            }
            match entry.not_before {
                Some(at) if at > *now.get_or_insert_with(Instant::now) => {
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                    if let Some(key) = entry.key {
                        blocked.insert(key);
                    }
                }
                _ => {
                    found = Some(index);
                    break;
                }
            }
        }
        let Some(mut entry) = found.and_then(|i| self.pending.remove(i)) else {
            return wake.map_or(Take::Empty, Take::WaitUntil);
        };
        entry.attempts = entry.attempts.saturating_add(1);
        entry.not_before = None;
        if let Some(key) = entry.key {
            self.busy_keys.insert(key);
        }
        let taken = Take::Ready {
            seq: entry.seq,
            event: Arc::clone(&entry.event),
            attempt: entry.attempts,
        };
        self.in_flight.insert(entry.seq, entry);
        taken
    }

    /// Settles a delivery: drops it on ack, or puts it back in sequence
    /// order on nack.
    ///
    /// Returns whether this may have made an entry ready for a waiting
    /// consumer (an entry put back, or a key freed while others wait).
    pub(super) fn settle(&mut self, seq: u64, requeue: Option<Option<Instant>>) -> bool {
        let Some(mut entry) = self.in_flight.remove(&seq) else {
            return false;
        };
        let freed = entry.key.is_some_and(|key| self.busy_keys.remove(&key));
        match requeue {
            Some(not_before) => {
                entry.not_before = not_before;
                if self.closed && !entry.copies.is_empty() {
                    // A closed group hands nothing out again: the
                    // publications waiting for it fail now.
                    forget(&mut self.tracked, &entry);
                    entry.copies.clear();
                }
                let at = self.pending.partition_point(|e| e.seq < seq);
                self.pending.insert(at, entry);
                true
            }
            None => {
                if !entry.copies.is_empty() {
                    forget(&mut self.tracked, &entry);
                    for copy in entry.copies.drain(..) {
                        copy.acknowledge();
                    }
                }
                freed && !self.pending.is_empty()
            }
        }
    }

    pub(super) fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

/// What makes two tracked events the same event: tenant, source and id
/// (CloudEvents makes only source + id unique; the tenant keeps two
/// tenants' equal ids apart).
fn identity(event: &Event) -> String {
    let tenant = event.tenant_id().map(|t| t.to_string()).unwrap_or_default();
    format!("{tenant}\u{0}{}\u{0}{}", event.source(), event.id())
}

/// Whether `held` and `new` are one event published twice: equal in every
/// attribute but the time, which the bus stamps on each publication of an
/// event that has none.
fn same_event(held: &Event, new: &Event) -> bool {
    match new.time() {
        Some(time) => held.clone().with_time(time) == *new,
        None => held == new,
    }
}

/// Drops `entry` from the index of tracked entries, if it is the one
/// indexed under its identity.
fn forget(tracked: &mut HashMap<String, u64>, entry: &Entry) {
    let identity = identity(&entry.event);
    if tracked.get(&identity) == Some(&entry.seq) {
        tracked.remove(&identity);
    }
}

/// A consumer group shared by its consumers and their deliveries.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) tenant: Option<TenantId>,
    pub(super) durable: bool,
    state: Mutex<GroupState>,
    pub(super) notify: Notify,
}

impl Group {
    pub(super) fn new(tenant: Option<TenantId>, durable: bool) -> Self {
        Self {
            tenant,
            durable,
            state: Mutex::new(GroupState::default()),
            notify: Notify::new(),
        }
    }

    /// Whether this group receives `event` under its tenant filter.
    pub(super) fn accepts(&self, event: &Event) -> bool {
        self.tenant.is_none() || self.tenant == event.tenant_id()
    }

    /// Locks the state; a poisoned lock is recovered (every update is a
    /// single step that leaves the queue consistent).
    pub(super) fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(key: &str) -> Arc<Event> {
        Arc::new(
            Event::without_data(None, "t", "/s")
                .unwrap()
                .with_partition_key(key),
        )
    }

    #[tokio::test]
    async fn same_key_waits_for_settlement_and_nack_keeps_order() {
        let mut state = GroupState::default();
        for (seq, key) in [(1, "a"), (2, "a"), (3, "b")] {
            state.push(Entry::new(seq, event(key), true));
        }
        let Take::Ready { seq: first, .. } = state.take() else {
            panic!("expected a delivery")
        };
        assert_eq!(first, 1);
        let Take::Ready { seq: second, .. } = state.take() else {
            panic!("expected a delivery")
        };
        assert_eq!(second, 3, "key a is busy, so b goes next");
        assert!(matches!(state.take(), Take::Empty));
        state.settle(1, Some(None));
        let Take::Ready { seq, attempt, .. } = state.take() else {
            panic!("expected a delivery")
        };
        assert_eq!((seq, attempt), (1, 2), "the nacked event comes back first");
        state.settle(1, None);
        state.settle(3, None);
        assert_eq!(state.pending_len(), 1);
    }
}
