//! Subscriptions: a queue of their own or their group's, pulled one
//! message at a time, reconnected when the broker goes away.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use saas_core::TenantId;

use super::link::{declare_exchange, open, usable};
use super::{ATTEMPT_HEADER, Inner, Outgoing, amqp_error, declare_delay_queue, publish_confirmed};
use crate::delivery::{Acknowledger, Delivery, DeliveryStream, Subscription};
use crate::envelope::Event;
use crate::error::EventError;
use crate::traits::SubscribeOptions;

/// The longest a single `basic.get` may take before the connection is
/// taken for lost (a broker that vanished without closing it).
const GET_TIMEOUT: Duration = Duration::from_secs(30);

/// The first pause after finding the queue empty.
const FIRST_PAUSE: Duration = Duration::from_millis(1);

/// What a subscription consumes from, redeclared on every connection.
#[derive(Debug)]
struct Spec {
    exchange: String,
    queue: String,
    /// `#` for every tenant, else `t.<tenant id>`.
    binding: String,
    /// A group's durable quorum queue, or a private exclusive one.
    group: bool,
}

/// A subscription's connection. Deliveries keep it alive until they are
/// settled; lapin closes it when the last handle goes (and the broker
/// deletes a private queue with it, being exclusive to it).
struct SubLink {
    connection: Connection,
    channel: Channel,
}

async fn connect(url: &str, spec: &Spec) -> Result<SubLink, EventError> {
    let (connection, channel) = open(url).await?;
    // Dropped (so closed) if declaring fails.
    let link = SubLink {
        connection,
        channel,
    };
    declare_exchange(&link.channel, &spec.exchange).await?;
    let (options, mut args) = (QueueDeclareOptions::default(), FieldTable::default());
    let options = if spec.group {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        QueueDeclareOptions {
            durable: true,
            ..options
        }
    } else {
        // Exclusive: gone with the connection, whoever forgets to close.
        QueueDeclareOptions {
            exclusive: true,
            ..options
        }
    };
    link.channel
        .queue_declare(spec.queue.as_str().into(), options, args)
        .await
        .map_err(amqp_error)?;
    link.channel
        .queue_bind(
            spec.queue.as_str().into(),
            spec.exchange.as_str().into(),
            spec.binding.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp_error)?;
    Ok(link)
}

pub(super) async fn subscribe(
    inner: Arc<Inner>,
    topic: &str,
    queue: String,
    options: SubscribeOptions,
) -> Result<Subscription, EventError> {
    let spec = Arc::new(Spec {
        exchange: inner.config.exchange(topic),
        queue,
        binding: options
            .tenant
            .map_or_else(|| "#".to_owned(), |t| format!("t.{t}")),
        group: options.group.is_some(),
    });
    // The queue exists (and is bound) once `subscribe` returns, so every
    // event published from then on reaches it.
    let link = connect(&inner.url, &spec).await?;
    Ok(Subscription::new(Box::new(RabbitStream {
        inner,
        topic: Arc::from(topic),
        spec,
        tenant: options.tenant,
        link: Some(Arc::new(link)),
        getting: None,
        pause: FIRST_PAUSE,
        closed: false,
    })))
}

/// A `basic.get` in progress.
type GetCall = Pin<Box<dyn Future<Output = Result<Option<BasicGetMessage>, lapin::Error>> + Send>>;

struct RabbitStream {
    inner: Arc<Inner>,
    topic: Arc<str>,
    spec: Arc<Spec>,
    tenant: Option<TenantId>,
    link: Option<Arc<SubLink>>,
    /// Kept across cancelled `next_delivery` calls: a message the broker
    /// already handed over must not be left unsettled on the channel.
    getting: Option<GetCall>,
    pause: Duration,
    closed: bool,
}

