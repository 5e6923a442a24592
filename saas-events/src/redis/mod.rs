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
//! - Per-key order with parallel consumers: a group has at most one
//!   unsettled entry per partition. One Lua script checks the partition's
//!   pending list and reads its next entry (or takes over its pending one)
//!   as one atomic step, so two consumers cannot both read a partition;
//!   consumers of one group work on different partitions in parallel.
//! - A tenant filter is applied inside that script: entries of other
//!   tenants are acknowledged for that group on the server and never sent
//!   to the consuming process.
//! - The pending entry of a dead consumer is taken over (by the same
//!   script, with `XAUTOCLAIM`) once idle for the ack wait, before
//!   anything newer in its partition. `nack(delay)` hands the entry to a
//!   parking consumer with `XCLAIM … IDLE`, back-dated so it becomes
//!   claimable after `delay` — delays up to the ack wait are supported;
//!   it stays pending meanwhile, so its partition waits for it. The
//!   attempt number is Redis's delivery count.
//!
//! Durability is the server's: with `appendonly yes` and `appendfsync
//! always` an acknowledged publish survives a restart.

mod consumer;
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

/// The consumer name nacked entries are parked under.
pub(crate) const PARKING: &str = "saas-events-parking";

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
    /// How long an entry may stay unsettled before another consumer of the
    /// group takes it over (default 30 s); also the longest nack delay.
    pub ack_wait: Duration,
    /// Streams per topic (default 8): how many keys a group works on in
    /// parallel. Changing it for a topic with unsettled entries moves keys
    /// between partitions, so their order holds only from then on.
    pub partitions: u16,
    /// Largest payload accepted (default 1 MiB).
    pub max_payload_bytes: usize,
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
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("prefix", &self.prefix)
            .field("ack_wait", &self.ack_wait)
            .field("partitions", &self.partitions)
            .field("max_payload_bytes", &self.max_payload_bytes)
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
        consumer::subscribe(
            self.inner.config.clone(),
            reader,
            self.inner.conn.clone(),
            self.stream_keys(topic),
            topic,
            options,
        )
        .await
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(&self.inner.config)
    }
}
