//! The relay task: which locations each pass visits, and how long it
//! waits between passes.
//!
//! Without wake-ups (SQLite, or PostgreSQL with them turned off) every
//! pass lists the locations and visits all of them — one transaction per
//! location — back to back while there is work, `poll_interval` apart
//! when idle.
//!
//! With wake-ups (PostgreSQL's commit notifications, see
//! `crate::postgres::WAKE_CHANNEL`) a pass visits only the locations
//! announced since the last pass, those the backend cannot announce
//! (lent per pass), and those it left with work (a full batch, rows
//! awaiting the sink's confirmation, a failure), and — every
//! `poll_interval` for [`LINGER`] after they last had rows — those
//! recently busy: a writer announces rows only into an outbox it saw
//! empty (the announcement serialises commits; see the PostgreSQL
//! dialect), so rows written into a busy outbox are found by these
//! visits. An idle relay sleeps until announced — no work per idle
//! location. Every `full_scan_interval` a sweep lists every location and
//! visits them all, [`SWEEP_SLICE`] per pass beside those with work (so a
//! sweep over thousands never holds up a busy one): the safety net for a
//! lost notification. Every listing forgets what was forwarded from
//! locations no longer listed (see `Schedule::list`). An
//! announcement from a table not listed yet (a tenant provisioned since)
//! lists the locations again, at most once per [`RELIST_GAP`], and visits
//! the new ones; so does a listing every [`LIST_EVERY`], for tenants that
//! cannot announce themselves.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::relay_core::{PassOutcome, RelayBackend, relay_each, relay_once};
use crate::relay_wake::{WakeSignals, Wakeups};

/// How often a relay with wake-ups lists its locations (and visits the new
/// ones) without being asked: a tenant whose outbox cannot announce itself
/// (a database lent per pass) is found this soon, not at the next sweep.
/// One `locations()` call, no visit to the locations already known.
const LIST_EVERY: Duration = Duration::from_secs(1);

/// The shortest time between two listings asked for by announcements of
/// unknown tables (an outbox in a schema this relay does not serve would
/// otherwise make it list on every commit there).
const RELIST_GAP: Duration = Duration::from_millis(250);

/// How long a relay with wake-ups keeps visiting a location after it last
/// had rows, unannounced. It must outlast the time between a writer's
/// insert (which saw rows there and so did not announce its own) and its
/// commit; a transaction slower than this waits for the next sweep.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// Locations a sweep visits per pass, besides those with work.
const SWEEP_SLICE: usize = 64;

/// The longest a relay with wake-ups sleeps between sweeps, whatever
/// the configured interval (`Duration::MAX` must not overflow a deadline).
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// Runs passes until `stopped`, then waits for what was forwarded to be
/// confirmed (at most the confirmation timeout).
pub(crate) async fn run<R: RelayBackend>(relay: R, mut stopped: watch::Receiver<bool>) {
    let signals = Arc::new(WakeSignals::default());
    let mut schedule = Schedule::new(relay.wakeups(Arc::clone(&signals)));
    loop {
        let pass = schedule
            .pass(&relay, &signals)
            .instrument(tracing::debug_span!("outbox.relay_pass"));
        let full = crate::observe::relay_pass(pass).await;
        if *stopped.borrow() {
            break;
        }
        if !full {
            tokio::select! {
                _ = tokio::time::sleep(schedule.idle_wait(&relay)) => {}
                _ = signals.signalled() => {}
                _ = stopped.changed() => break,
            }
        }
    }
    // Stopping: give the sink's consumers the confirmation time to finish
    // what was forwarded, so a clean stop leaves no row to be forwarded
    // again at the next start.
    relay.unconfirmed().drain();
    // At most an hour, whatever the timeout (`Duration::MAX` means "never
    // forward again", not "never stop").
    let wait = relay.confirm_timeout().min(LONGEST_SLEEP);
    let deadline = Instant::now() + wait;
    while !relay.unconfirmed().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(relay.idle_wait().min(Duration::from_millis(10))).await;
        let _ = relay_once(&relay).await;
    }
}

/// Which locations the next pass visits.
struct Schedule<R: RelayBackend> {
    /// `None`: every pass is a full one.
    wakeups: Option<Box<dyn Wakeups<R::Location>>>,
    /// The locations as last listed, by name.
    known: HashMap<String, R::Location>,
    /// Known locations the backend cannot announce: visited every pass.
    unannounced: Vec<String>,
    /// Locations the last pass left with work.
    again: HashSet<String>,
    /// Locations that had rows recently, until when they are visited
    /// without an announcement.
    lingering: HashMap<String, Instant>,
    /// Locations the current sweep has still to visit.
    sweep: Vec<String>,
    /// When the next sweep is due (`None`: now).
    next_full: Option<Instant>,
    last_listing: Option<Instant>,
    /// An unknown table was announced and the listing is not due yet.
    relist: bool,
}

