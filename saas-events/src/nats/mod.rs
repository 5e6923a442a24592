//! The NATS JetStream backend (feature `nats`).
//!
//! - One stream per topic, created on first use, capturing the subjects
//!   `<prefix>.p<N>.<topic>.<tenant>` (`_` for tenant-less events), so a
//!   tenant filter is a subject filter evaluated by the server. `N` is the
//!   event's partition among [`NatsConfig::partitions`]: the hash of its
//!   partition key (the key set, else the tenant; events with neither
//!   all go to partition 0, keeping their order).
//! - Publishing waits for the stream's ack; the `Nats-Msg-Id` header is the
//!   event id, so a publish retried within the duplicate window is stored
//!   once.
//! - A consumer group is one durable pull consumer per partition
//!   (`o_<group>-<tenant|all>-p<N>`, cumulative acks, at most 512
//!   unacknowledged messages), read only by the group member holding the
//!   partition's lease. Members heartbeat and lease partitions in a
//!   key-value bucket per prefix (`<prefix>_leases`, whose `max_age` is
//!   [`NatsConfig::lease_ttl`]; nats-server 2.9 has no per-key TTL); the
//!   partitions are dealt round the live members, and a member nobody
//!   polls for a second gives its partitions to the others. A private
//!   subscription is the same with ephemeral consumers it owns outright,
//!   deleted when closed.
//! - The holder fetches a batch per partition (no waiting on the server,
//!   pausing 5–80 ms when every partition is empty) and hands a
//!   partition's events out one at a time, the next once the previous is
//!   settled, while events of different partitions may be in hand at once:
//!   each key's events are handled in publish order, nacks included.
//! - `ack` settles locally and returns; one cumulative ack per partition
//!   goes to the server in the next batch. Acks not yet sent when a
//!   process dies are lost: those events are delivered again, in order.
//!   `nack(delay)` redelivers locally after the delay with the attempt
//!   number increased (the partition waits meanwhile); a dropped delivery
//!   is a nack. The attempt number is JetStream's delivery count plus
//!   local redeliveries; a message fetched but not yet handed out when its
//!   partition moves to another member counts one delivery more.
//! - Closing (or dropping) a subscription acks what was settled, naks
//!   what it held so the next holder gets it at once, and frees its
//!   leases; a partition whose delivery is still in the caller's hands is
//!   kept until it is settled, or for [`NatsConfig::ack_wait`]. A member
//!   that dies keeps its partitions for the lease TTL; the next holder
//!   then remakes the durable from its ack floor, so the partition resumes
//!   in order (attempt numbers of those messages start again at 1).
//!
//! The encoded event (JSON, binary data base64-encoded) must fit the
//! server's `max_payload` (1 MB unless configured up to 64 MB); a larger
//! one fails with [`EventError::PayloadTooLarge`] carrying the server's
//! limit. With the default server setting a 1 MiB payload does not fit, so
//! raise `max_payload` on the server to carry 1 MiB events.
//!
//! Streams made by earlier versions (subjects `<prefix>.<topic>.<tenant>`)
//! are switched to the partitioned subjects on first use; messages stored
//! under the old subjects are not delivered to the new consumers. Groups
//! made by versions with one unsettled message per partition (durables
//! `g_…`; an ack policy cannot be changed in place) get new durables
//! starting after the old ones' ack floors; stop a group's old consumers
//! before starting new ones, and delete the `g_…` durables afterwards.

mod consumer;
mod leases;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use bytes::Bytes;
use saas_core::{SharedClock, SystemClock};

use crate::delivery::Subscription;
use crate::envelope::{DEFAULT_MAX_PAYLOAD_BYTES, Event};
use crate::error::EventError;
use crate::names::validate_name;
use crate::partition::partition_of;
use crate::traits::{Capabilities, Publisher, SubscribeOptions, Subscriber};

/// Publishes of one batch sent ahead of their acks.
const ACK_WINDOW: usize = 1_000;

pub(crate) fn nats_error(retryable: bool, error: impl Into<crate::BoxError>) -> EventError {
    EventError::Backend {
        backend: "nats",
        retryable,
        source: error.into(),
    }
}

