//! The RabbitMQ backend (feature `rabbitmq`), over AMQP 0-9-1 with
//! [`lapin`].
//!
//! - Each topic is a durable topic exchange `<prefix>.<topic>`. An event is
//!   published to it with routing key `t.<tenant id>` (`none` without a
//!   tenant), persistent, as its CloudEvents JSON (structured mode, so the
//!   event round-trips exactly), the event id as AMQP `message-id`.
//! - A consumer group is a durable quorum queue
//!   `<prefix>.<topic>.g.<group>.<tenant|all>` bound to the exchange: each
//!   group gets every event once, its members compete for them. A private
//!   subscription gets an exclusive queue `<prefix>.<topic>.p.<uuid>` of
//!   its own, deleted when it closes (and by the broker with its
//!   connection).
//! - A tenant filter is a binding: a tenant-scoped queue is bound with
//!   `t.<tenant id>` only, so the broker never routes another tenant's (or
//!   a tenant-less) event to it; the consumer checks the tenant again.
//! - Publisher confirms on every publish: `publish` and `publish_batch`
//!   return once the broker has confirmed every message (for a quorum
//!   queue: written to its log), so the default settled receipt of
//!   [`Publisher::publish_tracked`] is right.
//! - Consumers pull (`basic.get`) one message when asked for the next
//!   delivery, rather than `basic.consume`: a pushed consumer always holds
//!   prefetched messages, and an idle member of a group would keep events
//!   from the others. An empty queue is polled with a back-off up to
//!   [`RabbitMqConfig::poll_interval`].
//! - `ack` is `basic.ack`. `nack` on a group is `basic.nack(requeue)`;
//!   the quorum queue counts the redelivery (`x-delivery-count`), which
//!   gives the attempt number. A private (classic) queue counts nothing,
//!   so its nack republishes the message with the next attempt number in a
//!   header (`x-saas-attempt`), confirmed, then acks the original.
//! - `nack(Some(delay))` republishes the message, confirmed, to a delay
//!   queue `<queue>.d<milliseconds>` whose queue-wide TTL is the delay and
//!   whose dead-letter target is the original queue, then acks the
//!   original. One TTL per delay queue keeps expiry in order (RabbitMQ
//!   expires messages only at a queue's head). Delay queues of groups are
//!   quorum queues dead-lettering at least once; every delay queue expires
//!   a minute after its last use.
//! - Per-key order is not provided (competing members of a group share
//!   one queue), and not declared. Nor is replay: a queue holds only what
//!   was published after it was bound, so [`StartFrom::Earliest`] is
//!   refused for a new group (an existing one resumes, as the contract
//!   says).
//! - Reconnection: lapin does not reconnect by itself. The publisher and
//!   every subscription keep their own connection and open a new one (with
//!   back-off, redeclaring their exchange, queue and binding) when it is
//!   lost; a publish retries for up to [`RabbitMqConfig::reconnect_timeout`].
//!   A group's queue survives a broker restart; a private queue does not,
//!   so a private subscription misses what is published while the broker
//!   is down. Deliveries handed out before the loss can no longer be
//!   settled (the broker redelivers them).
//!
//! [`StartFrom::Earliest`]: crate::StartFrom::Earliest

mod consumer;
mod link;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use saas_core::{SharedClock, SystemClock};

use crate::delivery::Subscription;
use crate::envelope::{CLOUDEVENTS_JSON, DEFAULT_MAX_PAYLOAD_BYTES, Event};
use crate::error::EventError;
use crate::names::validate_name;
use crate::traits::{Capabilities, Publisher, StartFrom, SubscribeOptions, Subscriber};

use link::{Live, PublishLink};

/// The header carrying the attempt number of a republished message.
pub(crate) const ATTEMPT_HEADER: &str = "x-saas-attempt";

