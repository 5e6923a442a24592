//! Waking a relay when rows arrive instead of visiting every location on
//! every pass: what a backend that can announce commits (PostgreSQL's
//! `LISTEN`/`NOTIFY`) hands the relay's scheduler.
//!
//! The signals only say *where* to look; the rows themselves are read as
//! always, in a locked transaction. A lost signal therefore delays an
//! event (until the next full pass, [`crate::postgres::RelayConfig::full_scan_interval`])
//! but never loses or reorders one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

/// Locations announced to have new rows, shared between the listeners
/// (which mark) and the relay task (which takes). Bounded by the number
/// of locations: a name marked twice before a pass is visited once.
#[derive(Debug, Default)]
pub(crate) struct WakeSignals {
    dirty: Mutex<HashSet<String>>,
    refresh: AtomicBool,
    notify: Notify,
}

// Only PostgreSQL's listeners mark; the relay task takes on every backend.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
impl WakeSignals {
    /// `names` have new rows: visit them on the next pass.
    pub(crate) fn mark<I: IntoIterator<Item = String>>(&self, names: I) {
        let mut added = false;
        {
            let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
            for name in names {
                added |= dirty.insert(name);
            }
        }
        if added {
            // A permit is kept if the relay is mid-pass: it looks again.
            self.notify.notify_one();
        }
    }

    /// A location the relay does not know had rows (a tenant provisioned
    /// since the last listing): list the locations again.
    pub(crate) fn request_refresh(&self) {
        self.refresh.store(true, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// What was signalled since the last call: the names, and whether a
    /// new listing was asked for.
    pub(crate) fn take(&self) -> (HashSet<String>, bool) {
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner));
        (dirty, self.refresh.swap(false, Ordering::Relaxed))
    }

    /// Waits until something is signalled (returns at once if something
    /// was since the last wait).
    pub(crate) async fn signalled(&self) {
        self.notify.notified().await;
    }
}

/// A backend's way of announcing new rows, driven by the relay task.
#[async_trait::async_trait]
pub(crate) trait Wakeups<L>: Send {
    /// The locations as just listed: listen so that as many as possible
    /// are announced, and stop listening for those gone. Returns once
    /// listening has started (or failed: a listener that cannot listen
    /// marks its locations until it can), with the names whose new rows
    /// will be signalled; the relay visits the others on every pass, as
    /// without wake-ups. The pass that follows visits every location
    /// listed, so rows committed before listening started are found.
    async fn watch(&mut self, locations: &[L]) -> HashSet<String>;
}
