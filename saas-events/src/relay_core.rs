//! What the PostgreSQL and SQLite outbox relays share: the counters, the
//! "one batch from every location" pass, the body of one location's pass
//! inside its transaction and the task that runs passes until it is
//! stopped. Each backend supplies how one location is drained
//! ([`RelayBackend`]) and its two statements on the table ([`PassTable`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{Database, Transaction};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::envelope::Event;
use crate::error::EventError;
use crate::receipt::PublishReceipt;
use crate::traits::Publisher;

/// Rows a relay reads, forwards and deletes per transaction by default.
pub(crate) const DEFAULT_BATCH_SIZE: u32 = 500;

/// How long an idle relay waits by default before looking again.
pub(crate) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long a relay waits by default for a sink to confirm a forwarded
/// run (see [`Publisher::publish_tracked`]) before it forwards the rows
/// again.
pub(crate) const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// How many forwarded, unconfirmed rows a relay keeps per location by
/// default before it stops reading new ones there.
pub(crate) const DEFAULT_MAX_UNCONFIRMED: u32 = 5_000;

/// Publishes `batch` (rows in outbox order: sequence, topic, event) to
/// `sink`, one tracked publication per run of one topic, in order. Returns
/// the runs published — also when a later run failed, so that those are
/// tracked rather than forwarded again — and the failure, if any.
async fn publish_runs(
    sink: &dyn Publisher,
    batch: Vec<(i64, String, Event)>,
) -> (Vec<Forwarded>, Result<(), EventError>) {
    let mut forwarded = Vec::new();
    let mut seqs = Vec::new();
    let mut run: Vec<Event> = Vec::new();
    let mut run_topic = String::new();
    for (seq, topic, event) in batch {
        if topic != run_topic && !run.is_empty() {
            let events = std::mem::take(&mut run);
            match sink.publish_tracked(&run_topic, events).await {
                Ok(receipt) => forwarded.push(Forwarded::new(std::mem::take(&mut seqs), receipt)),
                Err(error) => return (forwarded, Err(error)),
            }
        }
        run_topic = topic;
        run.push(event);
        seqs.push(seq);
    }
    if !run.is_empty() {
        match sink.publish_tracked(&run_topic, run).await {
            Ok(receipt) => forwarded.push(Forwarded::new(seqs, receipt)),
            Err(error) => return (forwarded, Err(error)),
        }
    }
    (forwarded, Ok(()))
}

/// One outbox table inside a relay pass's transaction: the two statements
/// a pass runs on it, in the backend's SQL.
#[async_trait]
pub(crate) trait PassTable: Send {
    /// Deletes the rows `seqs`.
    async fn delete(&mut self, seqs: &[i64]) -> Result<(), EventError>;
    /// Reads at most `room` rows not in `waiting`, in sequence order, as
    /// (sequence, topic, event) — each event as it may leave the outbox.
    async fn read(
        &mut self,
        waiting: &[i64],
        room: u32,
    ) -> Result<Vec<(i64, String, Event)>, EventError>;
}

/// The part of a relay pass inside its transaction: deletes the rows
/// confirmed since the last pass (first, so the read cannot forward them
/// again), then reads up to `room` new rows, forwards them to `sink` and
/// deletes those the sink confirms at once (a sink with persistence).
/// Returns how many rows were forwarded.
pub(crate) async fn forward_batch(
    sink: &dyn Publisher,
    table: &mut dyn PassTable,
    settled: &mut Settled,
    room: u32,
) -> Result<usize, EventError> {
    if !settled.confirmed.is_empty() {
        table.delete(&settled.confirmed).await?;
    }
    if room == 0 {
        return Ok(0);
    }
    let batch = table.read(&settled.waiting, room).await?;
    let forwarded = batch.len();
    // Wall time for the lag metric only; nothing is decided on it.
    let now = chrono::Utc::now();
    let oldest = batch.iter().filter_map(|(_, _, event)| event.time()).min();
    crate::observe::relay_read(oldest.and_then(|t| (now - t).to_std().ok()));
    let (runs, published) = publish_runs(sink, batch).await;
    // What went out is tracked even if a later run failed.
    let confirmed = settled.add(runs);
    published?;
    if confirmed {
        table.delete(&settled.confirmed).await?;
    }
    Ok(forwarded)
}

/// Ends a pass's transaction with the pass's `outcome`, committing either
/// way. After a failure only deletions of confirmed rows were written:
/// they are kept, so a row that cannot be forwarded (a stall to see) does
/// not keep the confirmed rows before it as well — the commit's own
/// failure is then ignored (a transaction a database error aborted writes
/// nothing, and the next pass deletes them) and the pass's error returned.
pub(crate) async fn end_pass<DB: Database>(
    tx: Transaction<'_, DB>,
    outcome: Result<usize, EventError>,
    db_error: fn(sqlx::Error) -> EventError,
) -> Result<usize, EventError> {
    match outcome {
        Ok(forwarded) => {
            tx.commit().await.map_err(db_error)?;
            Ok(forwarded)
        }
        Err(error) => {
            let _ = tx.commit().await;
            Err(error)
        }
    }
}

