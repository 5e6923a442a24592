//! JetStream pull consumers behind [`Subscription`]s: one per partition,
//! each with at most one unsettled delivery.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{AckKind, Message, stream};
use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use super::{NatsConfig, nats_error};
use crate::delivery::{Acknowledger, Delivery, DeliveryStream, Subscription};
use crate::envelope::Event;
use crate::error::EventError;
use crate::traits::{StartFrom, SubscribeOptions};

/// How long the first look at a partition waits for a message; doubled
/// after every round that found nothing, up to [`PROBE_MAX`].
const PROBE_MIN: Duration = Duration::from_millis(5);
/// The longest look at one partition: bounds how long an idle subscription
/// takes to notice a message on a partition it is not looking at.
const PROBE_MAX: Duration = Duration::from_millis(80);

/// A durable consumer's name: the group, escaped, its tenant filter and
/// the partition.
fn durable_name(group: &str, tenant: &str, partition: u16) -> String {
    // The same bijective escape as stream names (`_` → `__`, `.` → `_d`);
    // consumer names may not contain dots.
    let mut name = String::from("g_");
    for c in group.chars() {
        match c {
            '_' => name.push_str("__"),
            '.' => name.push_str("_d"),
            c => name.push(c),
        }
    }
    format!("{name}-{tenant}-p{partition}")
}

pub(super) async fn subscribe(
    config: &NatsConfig,
    stream: stream::Stream,
    topic: &str,
    options: SubscribeOptions,
) -> Result<Subscription, EventError> {
    let tenant = options
        .tenant
        .map_or_else(|| "*".to_owned(), |t| t.simple());
    let deliver_policy = match options.start {
        StartFrom::Earliest => DeliverPolicy::All,
        _ => DeliverPolicy::New,
    };
    let mut consumers = Vec::new();
    let mut ephemeral = Vec::new();
    for partition in 0..config.partitions.max(1) {
        let base = pull::Config {
            filter_subject: super::partition_subject(&config.prefix, partition, topic, &tenant),
            deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            // One unsettled delivery per partition and group: what keeps
            // each key's events in order, nacks included.
            max_ack_pending: 1,
            ..Default::default()
        };
        let consumer: PullConsumer = match &options.group {
            Some(group) => {
                let scope = if tenant == "*" { "all" } else { &tenant };
                let name = durable_name(group, scope, partition);
                let config_for = pull::Config {
                    durable_name: Some(name.clone()),
                    ..base
                };
                stream
                    .get_or_create_consumer(&name, config_for)
                    .await
                    .map_err(|e| nats_error(true, e))?
            }
            None => {
                let config_for = pull::Config {
                    inactive_threshold: Duration::from_secs(60),
                    ..base
                };
                let consumer: PullConsumer = stream
                    .create_consumer(config_for)
                    .await
                    .map_err(|e| nats_error(true, e))?;
                ephemeral.push(consumer.cached_info().name.clone());
                consumer
            }
        };
        consumers.push(consumer);
    }
    Ok(Subscription::new(Box::new(NatsStream {
        topic: Arc::from(topic),
        consumers,
        next_partition: 0,
        probe: PROBE_MIN,
        probing: None,
        stream,
        ephemeral,
        closed: false,
    })))
}

struct NatsStream {
    topic: Arc<str>,
    consumers: Vec<PullConsumer>,
    /// Where the next look starts, so every partition gets its turn.
    next_partition: usize,
    probe: Duration,
    /// A look in progress, kept across cancelled `next_delivery` calls.
    probing: Option<Probe>,
    stream: stream::Stream,
    ephemeral: Vec<String>,
    closed: bool,
}

impl std::fmt::Debug for NatsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStream")
            .field("topic", &self.topic)
            .field("partitions", &self.consumers.len())
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}

type Probe = BoxFuture<'static, Result<Option<Message>, EventError>>;

