//! Deliveries and subscriptions: what a subscriber hands out.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::envelope::Event;
use crate::error::EventError;

/// How a backend settles one delivery. Implemented by backends, called
/// through [`Delivery`].
#[async_trait]
pub trait Acknowledger: Send + Sync + fmt::Debug {
    /// The event was handled; it must not be delivered to this group again
    /// — except after a crash: a backend may settle locally, return, and
    /// tell the broker in a later batch, and acks not yet sent when the
    /// process dies are lost, so those events come again (in order, for a
    /// backend with [`ordering_per_key`](crate::Capabilities::ordering_per_key)).
    /// At least once either way: consumers deduplicate by event id.
    async fn ack(self: Box<Self>) -> Result<(), EventError>;

    /// The event was not handled; deliver it again (to any consumer of the
    /// group) after `delay`, or as soon as possible.
    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<(), EventError>;

    /// The delivery was dropped unsettled (a crashed or cancelled handler).
    /// Must count as a `nack` without delay — at once, or for brokers after
    /// their ack deadline. Called from `Drop`, so it must not block.
    fn abandon(self: Box<Self>);
}

/// One event handed to one consumer, to be settled with [`Delivery::ack`]
/// or [`Delivery::nack`]. Dropping it unsettled counts as a nack.
#[derive(Debug)]
pub struct Delivery {
    event: Arc<Event>,
    topic: Arc<str>,
    attempt: u32,
    acker: Option<Box<dyn Acknowledger>>,
}

impl Delivery {
    /// A delivery of `event` from `topic`; `attempt` counts from 1.
    pub fn new(
        event: Arc<Event>,
        topic: Arc<str>,
        attempt: u32,
        acker: Box<dyn Acknowledger>,
    ) -> Self {
        Self {
            event,
            topic,
            attempt: attempt.max(1),
            acker: Some(acker),
        }
    }

    /// The event.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The event, shared.
    pub fn shared_event(&self) -> Arc<Event> {
        Arc::clone(&self.event)
    }

    /// The topic it was published to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Which delivery of this event to this group this is: 1 the first time,
    /// 2 after one nack or abandoned delivery, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Marks the event handled.
    ///
    /// `Ok` may come before the broker has recorded it (the NATS and Redis
    /// backends send acks in batches): a crash before the next batch
    /// delivers the event again. Deduplicate by [`Event::id`].
    ///
    /// # Errors
    /// A backend error; the event may then be delivered again.
    pub async fn ack(mut self) -> Result<(), EventError> {
        match self.acker.take() {
            Some(acker) => acker.ack().await,
            None => Ok(()),
        }
    }

    /// Asks for redelivery, after `delay` if given.
    ///
    /// # Errors
    /// A backend error; [`EventError::Unsupported`] if the backend cannot
    /// delay and `delay` is set.
    pub async fn nack(mut self, delay: Option<Duration>) -> Result<(), EventError> {
        match self.acker.take() {
            Some(acker) => acker.nack(delay).await,
            None => Ok(()),
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(acker) = self.acker.take() {
            acker.abandon();
        }
    }
}

/// The receiving side of a backend's subscription. Implemented by backends,
/// used through [`Subscription`].
#[async_trait]
pub trait DeliveryStream: Send + fmt::Debug {
    /// The next delivery; `None` once the subscription or the bus is closed.
    async fn next_delivery(&mut self) -> Option<Result<Delivery, EventError>>;

    /// Stops receiving. Deliveries already handed out can still be settled;
    /// for a group, everything not yet acknowledged stays with the group.
    async fn close(&mut self) {}
}

/// A live subscription: a receiver of [`Delivery`]s.
#[derive(Debug)]
pub struct Subscription {
    inner: Box<dyn DeliveryStream>,
}

impl Subscription {
    /// Wraps a backend's stream.
    pub fn new(inner: Box<dyn DeliveryStream>) -> Self {
        Self { inner }
    }

    /// Waits for the next delivery; `None` once closed.
    pub async fn next(&mut self) -> Option<Result<Delivery, EventError>> {
        self.inner.next_delivery().await
    }

    /// Closes the subscription (dropping it does the same, without waiting).
    pub async fn close(mut self) {
        self.inner.close().await;
    }
}