/// Maps a lapin error; connection and channel losses are retryable, the
/// broker refusing an operation (a soft error) is not.
pub(crate) fn amqp_error(error: lapin::Error) -> EventError {
    use lapin::ErrorKind;
    let retryable = error.is_amqp_hard_error()
        || matches!(
            error.kind(),
            ErrorKind::IOError(_)
                | ErrorKind::InvalidConnectionState(_)
                | ErrorKind::InvalidChannelState(..)
                | ErrorKind::InvalidChannel(_)
                | ErrorKind::MissingHeartbeatError
                | ErrorKind::ChannelsLimitReached
        );
    EventError::Backend {
        backend: "rabbitmq",
        retryable,
        source: Box::new(error),
    }
}

/// A backend error of this crate's own making.
pub(crate) fn rabbit_error(retryable: bool, message: &str) -> EventError {
    EventError::Backend {
        backend: "rabbitmq",
        retryable,
        source: message.to_owned().into(),
    }
}

/// Settings of a [`RabbitMqBus`].
#[derive(Clone)]
#[non_exhaustive]
pub struct RabbitMqConfig {
    /// Prefix of every exchange and queue name (default `saas_events`).
    pub prefix: String,
    /// How long a publish keeps retrying while the broker is unreachable,
    /// and how long a subscription reconnects before reporting an error
    /// (it keeps trying after that). Default 30 s.
    pub reconnect_timeout: Duration,
    /// The longest pause between two looks at an empty queue (default
    /// 100 ms); the pause starts at 1 ms and doubles while the queue stays
    /// empty.
    pub poll_interval: Duration,
    /// Largest payload accepted (default 1 MiB).
    pub max_payload_bytes: usize,
    /// Stamps events published without a time.
    pub clock: SharedClock,
}

impl Default for RabbitMqConfig {
    fn default() -> Self {
        Self {
            prefix: "saas_events".to_owned(),
            reconnect_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            clock: Arc::new(SystemClock),
        }
    }
}

impl RabbitMqConfig {
    /// Sets the name prefix.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] unless it follows the topic name rules.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, EventError> {
        validate_name(prefix)?;
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    /// Sets how long to keep reconnecting before reporting an error.
    pub fn with_reconnect_timeout(mut self, timeout: Duration) -> Self {
        self.reconnect_timeout = timeout;
        self
    }

    /// Sets the longest pause between polls of an empty queue (at least
    /// 1 ms).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Sets the largest payload accepted.
    pub fn with_max_payload_bytes(mut self, limit: usize) -> Self {
        self.max_payload_bytes = limit;
        self
    }

    /// The exchange of `topic`.
    fn exchange(&self, topic: &str) -> String {
        format!("{}.{topic}", self.prefix)
    }
}

impl fmt::Debug for RabbitMqConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqConfig")
            .field("prefix", &self.prefix)
            .field("reconnect_timeout", &self.reconnect_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .finish_non_exhaustive()
    }
}

/// The routing key of `event`: its tenant, which bindings filter on.
fn routing_key(event: &Event) -> String {
    event
        .tenant_id()
        .map_or_else(|| "none".to_owned(), |t| format!("t.{t}"))
}

pub(crate) struct Inner {
    /// Holds the password: never printed.
    url: String,
    config: RabbitMqConfig,
    link: PublishLink,
}

/// A [`Publisher`] and [`Subscriber`] on RabbitMQ. Clones share the
/// publishing connection; each subscription has a connection of its own.
///
/// ```no_run
/// use saas_events::rabbitmq::{RabbitMqBus, RabbitMqConfig};
/// use saas_events::{Event, Publisher, SubscribeOptions, Subscriber};
///
/// # async fn run() -> Result<(), saas_events::EventError> {
/// let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// let bus = RabbitMqBus::connect(url, RabbitMqConfig::default()).await?;
/// let mut sub = bus.subscribe("orders", SubscribeOptions::new().with_group("mailer")).await?;
/// bus.publish("orders", Event::new(None, "order.placed", "/shop", &42)?).await?;
/// if let Some(delivery) = sub.next().await {
///     delivery?.ack().await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RabbitMqBus {
    inner: Arc<Inner>,
}