/// Asks one partition for one message, waiting up to `wait`.
fn probe(consumer: PullConsumer, wait: Duration) -> Probe {
    Box::pin(async move {
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| nats_error(true, e))?;
        match batch.next().await {
            Some(Ok(message)) => Ok(Some(message)),
            Some(Err(error)) => Err(nats_error(true, error)),
            None => Ok(None),
        }
    })
}

impl NatsStream {
    /// The next look at a partition: the one a cancelled `next_delivery`
    /// left running (its message, if any, must not be lost), or a new one.
    /// One request at a time per subscription: a message is only pulled
    /// when it is about to be handed out, so an idle consumer of a group
    /// holds nothing another consumer could be working on.
    async fn look(&mut self) -> Result<Option<Message>, EventError> {
        if self.probing.is_none() {
            let count = self.consumers.len().max(1);
            let Some(consumer) = self.consumers.get(self.next_partition % count) else {
                return Ok(None);
            };
            self.next_partition = (self.next_partition + 1) % count;
            self.probing = Some(probe(consumer.clone(), self.probe));
        }
        // Awaited in place: if this call is cancelled the look stays in
        // `self` and the next call finishes it.
        let found = match self.probing.as_mut() {
            Some(look) => look.await,
            None => Ok(None),
        };
        self.probing = None;
        found
    }
}

#[async_trait]
impl DeliveryStream for NatsStream {
    async fn next_delivery(&mut self) -> Option<Result<Delivery, EventError>> {
        let mut empty_looks = 0;
        loop {
            if self.closed {
                return None;
            }
            let message = match self.look().await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    empty_looks += 1;
                    if empty_looks >= self.consumers.len() {
                        // A whole round found nothing: look longer next time.
                        empty_looks = 0;
                        self.probe = (self.probe * 2).min(PROBE_MAX);
                    }
                    continue;
                }
                Err(error) => return Some(Err(error)),
            };
            self.probe = PROBE_MIN;
            let attempt = message
                .info()
                .map(|info| u32::try_from(info.delivered).unwrap_or(u32::MAX))
                .unwrap_or(1);
            match Event::from_json_slice(&message.payload) {
                Ok(event) => {
                    let acker = Box::new(NatsAcker { message });
                    return Some(Ok(Delivery::new(
                        Arc::new(event),
                        Arc::clone(&self.topic),
                        attempt,
                        acker,
                    )));
                }
                Err(error) => {
                    // Not ours to handle: terminate it so it does not loop.
                    tracing::warn!(%error, "NATS message is not a CloudEvent; terminated");
                    let _ = message.ack_with(AckKind::Term).await;
                }
            }
        }
    }

    async fn close(&mut self) {
        self.closed = true;
        for name in std::mem::take(&mut self.ephemeral) {
            let _ = self.stream.delete_consumer(&name).await;
        }
    }
}

impl Drop for NatsStream {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.ephemeral);
        if names.is_empty() {
            return;
        }
        let stream = self.stream.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                for name in names {
                    let _ = stream.delete_consumer(&name).await;
                }
            });
        }
    }
}

struct NatsAcker {
    message: Message,
}

impl std::fmt::Debug for NatsAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAcker")
            .field("subject", &self.message.subject)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Acknowledger for NatsAcker {
    /// Waits for the server to confirm: the partition stays blocked until
    /// the ack is recorded, so an ack lost in a crash would hold the key's
    /// next event back for the ack wait.
    async fn ack(self: Box<Self>) -> Result<(), EventError> {
        self.message
            .double_ack()
            .await
            .map_err(|e| nats_error(true, e))
    }

    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<(), EventError> {
        self.message
            .double_ack_with(AckKind::Nak(delay))
            .await
            .map_err(|e| nats_error(true, e))
    }

    fn abandon(self: Box<Self>) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = self.message.ack_with(AckKind::Nak(None)).await;
            });
        }
    }
}