impl std::fmt::Debug for RabbitStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitStream")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl RabbitStream {
    /// The live connection, reconnecting (with back-off) if it was lost.
    async fn link(&mut self) -> Result<Arc<SubLink>, EventError> {
        if let Some(link) = &self.link
            && usable(&link.connection, &link.channel)
        {
            return Ok(Arc::clone(link));
        }
        self.link = None;
        self.getting = None;
        let deadline = tokio::time::Instant::now() + self.inner.config.reconnect_timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            match connect(&self.inner.url, &self.spec).await {
                Ok(link) => {
                    tracing::debug!(queue = %self.spec.queue, "RabbitMQ subscription connected");
                    let link = Arc::new(link);
                    self.link = Some(Arc::clone(&link));
                    return Ok(link);
                }
                Err(error) if error.is_retryable() && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%error, queue = %self.spec.queue, "RabbitMQ reconnecting");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn attempt_of(&self, properties: &BasicProperties, redelivered: bool) -> u32 {
        let header = |name: &str| {
            properties
                .headers()
                .as_ref()
                .and_then(|headers| {
                    headers
                        .inner()
                        .iter()
                        .find(|(key, _)| key.as_str() == name)
                        .map(|(_, value)| value.clone())
                })
                .and_then(|value| int(&value))
        };
        let base = header(ATTEMPT_HEADER).unwrap_or(1).max(1);
        // A quorum queue counts its redeliveries; a classic one only says
        // whether there was one.
        let redeliveries = if self.spec.group {
            header("x-delivery-count").unwrap_or(0)
        } else {
            u64::from(redelivered)
        };
        u32::try_from(base.saturating_add(redeliveries)).unwrap_or(u32::MAX)
    }
}

/// An AMQP integer header as a count (negative ones as none).
fn int(value: &AMQPValue) -> Option<u64> {
    let signed = match value {
        AMQPValue::ShortShortInt(v) => i64::from(*v),
        AMQPValue::ShortShortUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::LongLongInt(v) => *v,
        _ => return None,
    };
    u64::try_from(signed).ok()
}

#[async_trait]
impl DeliveryStream for RabbitStream {
    async fn next_delivery(&mut self) -> Option<Result<Delivery, EventError>> {
        loop {
            if self.closed {
                return None;
            }
            let link = match self.link().await {
                Ok(link) => link,
                Err(error) => return Some(Err(error)),
            };
            if self.getting.is_none() {
                let channel = link.channel.clone();
                let queue = self.spec.queue.clone();
                self.getting = Some(Box::pin(async move {
                    channel
                        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                        .await
                }));
            }
            let Some(call) = self.getting.as_mut() else {
                continue;
            };
            let got = tokio::time::timeout(GET_TIMEOUT, call).await;
            self.getting = None;
            let message = match got {
                Ok(Ok(Some(message))) => message,
                Ok(Ok(None)) => {
                    tokio::time::sleep(self.pause).await;
                    self.pause = (self.pause * 2).min(self.inner.config.poll_interval);
                    continue;
                }
                Ok(Err(error)) => {
                    if usable(&link.connection, &link.channel) {
                        return Some(Err(amqp_error(error)));
                    }
                    // Lost: the next round reconnects.
                    tracing::debug!(%error, queue = %self.spec.queue, "RabbitMQ connection lost");
                    self.link = None;
                    continue;
                }
                Err(_) => {
                    // No answer: drop the connection (the broker requeues
                    // whatever it handed over on it) and start again.
                    self.link = None;
                    continue;
                }
            };
            self.pause = FIRST_PAUSE;
            let delivery = message.delivery;
            let attempt = self.attempt_of(&delivery.properties, delivery.redelivered);
            let acker = RabbitAcker {
                inner: Arc::clone(&self.inner),
                link: Arc::clone(&link),
                spec: Arc::clone(&self.spec),
                tag: delivery.delivery_tag,
                message_id: delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.as_str().to_owned())
                    .unwrap_or_default(),
                attempt,
                body: Vec::new(),
            };
            let event = match Event::from_json_slice(&delivery.data) {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(%error, queue = %self.spec.queue, "RabbitMQ message is not a CloudEvent; acked");
                    if let Err(error) = Box::new(acker).ack().await {
                        return Some(Err(error));
                    }
                    continue;
                }
            };
            // The binding already keeps other tenants out; a message
            // published to the exchange by someone else with a misleading
            // routing key must not get through either.
            if let Some(tenant) = self.tenant
                && event.tenant_id() != Some(tenant)
            {
                tracing::warn!(id = event.id(), queue = %self.spec.queue, "RabbitMQ message of another tenant; acked");
                if let Err(error) = Box::new(acker).ack().await {
                    return Some(Err(error));
                }
                continue;
            }
            let acker = RabbitAcker {
                body: delivery.data,
                ..acker
            };
            return Some(Ok(Delivery::new(
                Arc::new(event),
                Arc::clone(&self.topic),
                attempt,
                Box::new(acker),
            )));
        }
    }

    async fn close(&mut self) {
        self.closed = true;
        self.getting = None;
        if let Some(link) = self.link.take()
            && !self.spec.group
        {
            // A private subscription's state ends here; deliveries still
            // out can be acked, their queue is gone.
            let _ = link
                .channel
                .queue_delete(self.spec.queue.as_str().into(), Default::default())
                .await;
        }
    }
}

