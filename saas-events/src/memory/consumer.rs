//! One consumer of an in-memory group, and the acknowledger of its
//! deliveries.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::group::{Group, Take};
use super::{GroupKey, InMemoryBus};
use crate::delivery::{Acknowledger, Delivery, DeliveryStream};
use crate::envelope::Event;
use crate::error::EventError;

#[derive(Debug)]
pub(super) struct Consumer {
    bus: InMemoryBus,
    topic: Arc<str>,
    key: GroupKey,
    group: Arc<Group>,
    closed: bool,
}

impl Consumer {
    pub(super) fn new(bus: InMemoryBus, topic: Arc<str>, key: GroupKey, group: Arc<Group>) -> Self {
        Self {
            bus,
            topic,
            key,
            group,
            closed: false,
        }
    }

    /// Takes the next ready entry; `None` once the group is closed.
    fn take(&self) -> Option<Take> {
        let mut state = self.group.lock();
        if state.closed {
            return None;
        }
        Some(state.take())
    }

    fn delivery(&self, seq: u64, event: Arc<Event>, attempt: u32) -> Delivery {
        let acker = MemoryAcker {
            group: Arc::clone(&self.group),
            seq,
        };
        Delivery::new(event, Arc::clone(&self.topic), attempt, Box::new(acker))
    }

    fn detach(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let last = {
            let mut state = self.group.lock();
            state.consumers = state.consumers.saturating_sub(1);
            state.consumers == 0
        };
        if last && !self.group.durable {
            self.bus.remove_group(&self.topic, &self.key);
        }
    }
}

#[async_trait]
impl DeliveryStream for Consumer {
    async fn next_delivery(&mut self) -> Option<Result<Delivery, EventError>> {
        loop {
            if self.closed {
                return None;
            }
            // Look first: a consumer that keeps up never registers for
            // wake-ups (registering takes the notifier's lock twice).
            match self.take()? {
                Take::Ready {
                    seq,
                    event,
                    attempt,
                } => return Some(Ok(self.delivery(seq, event, attempt))),
                Take::WaitUntil(_) | Take::Empty => {}
            }
            let notified = self.group.notify.notified();
            tokio::pin!(notified);
            // Register before looking again, so no wake-up is missed.
            notified.as_mut().enable();
            match self.take()? {
                Take::Ready {
                    seq,
                    event,
                    attempt,
                } => return Some(Ok(self.delivery(seq, event, attempt))),
                Take::WaitUntil(at) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                Take::Empty => notified.await,
            }
        }
    }

    async fn close(&mut self) {
        self.detach();
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.detach();
    }
}

#[derive(Debug)]
struct MemoryAcker {
    group: Arc<Group>,
    seq: u64,
}

impl MemoryAcker {
    fn settle(&self, requeue: Option<Option<Instant>>) {
        let wake = self.group.lock().settle(self.seq, requeue);
        if wake {
            self.group.notify.notify_waiters();
        }
    }
}

#[async_trait]
impl Acknowledger for MemoryAcker {
    async fn ack(self: Box<Self>) -> Result<(), EventError> {
        self.settle(None);
        Ok(())
    }

    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<(), EventError> {
        let not_before = delay.and_then(|d| Instant::now().checked_add(d));
        self.settle(Some(not_before));
        Ok(())
    }

    fn abandon(self: Box<Self>) {
        self.settle(Some(None));
    }
}
