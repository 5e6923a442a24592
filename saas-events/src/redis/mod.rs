//! The Redis Streams backend (feature `redis`).
//!
//! - Each topic is [`RedisConfig::partitions`] streams
//!   (`<prefix>:<topic>:p<N>`); an event goes to the partition of its
//!   partition key's hash (the key set, else the tenant; events with
//!   neither all to partition 0, keeping their order). Entries carry the tenant and the
//!   CloudEvents JSON. `publish_batch` is one pipeline.
//! - Every subscription is a consumer group (`XREADGROUP` / `XACK`) on
//!   every partition: a named group `g:<group>:<tenant|all>` outlives its
//!   consumers; a private subscription gets a group of its own, destroyed
//!   when it closes.
//! - Per-key order with parallel consumers: each partition is read only by
//!   the group member holding its lease (`<prefix>:<topic>:<group>:lease:p<N>`,
//!   `SET NX PX` [`RedisConfig::lease_ttl`], renewed and released by
//!   scripts that check the holder). Members heartbeat in a sorted set
//!   scored by expiry; the partitions are dealt round the live members,
//!   and a member nobody polls for a second gives its partitions to the
//!   others.
//! - The holder reads a batch of every partition it holds with one
//!   blocking `XREADGROUP` and hands a partition's events out one at a
//!   time, the next once the previous is settled, while events of
//!   different partitions may be in hand at once. A tenant filter is
//!   applied as entries are read: other tenants' entries are acknowledged
//!   for the group and never handed out.
//! - `ack` settles locally and returns; the settled ids go to the server
//!   in one `XACK` per partition in the next batch. Acks not yet sent
//!   when a process dies are lost: those entries are delivered again, in
//!   order. `nack(delay)` redelivers locally after the delay (any delay)
//!   with the attempt number increased; the partition waits meanwhile. A
//!   dropped delivery is a nack.
//! - A partition's new holder first claims (`XPENDING` + `XCLAIM`) every
//!   entry still pending there — a dead member's after its lease expired,
//!   or a closed one's at once — oldest first, each as its next attempt
//!   (Redis's delivery count).
//! - Closing (or dropping) a subscription acknowledges what was settled
//!   and frees its leases; a partition whose delivery is still in the
//!   caller's hands is kept until it is settled, or for
//!   [`RedisConfig::ack_wait`].
//!
//! Durability is the server's: with `appendonly yes` and `appendfsync
//! always` an acknowledged publish survives a restart.

mod consumer;
mod leases;
mod script;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use saas_core::{SharedClock, SystemClock};

use crate::delivery::Subscription;
use crate::envelope::{DEFAULT_MAX_PAYLOAD_BYTES, Event};
use crate::error::EventError;
use crate::names::validate_name;
use crate::partition::partition_of;
use crate::traits::{Capabilities, Publisher, SubscribeOptions, Subscriber};

pub(crate) fn redis_error(error: redis::RedisError) -> EventError {
    let retryable = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal();
    EventError::Backend {
        backend: "redis",
        retryable,
        source: Box::new(error),
    }
}

/// Connections wait up to 10 s for a reply (the client's default of
/// 0.5 s is short for pipelines of large events on a busy server).
fn connection_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)))
}

/// Settings of a [`RedisBus`].
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Key prefix (default `saas_events`).
    pub prefix: String,
    /// How long a closed subscription keeps a partition whose delivery is
    /// still in the caller's hands (default 30 s).
    pub ack_wait: Duration,
    /// Streams per topic (default 8): how many keys a group works on in
    /// parallel. Changing it for a topic with unsettled entries moves keys
    /// between partitions, so their order holds only from then on.
    pub partitions: u16,
    /// Largest payload accepted (default 1 MiB).
    pub max_payload_bytes: usize,
    /// How long a group member's partition leases and heartbeat last
    /// unless renewed (default 5 s): how long a crashed member's
    /// partitions wait before another member takes them over.
    pub lease_ttl: Duration,
    /// Stamps events published without a time.
    pub clock: SharedClock,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            prefix: "saas_events".to_owned(),
            ack_wait: Duration::from_secs(30),
            partitions: 8,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            lease_ttl: Duration::from_secs(5),
            clock: Arc::new(SystemClock),
        }
    }
}