struct RabbitAcker {
    inner: Arc<Inner>,
    link: Arc<SubLink>,
    spec: Arc<Spec>,
    tag: u64,
    message_id: String,
    attempt: u32,
    /// The message as received, for republishing it.
    body: Vec<u8>,
}

impl std::fmt::Debug for RabbitAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitAcker")
            .field("queue", &self.spec.queue)
            .field("tag", &self.tag)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl RabbitAcker {
    async fn ack_original(&self) -> Result<(), EventError> {
        self.link
            .channel
            .basic_ack(self.tag, BasicAckOptions::default())
            .await
            .map_err(amqp_error)
    }

    async fn requeue(&self) -> Result<(), EventError> {
        let options = BasicNackOptions {
            requeue: true,
            multiple: false,
        };
        self.link
            .channel
            .basic_nack(self.tag, options)
            .await
            .map_err(amqp_error)
    }

    /// Publishes the message again, confirmed, to `queue` (through the
    /// default exchange) with the next attempt number, then acks the
    /// original. If the copy cannot be published the original is
    /// requeued, so the event is not lost either way.
    async fn republish(&self, queue: String) -> Result<(), EventError> {
        let copy = Outgoing {
            exchange: String::new(),
            routing_key: queue,
            message_id: self.message_id.clone(),
            body: self.body.clone(),
            attempt: Some(self.attempt.saturating_add(1)),
        };
        if let Err(error) = publish_confirmed(&self.inner, &[copy], None).await {
            let _ = self.requeue().await;
            return Err(error);
        }
        self.ack_original().await
    }

    async fn settle_nack(self, delay: Option<Duration>) -> Result<(), EventError> {
        match delay.filter(|d| !d.is_zero()) {
            None if self.spec.group => self.requeue().await,
            None => self.republish(self.spec.queue.clone()).await,
            Some(delay) => {
                let queue = match declare_delay_queue(
                    &self.inner,
                    &self.spec.queue,
                    self.spec.group,
                    delay,
                )
                .await
                {
                    Ok(queue) => queue,
                    Err(error) => {
                        let _ = self.requeue().await;
                        return Err(error);
                    }
                };
                self.republish(queue).await
            }
        }
    }
}

#[async_trait]
impl Acknowledger for RabbitAcker {
    async fn ack(self: Box<Self>) -> Result<(), EventError> {
        self.ack_original().await
    }

    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<(), EventError> {
        self.settle_nack(delay).await
    }

    fn abandon(self: Box<Self>) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = self.settle_nack(None).await;
            });
        }
    }
}