/// Settings of a [`NatsBus`].
#[derive(Clone)]
#[non_exhaustive]
pub struct NatsConfig {
    /// Prefix of subjects (`<prefix>.<topic>.<tenant>`) and stream names
    /// (default `saas_events`; letters, digits, `_` and `-`).
    pub prefix: String,
    /// How long a message may stay unacknowledged before JetStream
    /// redelivers it (default 30 s); a partition's holder ignores
    /// redeliveries of messages it still holds. Also how long a closed
    /// subscription keeps a partition whose delivery is still in hand.
    pub ack_wait: Duration,
    /// The window in which a repeated event id is dropped (default 2 min).
    pub duplicate_window: Duration,
    /// Largest payload accepted (default 1 MiB; the server's `max_payload`
    /// must fit the encoded event).
    pub max_payload_bytes: usize,
    /// Partitions per topic (default 4): how many keys a group works on in
    /// parallel, and durable consumers per group on the server. Changing
    /// it for a topic with unsettled messages moves keys between
    /// partitions, so their order holds only from then on.
    pub partitions: u16,
    /// How long a group member's partition leases and heartbeat last
    /// unless renewed (default 5 s): how long a crashed member's
    /// partitions wait before another member takes them over. It is the
    /// `max_age` of the prefix's lease bucket, fixed when the bucket is
    /// made; an existing bucket's own value wins.
    pub lease_ttl: Duration,
    /// Stamps events published without a time.
    pub clock: SharedClock,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            prefix: "saas_events".to_owned(),
            ack_wait: Duration::from_secs(30),
            duplicate_window: Duration::from_secs(120),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            partitions: 4,
            lease_ttl: Duration::from_secs(5),
            clock: Arc::new(SystemClock),
        }
    }
}

impl NatsConfig {
    /// Sets the prefix.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] unless it is 1–32 ASCII letters, digits,
    /// `_` or `-`.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, EventError> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(EventError::InvalidName {
                name: prefix.chars().take(32).collect(),
                reason: "a prefix is 1-32 ASCII letters, digits, `_` or `-`",
            });
        }
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    /// Sets the ack wait.
    pub fn with_ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// Sets the payload limit.
    pub fn with_max_payload_bytes(mut self, limit: usize) -> Self {
        self.max_payload_bytes = limit;
        self
    }

    /// Sets the number of partitions per topic (at least 1).
    pub fn with_partitions(mut self, partitions: u16) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// Sets the lease TTL (at least 100 ms).
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(100));
        self
    }
}

/// The subject of `topic`'s partition `partition` for `tenant` (a tenant id,
/// `_` for none, or `*` in a filter). The partition comes before the topic:
/// topics may contain dots, and a partition after them would let the
/// subjects of topic `a` (`p.a.*.*`) overlap those of topic `a.b`.
fn partition_subject(prefix: &str, partition: u16, topic: &str, tenant: &str) -> String {
    format!("{prefix}.p{partition}.{topic}.{tenant}")
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("prefix", &self.prefix)
            .field("ack_wait", &self.ack_wait)
            .field("duplicate_window", &self.duplicate_window)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("partitions", &self.partitions)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    config: NatsConfig,
    streams: Mutex<HashSet<String>>,
}

/// A [`Publisher`] and [`Subscriber`] on NATS JetStream. Clones share the
/// connection.
///
/// ```no_run
/// use saas_events::nats::{NatsBus, NatsConfig};
/// use saas_events::{Event, Publisher, SubscribeOptions, Subscriber};
///
/// # async fn run() -> Result<(), saas_events::EventError> {
/// let bus = NatsBus::connect("nats://127.0.0.1:4222", NatsConfig::default()).await?;
/// let mut sub = bus.subscribe("orders", SubscribeOptions::new().with_group("mailer")).await?;
/// bus.publish("orders", Event::new(None, "order.placed", "/shop", &42)?).await?;
/// if let Some(delivery) = sub.next().await {
///     delivery?.ack().await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct NatsBus {
    inner: Arc<Inner>,
}

