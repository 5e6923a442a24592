//! JetStream pull consumers behind [`Subscription`]s.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{AckKind, Message, stream};
use async_trait::async_trait;
use futures_util::StreamExt;

use super::{NatsConfig, nats_error};
use crate::delivery::{Acknowledger, Delivery, DeliveryStream, Subscription};
use crate::envelope::Event;
use crate::error::EventError;
use crate::traits::{StartFrom, SubscribeOptions};

/// A durable consumer's name: the group, escaped, and its tenant filter.
fn durable_name(group: &str, tenant: &str) -> String {
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
    format!("{name}-{tenant}")
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
    let filter_subject = format!("{}.{topic}.{tenant}", config.prefix);
    let deliver_policy = match options.start {
        StartFrom::Earliest => DeliverPolicy::All,
        _ => DeliverPolicy::New,
    };
    let base = pull::Config {
        filter_subject,
        deliver_policy,
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        ..Default::default()
    };
    let (consumer, batch, ephemeral) = match &options.group {
        Some(group) => {
            let name = durable_name(group, if tenant == "*" { "all" } else { &tenant });
            let config_for = pull::Config {
                durable_name: Some(name.clone()),
                ..base
            };
            let consumer = stream
                .get_or_create_consumer(&name, config_for)
                .await
                .map_err(|e| nats_error(true, e))?;
            (consumer, config.group_pull_batch, None)
        }
        None => {
            let config_for = pull::Config {
                inactive_threshold: Duration::from_secs(60),
                ..base
            };
            let consumer: consumer::PullConsumer = stream
                .create_consumer(config_for)
                .await
                .map_err(|e| nats_error(true, e))?;
            let name = consumer.cached_info().name.clone();
            (consumer, config.private_pull_batch, Some(name))
        }
    };
    let messages = consumer
        .stream()
        .max_messages_per_batch(batch.max(1))
        .messages()
        .await
        .map_err(|e| nats_error(true, e))?;
    Ok(Subscription::new(Box::new(NatsStream {
        topic: Arc::from(topic),
        messages: Some(messages),
        stream,
        ephemeral,
    })))
}

struct NatsStream {
    topic: Arc<str>,
    messages: Option<pull::Stream>,
    stream: stream::Stream,
    ephemeral: Option<String>,
}

impl std::fmt::Debug for NatsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStream")
            .field("topic", &self.topic)
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl DeliveryStream for NatsStream {
    async fn next_delivery(&mut self) -> Option<Result<Delivery, EventError>> {
        let messages = self.messages.as_mut()?;
        loop {
            let message = match messages.next().await? {
                Ok(message) => message,
                Err(error) => return Some(Err(nats_error(true, error))),
            };
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
        self.messages = None;
        if let Some(name) = self.ephemeral.take() {
            let _ = self.stream.delete_consumer(&name).await;
        }
    }
}

impl Drop for NatsStream {
    fn drop(&mut self) {
        if let Some(name) = self.ephemeral.take() {
            let stream = self.stream.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = stream.delete_consumer(&name).await;
                });
            }
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
    async fn ack(self: Box<Self>) -> Result<(), EventError> {
        self.message
            .ack_with(AckKind::Ack)
            .await
            .map_err(|e| nats_error(true, e))
    }

    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<(), EventError> {
        self.message
            .ack_with(AckKind::Nak(delay))
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