impl fmt::Debug for RabbitMqBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqBus")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl RabbitMqBus {
    /// Connects to the broker at `url` (`amqp://user:password@host:port/vhost`).
    ///
    /// # Errors
    /// A bad URL or refused credentials, or a retryable backend error if
    /// the broker is down.
    pub async fn connect(url: &str, config: RabbitMqConfig) -> Result<Self, EventError> {
        let link = PublishLink::default();
        // Connect now, so a wrong URL fails here rather than on first use.
        link.channel(url).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                config,
                link,
            }),
        })
    }

    /// The exchange `topic` is published to.
    pub fn exchange_name(&self, topic: &str) -> String {
        self.inner.config.exchange(topic)
    }

    /// The queue of consumer group `group` on `topic` (scoped to `tenant`,
    /// if any).
    pub fn group_queue_name(
        &self,
        topic: &str,
        group: &str,
        tenant: Option<saas_core::TenantId>,
    ) -> String {
        let scope = tenant.map_or_else(|| "all".to_owned(), |t| t.to_string());
        format!("{}.g.{group}.{scope}", self.inner.config.exchange(topic))
    }

    /// Deletes the listed queues (with what they hold) and the exchange of
    /// `topic`.
    ///
    /// # Errors
    /// A backend error.
    pub async fn delete_topic(&self, topic: &str, queues: &[String]) -> Result<(), EventError> {
        validate_name(topic)?;
        let channel = self
            .inner
            .link
            .channel(&self.inner.url)
            .await?
            .channel
            .clone();
        for queue in queues {
            channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await
                .map_err(amqp_error)?;
        }
        channel
            .exchange_delete(self.exchange_name(topic).into(), Default::default())
            .await
            .map_err(amqp_error)
    }
}

/// One message to publish.
pub(crate) struct Outgoing {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) message_id: String,
    pub(crate) body: Vec<u8>,
    /// `Some(n)` marks a republished message whose next attempt is `n`.
    pub(crate) attempt: Option<u32>,
}

fn properties(message: &Outgoing) -> BasicProperties {
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(CLOUDEVENTS_JSON.into())
        .with_message_id(message.message_id.as_str().into());
    if let Some(attempt) = message.attempt {
        let mut headers = FieldTable::default();
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(attempt));
        properties = properties.with_headers(headers);
    }
    properties
}

/// Publishes `messages` on one channel and awaits every confirm.
async fn publish_once(
    live: &Live,
    messages: &[Outgoing],
    declare: Option<&str>,
) -> Result<(), EventError> {
    if let Some(exchange) = declare {
        live.declare_exchange(exchange).await?;
    }
    let channel = &live.channel;
    let mut confirms = Vec::with_capacity(messages.len());
    for message in messages {
        let confirm = channel
            .basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &message.body,
                properties(message),
            )
            .await
            .map_err(amqp_error)?;
        confirms.push(confirm);
    }
    for confirm in confirms {
        let confirmation = confirm.await.map_err(amqp_error)?;
        if confirmation.is_nack() {
            // The broker could not store it (an internal error of a queue):
            // worth another try.
            return Err(rabbit_error(
                true,
                "the broker refused to confirm a message",
            ));
        }
    }
    Ok(())
}

/// Publishes already encoded messages and waits for the broker to confirm
/// all of them, reconnecting and retrying the whole lot for up to the
/// reconnect timeout (a retry may repeat a prefix: at least once).
pub(crate) async fn publish_confirmed(
    inner: &Inner,
    messages: &[Outgoing],
    declare: Option<&str>,
) -> Result<(), EventError> {
    let deadline = tokio::time::Instant::now() + inner.config.reconnect_timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        let outcome = match inner.link.channel(&inner.url).await {
            Ok(live) => {
                let outcome = publish_once(&live, messages, declare).await;
                if outcome.is_err() {
                    inner.link.forget_if_broken(&live).await;
                }
                outcome
            }
            Err(error) => Err(error),
        };
        match outcome {
            Err(error) if error.is_retryable() && tokio::time::Instant::now() < deadline => {
                tracing::debug!(%error, "RabbitMQ publish failed; reconnecting");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            outcome => return outcome,
        }
    }
}