impl RedisConfig {
    /// Sets the key prefix.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] unless it follows the topic name rules.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, EventError> {
        validate_name(prefix)?;
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    /// Sets the ack wait.
    pub fn with_ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
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

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("prefix", &self.prefix)
            .field("ack_wait", &self.ack_wait)
            .field("partitions", &self.partitions)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

struct Inner {
    client: redis::Client,
    conn: MultiplexedConnection,
    config: RedisConfig,
}

/// A [`Publisher`] and [`Subscriber`] on Redis Streams. Clones share the
/// connection.
///
/// ```no_run
/// use saas_events::redis::{RedisBus, RedisConfig};
/// use saas_events::{Event, Publisher, SubscribeOptions, Subscriber};
///
/// # async fn run() -> Result<(), saas_events::EventError> {
/// let bus = RedisBus::connect("redis://127.0.0.1:6379", RedisConfig::default()).await?;
/// let mut sub = bus.subscribe("orders", SubscribeOptions::new().with_group("mailer")).await?;
/// bus.publish("orders", Event::new(None, "order.placed", "/shop", &42)?).await?;
/// if let Some(delivery) = sub.next().await {
///     delivery?.ack().await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Connects to the server at `url`.
    ///
    /// # Errors
    /// A bad URL, or a retryable backend error if the server is down.
    pub async fn connect(url: &str, config: RedisConfig) -> Result<Self, EventError> {
        let client = redis::Client::open(url).map_err(redis_error)?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&connection_config())
            .await
            .map_err(redis_error)?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                conn,
                config,
            }),
        })
    }

    /// The stream key of `topic`'s partition `partition`.
    pub fn stream_key(&self, topic: &str, partition: u16) -> String {
        format!("{}:{topic}:p{partition}", self.inner.config.prefix)
    }

    /// The stream keys of every partition of `topic`.
    pub fn stream_keys(&self, topic: &str) -> Vec<String> {
        (0..self.inner.config.partitions.max(1))
            .map(|p| self.stream_key(topic, p))
            .collect()
    }

    /// Deletes the streams of `topic` with their groups.
    ///
    /// # Errors
    /// A backend error.
    pub async fn delete_topic(&self, topic: &str) -> Result<(), EventError> {
        validate_name(topic)?;
        let mut conn = self.inner.conn.clone();
        redis::cmd("DEL")
            .arg(self.stream_keys(topic))
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(redis_error)
    }
}

#[async_trait]
impl Publisher for RedisBus {
    async fn publish(&self, topic: &str, event: Event) -> Result<(), EventError> {
        self.publish_batch(topic, vec![event]).await
    }

    async fn publish_batch(&self, topic: &str, events: Vec<Event>) -> Result<(), EventError> {
        validate_name(topic)?;
        for event in &events {
            event.check_payload_size(self.inner.config.max_payload_bytes)?;
        }
        let mut pipe = redis::pipe();
        for mut event in events {
            event.stamp_time(&*self.inner.config.clock);
            let partition = partition_of(&event, self.inner.config.partitions);
            let tenant = event
                .tenant_id()
                .map_or_else(String::new, |t| t.to_string());
            pipe.cmd("XADD")
                .arg(self.stream_key(topic, partition))
                .arg("*")
                .arg("tenant")
                .arg(tenant)
                .arg("event")
                .arg(event.to_json()?)
                .ignore();
        }
        let mut conn = self.inner.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(redis_error)
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(&self.inner.config)
    }
}

fn capabilities(config: &RedisConfig) -> Capabilities {
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
impl Subscriber for RedisBus {
    async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, EventError> {
        validate_name(topic)?;
        if let Some(group) = &options.group {
            validate_name(group)?;
        }
        // Blocking reads get a connection of their own; settling shares
        // the bus's multiplexed one.
        let reader = self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&connection_config())
            .await
            .map_err(redis_error)?;
        let target = consumer::Target {
            config: self.inner.config.clone(),
            reader,
            conn: self.inner.conn.clone(),
            keys: self.stream_keys(topic),
            base: format!("{}:{topic}", self.inner.config.prefix),
        };
        consumer::subscribe(target, topic, options).await
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(&self.inner.config)
    }
}
