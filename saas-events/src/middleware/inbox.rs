//! The idempotent consumer: an inbox of the events a consumer has
//! processed, so a redelivered event is acknowledged without running its
//! handler again.
//!
//! An event is identified by **consumer, tenant and event id**: two
//! consumers each process an event once, and a tenant cannot suppress
//! another tenant's event by publishing one with the same id.
//!
//! - [`InboxLayer`] over an [`InMemoryInbox`], for handlers without a
//!   database (the record lives as long as the process).
//! - `postgres::PgInbox` and `sqlite::SqliteInbox` (features `postgres`,
//!   `sqlite`) record the event **in the handler's own transaction**: the
//!   record and the handler's writes commit together, and a failed handler
//!   rolls both back so a redelivery runs it again. Use their `claim`
//!   inside a transaction you open (a saas-tenancy tenant transaction, for
//!   example), or their `handler` to wrap a [`TxHandler`].
//!
//! Records are kept until purged (`purge_before`); keep them longer than
//! the longest redelivery window of the backend, or a late duplicate runs
//! the handler again.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use std::task::{Context, Poll};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::{SharedClock, SystemClock, TenantId};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{BoxError, EventError};
use crate::names::validate_name;
use crate::router::{EventFuture, ReceivedEvent, call_mapped, poll_ready_mapped};

/// Whether an event was seen by a consumer before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxClaim {
    /// First delivery: run the handler (its work commits with the record).
    First,
    /// Already processed: acknowledge without running the handler.
    Duplicate,
}

/// A handler that does its work in a database transaction opened for it:
/// `C` is `sqlx::PgConnection` or `sqlx::SqliteConnection`.
#[async_trait]
pub trait TxHandler<C: Send + ?Sized>: Send + Sync + fmt::Debug {
    /// Handles one event, writing through `tx`; an error rolls the
    /// transaction back.
    async fn handle(&self, event: &ReceivedEvent, tx: &mut C) -> Result<(), EventError>;
}

type Key = (String, Option<TenantId>, String);

#[derive(Debug, Default)]
struct Slot {
    /// Held while the handler runs, so a concurrent duplicate waits for
    /// the outcome instead of running the handler too.
    gate: Arc<tokio::sync::Mutex<()>>,
    processed_at: Option<DateTime<Utc>>,
}

/// An inbox in process memory.
#[derive(Clone)]
pub struct InMemoryInbox {
    slots: Arc<Mutex<HashMap<Key, Slot>>>,
    clock: SharedClock,
}

impl Default for InMemoryInbox {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InMemoryInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryInbox")
            .field("processed", &self.len())
            .finish_non_exhaustive()
    }
}

impl InMemoryInbox {
    /// An empty inbox on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty inbox stamping records with `clock`.
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            slots: Arc::default(),
            clock,
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        // The map is never left half-updated, so a poisoned lock is usable.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Events recorded as processed.
    pub fn len(&self) -> usize {
        self.slots()
            .values()
            .filter(|s| s.processed_at.is_some())
            .count()
    }

    /// Whether no event is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `consumer` has processed `event`.
    pub fn contains(&self, consumer: &str, event: &crate::Event) -> bool {
        self.slots()
            .get(&key(consumer, event))
            .is_some_and(|s| s.processed_at.is_some())
    }

    /// Forgets records older than `cutoff` (and idle leftovers of failed
    /// attempts). Returns how many records were removed.
    pub fn purge_before(&self, cutoff: DateTime<Utc>) -> usize {
        let mut slots = self.slots();
        let before = slots.len();
        slots.retain(|_, slot| match slot.processed_at {
            Some(at) => at >= cutoff,
            None => Arc::strong_count(&slot.gate) > 1,
        });
        before - slots.len()
    }
}

fn key(consumer: &str, event: &crate::Event) -> Key {
    (
        consumer.to_owned(),
        event.tenant_id(),
        event.id().to_owned(),
    )
}

/// A tower layer that runs the wrapped handler at most once per event for
/// one consumer;
/// duplicates are acknowledged (`Ok`) without running it. A failed
/// attempt records nothing, so the retry runs the handler.
///
/// ```
/// use saas_events::middleware::{InMemoryInbox, InboxLayer};
/// use saas_events::router::{Router, handler_fn};
///
/// let inbox = InMemoryInbox::new();
/// let router = Router::new()
///     .layer(InboxLayer::new("audit-log", inbox)?)
///     .route("invoice.paid", handler_fn(|_event| async { Ok(()) }));
/// # let _ = router;
/// # Ok::<(), saas_events::EventError>(())
/// ```
#[derive(Debug, Clone)]
pub struct InboxLayer {
    consumer: Arc<str>,
    inbox: InMemoryInbox,
}

impl InboxLayer {
    /// Deduplicates for `consumer` (a name like a consumer group's) in
    /// `inbox`.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] for a bad consumer name.
    pub fn new(consumer: &str, inbox: InMemoryInbox) -> Result<Self, EventError> {
        validate_name(consumer)?;
        Ok(Self {
            consumer: consumer.into(),
            inbox,
        })
    }
}

impl<S> Layer<S> for InboxLayer {
    type Service = InboxService<S>;

    fn layer(&self, inner: S) -> InboxService<S> {
        InboxService {
            layer: self.clone(),
            inner,
        }
    }
}

/// The service of an [`InboxLayer`].
#[derive(Debug, Clone)]
pub struct InboxService<S> {
    layer: InboxLayer,
    inner: S,
}

impl<S> Service<ReceivedEvent> for InboxService<S>
where
    S: Service<ReceivedEvent, Response = ()> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = EventError;
    type Future = EventFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), EventError>> {
        poll_ready_mapped(&mut self.inner, cx)
    }

    fn call(&mut self, event: ReceivedEvent) -> EventFuture {
        // The inner service is called only after the gate is held and the
        // event found new, so it moves into the future (left here is a
        // clone that the next `poll_ready` prepares).
        let inbox = self.layer.inbox.clone();
        let key = key(&self.layer.consumer, event.event());
        let unready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, unready);
        Box::pin(async move {
            let gate = Arc::clone(&inbox.slots().entry(key.clone()).or_default().gate);
            let _running = gate.lock().await;
            let seen = inbox
                .slots()
                .get(&key)
                .is_some_and(|s| s.processed_at.is_some());
            if seen {
                return Ok(());
            }
            let result = call_mapped(&mut inner, event).await;
            if result.is_ok() {
                let now = inbox.clock.now();
                inbox.slots().entry(key).or_default().processed_at = Some(now);
            }
            result
        })
    }
}
