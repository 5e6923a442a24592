//! What [`Publisher::publish_tracked`](crate::Publisher::publish_tracked)
//! returns: a way to wait until published events no longer depend on the
//! publisher's caller keeping a copy of them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::EventError;

/// Where a tracked publication stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// Copies (one per receiving group, plus the publisher's own while it
    /// is still publishing) not yet acknowledged.
    unacknowledged: usize,
    /// A copy was dropped unacknowledged (its group or the bus went away).
    lost: bool,
}

/// The publisher's side of a tracked publication: counts the copies that
/// must be acknowledged before the receipt is confirmed.
#[derive(Debug)]
pub(crate) struct Tracker {
    progress: watch::Sender<Progress>,
}

impl Tracker {
    /// A tracker holding one copy for the publisher itself, so that no
    /// acknowledgement can confirm the receipt before every copy has been
    /// counted; release it with [`Tracker::acknowledge`] after publishing.
    pub(crate) fn start() -> (Arc<Tracker>, PublishReceipt) {
        let (progress, watcher) = watch::channel(Progress {
            unacknowledged: 1,
            lost: false,
        });
        let receipt = PublishReceipt {
            watcher: Some(watcher),
        };
        (Arc::new(Tracker { progress }), receipt)
    }

    /// One more copy to wait for, held by the returned guard.
    pub(crate) fn copy(self: &Arc<Self>) -> CopyGuard {
        self.progress.send_modify(|p| p.unacknowledged += 1);
        CopyGuard {
            tracker: Some(Arc::clone(self)),
        }
    }

    /// One copy acknowledged.
    pub(crate) fn acknowledge(&self) {
        self.progress
            .send_modify(|p| p.unacknowledged = p.unacknowledged.saturating_sub(1));
    }

    fn lose(&self) {
        self.progress.send_modify(|p| p.lost = true);
    }
}

/// One receiving group's copy of a tracked event. Acknowledging it counts
/// towards the receipt; dropping it unacknowledged marks the publication
/// lost, so the waiting publisher fails at once instead of timing out.
#[derive(Debug)]
pub(crate) struct CopyGuard {
    tracker: Option<Arc<Tracker>>,
}

impl CopyGuard {
    /// The copy was handled.
    pub(crate) fn acknowledge(mut self) {
        if let Some(tracker) = self.tracker.take() {
            tracker.acknowledge();
        }
    }
}

impl Drop for CopyGuard {
    fn drop(&mut self) {
        if let Some(tracker) = self.tracker.take() {
            tracker.lose();
        }
    }
}

/// A receipt for events handed to a [`Publisher`](crate::Publisher) with
/// [`publish_tracked`](crate::Publisher::publish_tracked).
///
/// [`PublishReceipt::confirmed`] returns once the events are as safe as the
/// caller's own copy: at once for a broker that stores what it accepts; for
/// a bus that keeps events only in memory ([`InMemoryBus`](crate::InMemoryBus)),
/// once every consumer group and subscription that received them has
/// acknowledged them. An outbox relay deletes its rows only after that, so a
/// process killed between the relay and the consumer loses nothing.
///
/// ```
/// use std::time::Duration;
/// use saas_core::TenantId;
/// use saas_events::{Event, InMemoryBus, Publisher, SubscribeOptions, Subscriber};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let bus = InMemoryBus::new();
/// let mut sub = bus.subscribe("orders", SubscribeOptions::new().with_group("mailer")).await?;
/// let event = Event::new(TenantId::new(), "order.placed", "/shop", &42)?;
/// let receipt = bus.publish_tracked("orders", vec![event]).await?;
/// assert!(!receipt.is_confirmed(), "nobody has handled it yet");
///
/// sub.next().await.expect("open")?.ack().await?;
/// receipt.confirmed(Duration::from_secs(1)).await?;
/// # Ok::<(), saas_events::EventError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
#[must_use = "a receipt confirms nothing unless it is awaited"]
pub struct PublishReceipt {
    /// `None` when confirmed on publication.
    watcher: Option<watch::Receiver<Progress>>,
}

impl PublishReceipt {
    /// A receipt for events the publisher already holds safely (a durable
    /// broker's acceptance).
    pub fn settled() -> Self {
        PublishReceipt { watcher: None }
    }

    /// Whether every copy has been acknowledged already.
    pub fn is_confirmed(&self) -> bool {
        self.watcher
            .as_ref()
            .is_none_or(|w| w.borrow().unacknowledged == 0)
    }

    /// Whether a copy was dropped unacknowledged (its subscription or the
    /// bus was closed): the receipt will never be confirmed.
    pub fn is_lost(&self) -> bool {
        self.watcher.as_ref().is_some_and(|w| {
            let progress = w.borrow();
            progress.unacknowledged > 0 && (progress.lost || w.has_changed().is_err())
        })
    }

    /// Waits until every receiving group has acknowledged the events.
    ///
    /// # Errors
    /// [`EventError::Timeout`] if that takes longer than `within` (the
    /// events stay with their groups, which keep redelivering them);
    /// [`EventError::Closed`] if a copy was dropped unacknowledged — the
    /// bus was closed, or a private subscription went away (dropped, with
    /// its deliveries) before acknowledging. A durable group whose
    /// consumers all left keeps its copies: the receipt waits. Either way
    /// the caller still owns the events and should publish them again
    /// later.
    pub async fn confirmed(self, within: Duration) -> Result<(), EventError> {
        let Some(mut watcher) = self.watcher else {
            return Ok(());
        };
        let outcome = tokio::time::timeout(
            within,
            watcher.wait_for(|p| p.unacknowledged == 0 || p.lost),
        )
        .await;
        match outcome {
            Err(_) => Err(EventError::Timeout { after: within }),
            // Every tracker and guard is gone: nothing can acknowledge now.
            Ok(Err(_)) => Err(EventError::Closed),
            Ok(Ok(progress)) if progress.unacknowledged == 0 => Ok(()),
            Ok(Ok(_)) => Err(EventError::Closed),
        }
    }
}