impl<R: RelayBackend> Schedule<R> {
    fn new(wakeups: Option<Box<dyn Wakeups<R::Location>>>) -> Self {
        Self {
            wakeups,
            known: HashMap::new(),
            unannounced: Vec::new(),
            again: HashSet::new(),
            lingering: HashMap::new(),
            sweep: Vec::new(),
            next_full: None,
            last_listing: None,
            relist: false,
        }
    }

    /// One pass; returns whether to look again at once (a location
    /// forwarded a full batch, or the sweep is not through).
    async fn pass(&mut self, relay: &R, signals: &WakeSignals) -> bool {
        if self.wakeups.is_none() {
            return matches!(relay_once(relay).await, Ok(n) if n >= relay.batch_rows() as usize);
        }
        let (mut targets, relist) = signals.take();
        self.relist |= relist;
        let now = Instant::now();
        if self.next_full.is_none_or(|due| now >= due) {
            self.start_sweep(relay, now).await;
        }
        targets.extend(self.again.drain());
        targets.extend(self.unannounced.iter().cloned());
        self.lingering.retain(|_, until| *until > now);
        targets.extend(self.lingering.keys().cloned());
        let listing_due = self.last_listing.is_none_or(|at| now - at >= LIST_EVERY);
        if listing_due || (self.relist && self.last_listing.is_none_or(|at| now - at >= RELIST_GAP))
        {
            self.relist = false;
            let before: HashSet<String> = self.known.keys().cloned().collect();
            if self.list(relay, now).await {
                targets.extend(
                    self.known
                        .keys()
                        .filter(|name| !before.contains(*name))
                        .cloned(),
                );
            }
        }
        // The sweep goes a slice per pass, so the locations with work are
        // never kept waiting behind a visit to every idle one.
        let slice = self.sweep.len().saturating_sub(SWEEP_SLICE);
        targets.extend(self.sweep.drain(slice..));
        // Names no longer listed (a tenant deleted since) are skipped.
        let visit: Vec<R::Location> = targets
            .iter()
            .filter_map(|name| self.known.get(name).cloned())
            .collect();
        let outcome = relay_each(relay, &visit).await;
        self.settle(outcome, now) || !self.sweep.is_empty()
    }

    /// Lists every location and starts a sweep over them all.
    async fn start_sweep(&mut self, relay: &R, now: Instant) {
        let interval = relay.full_scan_interval().min(LONGEST_SLEEP);
        if !self.list(relay, now).await {
            // Not listed: try again after the idle wait, visiting what is
            // known meanwhile.
            self.next_full = Some(now + relay.idle_wait());
            return;
        }
        self.next_full = Some(now + interval);
        self.relist = false;
        self.sweep = self.known.keys().cloned().collect();
        self.lingering
            .retain(|name, _| self.known.contains_key(name));
    }

    /// Lists the locations and has the wake-ups watch them; false (logged
    /// and counted) if the listing failed.
    async fn list(&mut self, relay: &R, now: Instant) -> bool {
        self.last_listing = Some(now);
        let locations = match relay.current_locations().await {
            Ok(locations) => locations,
            Err(error) => {
                crate::observe::relay_failed();
                tracing::warn!(%error, "outbox relay could not list its locations");
                return false;
            }
        };
        let announced = match self.wakeups.as_mut() {
            Some(wakeups) => wakeups.watch(&locations).await,
            None => HashSet::new(),
        };
        self.known = locations
            .into_iter()
            .map(|location| (R::location_name(&location).to_owned(), location))
            .collect();
        // What was forwarded from a location no longer listed is forgotten
        // at once, not at the next sweep: its sequence numbers belong to
        // that table, and a location listed again under the name later (a
        // tenant moved away and back into storage created anew) numbers
        // its rows afresh — remembered numbers would skip or delete rows
        // never forwarded. Forgetting costs at most a repeat.
        relay
            .unconfirmed()
            .keep_only(&self.known.keys().cloned().collect());
        self.unannounced = self
            .known
            .keys()
            .filter(|name| !announced.contains(*name))
            .cloned()
            .collect();
        true
    }

    /// Keeps what the pass left with work; returns whether a location
    /// forwarded a full batch.
    fn settle(&mut self, outcome: PassOutcome, now: Instant) -> bool {
        self.again = outcome.again;
        for name in outcome.forwarded_from {
            self.lingering.insert(name, now + LINGER);
        }
        outcome.full
    }

    /// How long an idle relay sleeps unless woken: the poll interval while
    /// some location must be visited without an announcement, else until
    /// the next sweep.
    fn idle_wait(&self, relay: &R) -> Duration {
        let Some(next_full) = self.next_full else {
            return relay.idle_wait();
        };
        if self.wakeups.is_none()
            || self.relist
            || !self.again.is_empty()
            || !self.lingering.is_empty()
            || !self.unannounced.is_empty()
        {
            return relay.idle_wait();
        }
        let next_listing = self
            .last_listing
            .map_or_else(Instant::now, |at| at + LIST_EVERY);
        next_full
            .min(next_listing)
            .saturating_duration_since(Instant::now())
    }
}
