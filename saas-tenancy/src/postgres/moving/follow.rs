//! How every process learns a move's cut-over at once: the mover
//! `NOTIFY`s [`CHANNEL`] in the transaction that changes the catalog, and
//! each [`PgTenancy`](crate::postgres::PgTenancy) whose catalog is a
//! PostgreSQL table listens on one connection of its own and forgets the
//! tenant's cached record when told. A lost connection is opened again and
//! every cached record is forgotten (notifications may have been missed).
//!
//! The notification makes the change prompt; it is not what makes it
//! safe: the source is locked out at the fence (see `lockout.rs`), so a
//! process that missed it cannot write there.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::{Either, select};
use saas_core::TenantId;
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{Notify, watch};

use super::super::cache::RecordCache;

/// The channel moves announce their fences and cut-overs on; the payload
/// is the tenant id.
pub const CHANNEL: &str = "saas_tenancy_moves";

/// How long the listener waits before connecting again after a failure.
const RECONNECT: Duration = Duration::from_millis(500);

/// One tenancy's listener: started on first use, stopped when the
/// tenancy is dropped (its `stop` sender with it).
pub(in crate::postgres) struct Follower {
    enabled: bool,
    started: AtomicBool,
    /// Woken on every notification: requests waiting for a fence read the
    /// catalog again.
    pub(in crate::postgres) wake: Arc<Notify>,
    stop: watch::Sender<()>,
}

impl Follower {
    pub(in crate::postgres) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            started: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
            stop: watch::channel(()).0,
        }
    }

    /// Starts the listener on `catalog`'s server, once, if enabled and a
    /// runtime is running.
    pub(in crate::postgres) fn ensure(
        &self,
        catalog: Option<&PgPool>,
        records: &Arc<RecordCache>,
        fences: &Arc<AtomicU64>,
    ) {
        let Some(pool) = catalog else { return };
        if !self.enabled || self.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        // A pool of one connection of its own: the catalog pool keeps its
        // connections for the catalog.
        let own = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with((*pool.connect_options()).clone());
        let signals = Signals {
            records: Arc::downgrade(records),
            fences: Arc::downgrade(fences),
            wake: Arc::clone(&self.wake),
        };
        runtime.spawn(listen(own, signals, self.stop.subscribe()));
    }
}

struct Signals {
    records: Weak<RecordCache>,
    fences: Weak<AtomicU64>,
    wake: Arc<Notify>,
}

impl Signals {
    /// Forgets `tenant`'s record (every record for `None`); makes requests
    /// that read a record before check it again. `false` once the tenancy
    /// is gone.
    fn forget(&self, tenant: Option<TenantId>) -> bool {
        let (Some(records), Some(fences)) = (self.records.upgrade(), self.fences.upgrade()) else {
            return false;
        };
        match tenant {
            Some(id) => records.forget(id),
            None => records.clear(),
        }
        fences.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_waiters();
        true
    }
}

async fn listen(pool: PgPool, signals: Signals, mut stop: watch::Receiver<()>) {
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let listener = match select(Box::pin(listener), Box::pin(stop.changed())).await {
            Either::Left((Ok(listener), _)) => Some(listener),
            Either::Left((Err(e), _)) => {
                tracing::debug!(error = %e, "move listener could not connect");
                None
            }
            Either::Right(_) => return,
        };
        if let Some(mut listener) = listener {
            // Anything announced before this connection listened was missed.
            if !signals.forget(None) {
                return;
            }
            loop {
                match select(Box::pin(listener.try_recv()), Box::pin(stop.changed())).await {
                    Either::Left((Ok(Some(note)), _)) => {
                        let tenant = note.payload().parse::<uuid::Uuid>().ok();
                        let tenant = tenant.and_then(|u| TenantId::from_uuid(u).ok());
                        if !signals.forget(tenant) {
                            return;
                        }
                    }
                    // Reconnected by the listener: notifications were missed.
                    Either::Left((Ok(None), _)) => {
                        if !signals.forget(None) {
                            return;
                        }
                    }
                    Either::Left((Err(e), _)) => {
                        tracing::debug!(error = %e, "move listener lost its connection");
                        break;
                    }
                    Either::Right(_) => return,
                }
            }
        }
        let pause = tokio::time::sleep(RECONNECT);
        if let Either::Right(_) = select(Box::pin(pause), Box::pin(stop.changed())).await {
            return;
        }
    }
}