/// Rows forwarded as one tracked publication, kept until the sink confirms.
#[derive(Debug)]
pub(crate) struct Forwarded {
    seqs: Vec<i64>,
    receipt: PublishReceipt,
    at: tokio::time::Instant,
}

impl Forwarded {
    fn new(seqs: Vec<i64>, receipt: PublishReceipt) -> Self {
        Self {
            seqs,
            receipt,
            at: tokio::time::Instant::now(),
        }
    }
}

/// What a relay pass does with one location's forwarded rows.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    /// Rows the sink has confirmed: delete them.
    pub(crate) confirmed: Vec<i64>,
    /// Rows still waiting: do not forward them again.
    pub(crate) waiting: Vec<i64>,
    waiting_runs: Vec<Forwarded>,
}

impl Settled {
    /// Sorts freshly forwarded runs in; returns whether any is confirmed
    /// already (a sink with persistence confirms on publication).
    pub(crate) fn add(&mut self, forwarded: Vec<Forwarded>) -> bool {
        let mut confirmed = false;
        for run in forwarded {
            if run.receipt.is_confirmed() {
                self.confirmed.extend(run.seqs);
                confirmed = true;
            } else {
                self.waiting.extend(&run.seqs);
                self.waiting_runs.push(run);
            }
        }
        confirmed
    }
}

/// One location's forwarded rows, and whether a pass has it checked out.
#[derive(Debug, Default)]
struct Slot {
    runs: Vec<Forwarded>,
    busy: bool,
}

/// Forwarded rows not yet confirmed by the sink, per location, so that a
/// relay deletes a row only once the sink holds its event safely and
/// forwards newer rows meanwhile (one event a consumer keeps failing does
/// not hold up the others).
///
/// Kept in memory on purpose: after a crash the rows are still in the
/// outbox and are forwarded again (consumers deduplicate by event id).
/// Shared by the clones of one relay; a location is checked out by one
/// pass at a time.
#[derive(Debug, Default)]
pub(crate) struct Unconfirmed {
    slots: Mutex<HashMap<String, Slot>>,
    draining: AtomicBool,
}

impl Unconfirmed {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks `location` out for one pass, its forwarded runs sorted into
    /// confirmed and waiting; runs lost by the sink, or unconfirmed for
    /// longer than `timeout`, are dropped so their rows are forwarded
    /// again. `None` while another pass (of a clone) has it: that pass
    /// holds runs this one would not see.
    pub(crate) fn check_out(&self, location: &str, timeout: Duration) -> Option<Checkout<'_>> {
        let runs = {
            let mut slots = self.slots();
            let slot = slots.entry(location.to_owned()).or_default();
            if slot.busy {
                return None;
            }
            slot.busy = true;
            std::mem::take(&mut slot.runs)
        };
        let mut settled = Settled::default();
        for run in runs {
            if run.receipt.is_confirmed() {
                settled.confirmed.extend(run.seqs);
            } else if run.receipt.is_lost() || run.at.elapsed() >= timeout {
                tracing::warn!(
                    location,
                    rows = run.seqs.len(),
                    "outbox rows not confirmed by the sink; forwarding them again"
                );
            } else {
                settled.waiting.extend(&run.seqs);
                settled.waiting_runs.push(run);
            }
        }
        Some(Checkout {
            owner: self,
            location: location.to_owned(),
            settled,
            committed: false,
        })
    }

    /// Forgets the forwarded rows of locations no longer listed (a deleted
    /// or suspended tenant's): their rows, if they come back, are
    /// forwarded again, and the map does not grow with every tenant ever
    /// seen.
    pub(crate) fn keep_only(&self, names: &HashSet<String>) {
        self.slots()
            .retain(|name, slot| slot.busy || names.contains(name));
    }

    /// Whether `location` has forwarded rows awaiting confirmation.
    pub(crate) fn is_waiting(&self, location: &str) -> bool {
        self.slots()
            .get(location)
            .is_some_and(|slot| !slot.runs.is_empty())
    }

    /// Whether any location has forwarded rows awaiting confirmation.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots().values().all(|slot| slot.runs.is_empty())
    }

    /// From now on passes only delete confirmed rows (a stopping relay).
    pub(crate) fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// One location checked out for a pass. Dropped — committed or not, also
/// when the pass is cancelled — it gives the location back with what is
/// still waiting; unless [`Checkout::committed`] was called, the confirmed
/// rows are kept too, to be deleted by the next pass.
#[derive(Debug)]
pub(crate) struct Checkout<'a> {
    owner: &'a Unconfirmed,
    location: String,
    pub(crate) settled: Settled,
    committed: bool,
}

