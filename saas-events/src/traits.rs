//! The publisher and subscriber traits every backend implements.

use std::fmt;

use async_trait::async_trait;
use saas_core::TenantId;

use crate::delivery::Subscription;
use crate::envelope::{DEFAULT_MAX_PAYLOAD_BYTES, Event};
use crate::error::EventError;
use crate::receipt::PublishReceipt;

/// What a backend can do beyond the contract every backend keeps.
///
/// Every backend delivers at least once, supports `nack` and honours tenant
/// filters; these flags describe the rest. Conformance tests for an ability
/// a backend lacks are skipped with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Events with the same partition key reach a group in publish order,
    /// and the next one is not delivered before the previous is settled.
    pub ordering_per_key: bool,
    /// Named consumer groups ([`SubscribeOptions::with_group`]).
    pub consumer_groups: bool,
    /// Published events survive a restart of the process or broker.
    pub persistence: bool,
    /// `nack(Some(delay))` waits at least `delay` before redelivery.
    pub delayed_delivery: bool,
    /// A new group can start from retained history ([`StartFrom::Earliest`]).
    pub replay: bool,
    /// The largest payload accepted, in bytes.
    pub max_payload_bytes: usize,
}

impl Default for Capabilities {
    /// Nothing optional, and a 1 MiB payload limit.
    fn default() -> Self {
        Self {
            ordering_per_key: false,
            consumer_groups: false,
            persistence: false,
            delayed_delivery: false,
            replay: false,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }
}

/// Where a new consumer group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartFrom {
    /// Events published after the subscription was made.
    #[default]
    Latest,
    /// The oldest event the backend retains (needs [`Capabilities::replay`]).
    Earliest,
}

/// How to subscribe: consumer group, tenant filter, start position.
///
/// ```
/// use saas_core::TenantId;
/// use saas_events::SubscribeOptions;
///
/// let options = SubscribeOptions::new().with_group("invoicing").with_tenant(TenantId::new());
/// assert_eq!(options.group.as_deref(), Some("invoicing"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// The consumer group; `None` for a private subscription that sees every
    /// event and whose state ends when it is closed.
    pub group: Option<String>,
    /// Only events of this tenant are delivered.
    pub tenant: Option<TenantId>,
    /// Where a new group starts (an existing durable group resumes where it
    /// was, whatever this says).
    pub start: StartFrom,
}

impl SubscribeOptions {
    /// A private subscription to every tenant's events, from now on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Joins (or creates) the named consumer group.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Receives only `tenant`'s events.
    pub fn with_tenant(mut self, tenant: TenantId) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// Sets where a new group starts.
    pub fn starting_from(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }
}

/// Publishes events to topics.
///
/// Implemented by every backend; `Arc<dyn Publisher>` is the usual handle.
#[async_trait]
pub trait Publisher: Send + Sync + fmt::Debug {
    /// Publishes one event to `topic` (created on first use).
    ///
    /// Contract (checked by the conformance suite):
    /// - `Ok` means the event is accepted: every subscription and consumer
    ///   group on `topic` that exists when `publish` returns and whose tenant
    ///   filter matches receives it at least once. Delivery may repeat;
    ///   consumers deduplicate by [`Event::id`].
    /// - Events published one after the other by one caller with one
    ///   partition key are delivered in that order where
    ///   [`Capabilities::ordering_per_key`] holds.
    /// - An event without a time gets one from the publisher's clock.
    /// - The event is delivered unchanged: all attributes, extensions and
    ///   the payload round-trip.
    /// - A payload over [`Capabilities::max_payload_bytes`] fails with
    ///   [`EventError::PayloadTooLarge`] and nothing is published; a bad
    ///   topic name with [`EventError::InvalidName`]; a closed publisher with
    ///   [`EventError::Closed`].
    async fn publish(&self, topic: &str, event: Event) -> Result<(), EventError>;

    /// Publishes events in order, as `publish` would one by one.
    ///
    /// Every event is checked (size, topic) before any is published, so a
    /// rejected batch publishes nothing. A backend failure half-way may
    /// leave a prefix published; retrying the batch then repeats it, which
    /// at-least-once consumers tolerate.
    async fn publish_batch(&self, topic: &str, events: Vec<Event>) -> Result<(), EventError> {
        let limit = self.capabilities().max_payload_bytes;
        crate::names::validate_name(topic)?;
        for event in &events {
            event.check_payload_size(limit)?;
        }
        for event in events {
            self.publish(topic, event).await?;
        }
        Ok(())
    }

    /// Publishes events in order, as [`Publisher::publish_batch`] does, and
    /// returns a receipt saying when they no longer depend on the caller's
    /// copy.
    ///
    /// An outbox relay deletes its rows only once the receipt is
    /// [confirmed](PublishReceipt::confirmed), so "relayed at least once"
    /// holds up to the consumer whatever sits between them. The default
    /// publishes the batch and returns a [settled](PublishReceipt::settled)
    /// receipt: right for a backend with
    /// [`persistence`](Capabilities::persistence), where accepting is
    /// storing. A backend that keeps events only in memory overrides it to
    /// confirm once every receiving group has acknowledged them.
    ///
    /// Publishing again events a group still holds from an earlier tracked
    /// publication (same [`Event::id`]) must not queue them twice there; the
    /// new receipt waits for the copy already held.
    async fn publish_tracked(
        &self,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<PublishReceipt, EventError> {
        self.publish_batch(topic, events).await?;
        Ok(PublishReceipt::settled())
    }

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;
}

/// Subscribes to topics.
///
/// Implemented by every backend; `Arc<dyn Subscriber>` is the usual handle.
#[async_trait]
pub trait Subscriber: Send + Sync + fmt::Debug {
    /// Subscribes to `topic`.
    ///
    /// Contract (checked by the conformance suite):
    /// - Every event published to `topic` after `subscribe` returns (or,
    ///   with [`StartFrom::Earliest`] on a new group, every retained one)
    ///   is delivered at least once, until the subscription is closed.
    /// - Without a group the subscription receives every event.
    /// - With a group, each event goes to one consumer of the group (and to
    ///   each group once); an event in flight with one consumer is not given
    ///   to another. A group outlives its consumers: events published while
    ///   none is connected, and deliveries left unsettled, are delivered
    ///   when a consumer joins again. The tenant filter is part of the
    ///   group's identity. Without [`Capabilities::consumer_groups`] a group
    ///   fails with [`EventError::Unsupported`].
    /// - With a tenant filter only that tenant's events are delivered —
    ///   never another tenant's, never tenant-less ones.
    /// - `nack`, or dropping a delivery unsettled, redelivers it (to any
    ///   consumer of the group) with the attempt number increased.
    /// - Topics are isolated: nothing published to one topic reaches
    ///   another.
    async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, EventError>;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;
}