/// Declares the delay queue of `queue` for `delay`, dead-lettering back
/// into it, and returns its name.
pub(crate) async fn declare_delay_queue(
    inner: &Inner,
    queue: &str,
    durable: bool,
    delay: Duration,
) -> Result<String, EventError> {
    // Rounded up to a power of two of milliseconds: backoffs with jitter
    // ask for a different delay almost every time, and a queue per exact
    // delay would leave the broker with thousands of them. The delay is
    // never shorter than asked, at most twice as long.
    let millis = u32::try_from(delay.as_millis())
        .ok()
        .and_then(|ms| ms.max(1).checked_next_power_of_two())
        .ok_or(EventError::Unsupported {
            operation: "a nack delay longer than 24 days",
        })?;
    let name = format!("{queue}.d{millis}");
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongUInt(millis));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(queue.into()),
    );
    // Unused for a minute past its TTL: nothing left in it to move.
    args.insert(
        "x-expires".into(),
        AMQPValue::LongUInt(millis.saturating_add(60_000)),
    );
    if durable {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        // Quorum queues dead-letter at least once only with these two.
        args.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
    }
    let options = QueueDeclareOptions {
        durable,
        ..QueueDeclareOptions::default()
    };
    let deadline = tokio::time::Instant::now() + inner.config.reconnect_timeout;
    loop {
        let live = inner.link.channel(&inner.url).await?;
        match live
            .channel
            .queue_declare(name.as_str().into(), options, args.clone())
            .await
        {
            Ok(_) => return Ok(name),
            Err(error) => {
                inner.link.forget_if_broken(&live).await;
                let error = amqp_error(error);
                if !error.is_retryable() || tokio::time::Instant::now() >= deadline {
                    return Err(error);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[async_trait]
impl Publisher for RabbitMqBus {
    async fn publish(&self, topic: &str, event: Event) -> Result<(), EventError> {
        self.publish_batch(topic, vec![event]).await
    }

    async fn publish_batch(&self, topic: &str, events: Vec<Event>) -> Result<(), EventError> {
        validate_name(topic)?;
        let config = &self.inner.config;
        for event in &events {
            event.check_payload_size(config.max_payload_bytes)?;
        }
        let exchange = config.exchange(topic);
        let mut messages = Vec::with_capacity(events.len());
        for mut event in events {
            event.stamp_time(&*config.clock);
            messages.push(Outgoing {
                exchange: exchange.clone(),
                routing_key: routing_key(&event),
                message_id: event.id().to_owned(),
                body: event.to_json()?,
                attempt: None,
            });
        }
        if messages.is_empty() {
            return Ok(());
        }
        publish_confirmed(&self.inner, &messages, Some(&exchange)).await
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(&self.inner.config)
    }
}

fn capabilities(config: &RabbitMqConfig) -> Capabilities {
    Capabilities {
        ordering_per_key: false,
        consumer_groups: true,
        persistence: true,
        delayed_delivery: true,
        replay: false,
        max_payload_bytes: config.max_payload_bytes,
    }
}

#[async_trait]
impl Subscriber for RabbitMqBus {
    async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, EventError> {
        validate_name(topic)?;
        if let Some(group) = &options.group {
            validate_name(group)?;
        }
        let queue = match &options.group {
            Some(group) => self.group_queue_name(topic, group, options.tenant),
            None => format!(
                "{}.p.{}",
                self.inner.config.exchange(topic),
                uuid::Uuid::now_v7().simple()
            ),
        };
        // An existing group resumes where it was, whatever the start says;
        // only a new one would need history.
        if options.start == StartFrom::Earliest
            && (options.group.is_none() || !link::queue_exists(&self.inner.url, &queue).await?)
        {
            return Err(EventError::Unsupported {
                operation: "StartFrom::Earliest for a new RabbitMQ queue (queues keep no history)",
            });
        }
        consumer::subscribe(Arc::clone(&self.inner), topic, queue, options).await
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(&self.inner.config)
    }
}