impl NatsBus {
    /// Connects to the server at `url`.
    ///
    /// # Errors
    /// A retryable backend error if the server cannot be reached.
    pub async fn connect(url: &str, config: NatsConfig) -> Result<Self, EventError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| nats_error(true, e))?;
        Ok(Self::new(client, config))
    }

    /// Uses an existing client.
    pub fn new(client: async_nats::Client, config: NatsConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                js: jetstream::new(client.clone()),
                client,
                config,
                streams: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// The JetStream stream holding `topic` (for inspection and cleanup).
    pub fn stream_name(&self, topic: &str) -> String {
        // A bijective escape: `_` → `__`, `.` → `_d`; stream names may not
        // contain dots.
        let mut name = format!("{}_", self.inner.config.prefix);
        for c in topic.chars() {
            match c {
                '_' => name.push_str("__"),
                '.' => name.push_str("_d"),
                c => name.push(c),
            }
        }
        name
    }

    fn subject(&self, topic: &str, event: &Event) -> String {
        let tenant = event
            .tenant_id()
            .map_or_else(|| "_".to_owned(), |t| t.simple());
        let config = &self.inner.config;
        let partition = partition_of(event, config.partitions);
        partition_subject(&config.prefix, partition, topic, &tenant)
    }

    async fn stream(&self, topic: &str) -> Result<stream::Stream, EventError> {
        let name = self.stream_name(topic);
        let wanted = stream::Config {
            name: name.clone(),
            subjects: vec![format!("{}.*.{topic}.*", self.inner.config.prefix)],
            duplicate_window: self.inner.config.duplicate_window,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let mut stream = self
            .inner
            .js
            .get_or_create_stream(wanted.clone())
            .await
            .map_err(|e| nats_error(true, e))?;
        if stream.cached_info().config.subjects != wanted.subjects {
            // A stream of an earlier version: switch it to the partitioned
            // subjects, keeping its other settings.
            let mut updated = stream.cached_info().config.clone();
            updated.subjects = wanted.subjects;
            self.inner
                .js
                .update_stream(updated)
                .await
                .map_err(|e| nats_error(true, e))?;
            stream = self
                .inner
                .js
                .get_stream(&name)
                .await
                .map_err(|e| nats_error(true, e))?;
        }
        self.inner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name);
        Ok(stream)
    }

    async fn ensure_stream(&self, topic: &str) -> Result<(), EventError> {
        let known = self
            .inner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&self.stream_name(topic));
        if !known {
            self.stream(topic).await?;
        }
        Ok(())
    }

    /// Deletes the stream of `topic` with its consumers and messages.
    ///
    /// # Errors
    /// A backend error (a missing stream is not one).
    pub async fn delete_topic(&self, topic: &str) -> Result<(), EventError> {
        validate_name(topic)?;
        let name = self.stream_name(topic);
        self.inner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&name);
        match self.inner.js.delete_stream(&name).await {
            Ok(_) => Ok(()),
            // Already gone is fine; anything else is reported.
            Err(e) if self.inner.js.get_stream(&name).await.is_ok() => Err(nats_error(true, e)),
            Err(_) => Ok(()),
        }
    }

    fn encode(
        &self,
        topic: &str,
        mut event: Event,
    ) -> Result<(String, async_nats::HeaderMap, Bytes), EventError> {
        event.check_payload_size(self.inner.config.max_payload_bytes)?;
        event.stamp_time(&*self.inner.config.clock);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id());
        let subject = self.subject(topic, &event);
        let body = event.to_json()?;
        // The server refuses messages over its `max_payload` (1 MB by
        // default): say so in the crate's terms, before sending anything.
        let server_limit = self.inner.client.max_payload();
        if server_limit > 0 && body.len() > server_limit {
            return Err(EventError::PayloadTooLarge {
                size: body.len(),
                limit: server_limit,
            });
        }
        Ok((subject, headers, Bytes::from(body)))
    }
}

#[async_trait]
impl Publisher for NatsBus {
    async fn publish(&self, topic: &str, event: Event) -> Result<(), EventError> {
        self.publish_batch(topic, vec![event]).await
    }

    /// Sends every event before waiting for the acks (one connection keeps
    /// them in order).
    async fn publish_batch(&self, topic: &str, events: Vec<Event>) -> Result<(), EventError> {
        validate_name(topic)?;
        let mut encoded = Vec::with_capacity(events.len());
        for event in events {
            encoded.push(self.encode(topic, event)?);
        }
        self.ensure_stream(topic).await?;
        let mut acks: std::collections::VecDeque<jetstream::context::PublishAckFuture> =
            std::collections::VecDeque::with_capacity(encoded.len().min(ACK_WINDOW));
        for (subject, headers, body) in encoded {
            // The client admits a bounded number of publishes awaiting
            // their ack (5,000 by default) and a publish past it waits
            // for one: await the oldest ack first, or a large batch
            // would wait for acks it never awaits.
            if acks.len() >= ACK_WINDOW
                && let Some(oldest) = acks.pop_front()
            {
                oldest.await.map_err(|e| nats_error(true, e))?;
            }
            let ack = self
                .inner
                .js
                .publish_with_headers(subject, headers, body)
                .await
                .map_err(|e| nats_error(true, e))?;
            acks.push_back(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| nats_error(true, e))?;
        }
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(&self.inner.config)
    }
}

fn capabilities(config: &NatsConfig) -> Capabilities {
    Capabilities {
        ordering_per_key: true,
        consumer_groups: true,
        persistence: true,
        delayed_delivery: true,
        replay: true,
        max_payload_bytes: config.max_payload_bytes,
    }
}

#[async_trait]
impl Subscriber for NatsBus {
    async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, EventError> {
        validate_name(topic)?;
        if let Some(group) = &options.group {
            validate_name(group)?;
        }
        let stream = self.stream(topic).await?;
        let target = consumer::Target {
            js: &self.inner.js,
            config: &self.inner.config,
            stream,
            stream_name: self.stream_name(topic),
            topic,
        };
        consumer::subscribe(target, options).await
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(&self.inner.config)
    }
}