impl Checkout<'_> {
    /// How many rows the pass may read: a batch, or less when the
    /// forwarded rows awaiting confirmation approach `max_unconfirmed`;
    /// none once the relay is stopping.
    pub(crate) fn room(&self, max_unconfirmed: u32, batch_size: u32) -> u32 {
        if self.owner.draining.load(Ordering::Relaxed) {
            return 0;
        }
        let waiting = u32::try_from(self.settled.waiting.len()).unwrap_or(u32::MAX);
        max_unconfirmed.saturating_sub(waiting).min(batch_size)
    }

    /// The pass committed: its confirmed rows are deleted.
    pub(crate) fn committed(mut self) {
        self.committed = true;
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        let settled = std::mem::take(&mut self.settled);
        let mut runs = settled.waiting_runs;
        if !self.committed && !settled.confirmed.is_empty() {
            runs.push(Forwarded::new(settled.confirmed, PublishReceipt::settled()));
        }
        let mut slots = self.owner.slots();
        let slot = slots.entry(std::mem::take(&mut self.location)).or_default();
        slot.busy = false;
        slot.runs.extend(runs);
    }
}

/// Counters of a relay, shared with its `RelayHandle`.
#[derive(Debug, Default)]
pub struct RelayStats {
    relayed: AtomicU64,
    errors: AtomicU64,
    visits: AtomicU64,
}

impl RelayStats {
    /// Events forwarded (a batch forwarded again after a failure counts
    /// again).
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }

    /// Failed passes over a location (each also logged with `tracing`).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Passes over one location (a transaction each, whether or not it
    /// found rows): with wake-ups this grows with the locations that have
    /// work, not with every location there is.
    pub fn location_passes(&self) -> u64 {
        self.visits.load(Ordering::Relaxed)
    }

    pub(crate) fn add_relayed(&self, events: usize) {
        self.relayed.fetch_add(events as u64, Ordering::Relaxed);
        crate::observe::relayed(events);
    }
}

/// One backend's relay, as the shared pass and task drive it.
#[async_trait]
pub(crate) trait RelayBackend: Clone + Send + Sync + 'static {
    /// Where one outbox table is.
    type Location: Clone + Send + Sync;

    /// The relay's counters.
    fn counters(&self) -> &RelayStats;
    /// Rows per batch: a pass that forwarded this many looks again at once.
    fn batch_rows(&self) -> u32;
    /// How long an idle or failing relay waits before the next pass.
    fn idle_wait(&self) -> Duration;
    /// How long forwarded rows wait for the sink's confirmation.
    fn confirm_timeout(&self) -> Duration;
    /// The forwarded rows awaiting confirmation.
    fn unconfirmed(&self) -> &Unconfirmed;
    /// The locations to drain, asked again on every pass.
    async fn current_locations(&self) -> Result<Vec<Self::Location>, EventError>;
    /// The location's name, for the log.
    fn location_name(location: &Self::Location) -> &str;
    /// Forwards one batch from `location`; returns how many events.
    async fn drain_location(&self, location: &Self::Location) -> Result<usize, EventError>;
    /// Starts announcing new rows to `signals`, if the backend can: each
    /// pass then visits the locations announced (and those it cannot
    /// announce), with a full pass every [`RelayBackend::full_scan_interval`].
    /// `None` (the default): every pass visits every location.
    fn wakeups(
        &self,
        signals: std::sync::Arc<crate::relay_wake::WakeSignals>,
    ) -> Option<Box<dyn crate::relay_wake::Wakeups<Self::Location>>> {
        let _ = signals;
        None
    }
    /// How often a relay with wake-ups still visits every location.
    fn full_scan_interval(&self) -> Duration {
        Duration::MAX
    }
}

/// Implements [`RelayBackend`] for a backend's `OutboxRelay`, whose fields
/// (`locations`, `stats`, `config.batch_size`, `config.poll_interval`)
/// and `relay_location` method have the same names in both backends.
macro_rules! impl_relay_backend {
    ($relay:ty, $location:ty) => {
        $crate::relay_core::impl_relay_backend!($relay, $location, {});
    };
    // `wakeups`: the relay also has `start_wakeups(signals)` and
    // `config.full_scan_interval`.
    ($relay:ty, $location:ty, wakeups) => {
        $crate::relay_core::impl_relay_backend!($relay, $location, {
            fn wakeups(
                &self,
                signals: std::sync::Arc<$crate::relay_wake::WakeSignals>,
            ) -> Option<Box<dyn $crate::relay_wake::Wakeups<$location>>> {
                self.start_wakeups(signals)
            }

            fn full_scan_interval(&self) -> std::time::Duration {
                self.config.full_scan_interval
            }
        });
    };
    ($relay:ty, $location:ty, { $($extra:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::relay_core::RelayBackend for $relay {
            type Location = $location;

            fn counters(&self) -> &$crate::relay_core::RelayStats {
                &self.stats
            }

            fn batch_rows(&self) -> u32 {
                self.config.batch_size
            }

            fn idle_wait(&self) -> std::time::Duration {
                self.config.poll_interval
            }

            fn confirm_timeout(&self) -> std::time::Duration {
                self.config.confirm_timeout
            }

            fn unconfirmed(&self) -> &$crate::relay_core::Unconfirmed {
                &self.unconfirmed
            }

            async fn current_locations(&self) -> Result<Vec<$location>, $crate::EventError> {
                self.locations.locations().await
            }

            fn location_name(location: &$location) -> &str {
                location.name()
            }

            async fn drain_location(
                &self,
                location: &$location,
            ) -> Result<usize, $crate::EventError> {
                self.relay_location(location).await
            }

            $($extra)*
        }
    };
}
pub(crate) use impl_relay_backend;

/// What a pass over some locations did.
#[derive(Debug, Default)]
pub(crate) struct PassOutcome {
    /// Events forwarded.
    pub(crate) forwarded: usize,
    /// Whether a location forwarded a full batch (look again at once).
    pub(crate) full: bool,
    /// Locations that forwarded rows.
    pub(crate) forwarded_from: Vec<String>,
    /// The first location's failure.
    pub(crate) first_error: Option<EventError>,
    /// Locations to visit again on the next pass without being woken: a
    /// full batch (more may be there), rows awaiting the sink's
    /// confirmation, or a failure.
    pub(crate) again: HashSet<String>,
}

/// At most one batch from each of `locations`: a location that fails is
/// logged and counted and the others are still drained.
pub(crate) async fn relay_each<R: RelayBackend>(
    relay: &R,
    locations: &[R::Location],
) -> PassOutcome {
    let mut outcome = PassOutcome::default();
    let mut names = HashSet::new();
    for location in locations {
        let name = R::location_name(location);
        // Forwarded rows are remembered by location name until confirmed.
        let drained = if names.insert(name) {
            relay.counters().visits.fetch_add(1, Ordering::Relaxed);
            relay.drain_location(location).await
        } else {
            Err(EventError::InvalidName {
                name: name.to_owned(),
                reason: "two outbox locations share this name; give each its own",
            })
        };
        match drained {
            Ok(n) => {
                outcome.forwarded += n;
                let full = n >= relay.batch_rows() as usize;
                outcome.full |= full;
                if n > 0 {
                    outcome.forwarded_from.push(name.to_owned());
                }
                if full || relay.unconfirmed().is_waiting(name) {
                    outcome.again.insert(name.to_owned());
                }
            }
            Err(error) => {
                relay.counters().errors.fetch_add(1, Ordering::Relaxed);
                crate::observe::relay_failed();
                tracing::warn!(location = name, %error, "outbox relay pass failed");
                outcome.again.insert(name.to_owned());
                outcome.first_error.get_or_insert(error);
            }
        }
    }
    outcome
}

/// At most one batch from every location, listed anew: a location that
/// fails is logged and counted and the others are still drained; the
/// first error is returned after, if nothing was forwarded.
pub(crate) async fn relay_once<R: RelayBackend>(relay: &R) -> Result<usize, EventError> {
    let locations = relay.current_locations().await?;
    let outcome = relay_each(relay, &locations).await;
    relay.unconfirmed().keep_only(
        &locations
            .iter()
            .map(|location| R::location_name(location).to_owned())
            .collect(),
    );
    match outcome.first_error {
        Some(error) if outcome.forwarded == 0 => Err(error),
        _ => Ok(outcome.forwarded),
    }
}

/// Runs `relay` on a tokio task until [`RelayHandle::shutdown`] (see
/// [`crate::relay_task`] for which locations each pass visits).
pub(crate) fn spawn<R: RelayBackend>(relay: R) -> RelayHandle<R> {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(crate::relay_task::run(relay.clone(), stopped));
    RelayHandle { relay, stop, task }
}

/// A relay running on a task (`R` is the backend's `OutboxRelay`).
#[derive(Debug)]
pub struct RelayHandle<R> {
    relay: R,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl<R> RelayHandle<R> {
    /// The relay (for its `oldest_pending_age` and its stats).
    pub fn relay(&self) -> &R {
        &self.relay
    }

    /// Stops after the current pass and waits for it, and for the sink to
    /// confirm what was forwarded (at most the confirmation timeout).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Stops at once, abandoning the current pass (its transaction rolls
    /// back, so its batch is forwarded again later).
    pub fn abort(self) {
        self.task.abort();
    }
}
