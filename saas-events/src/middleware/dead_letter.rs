//! Dead-lettering after N attempts, and redriving dead letters.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use crate::envelope::Event;
use crate::error::{BoxError, EventError};
use crate::names::validate_name;
use crate::router::{EventFuture, ReceivedEvent, call_mapped, poll_ready_mapped};
use crate::traits::{Publisher, StartFrom, SubscribeOptions, Subscriber};

/// Extension on a dead letter: why the last attempt failed.
pub const DEAD_LETTER_REASON: &str = "deadletterreason";
/// Extension on a dead letter: how many delivery attempts were made.
pub const DEAD_LETTER_ATTEMPTS: &str = "deadletterattempts";
/// Extension on a dead letter: the topic it was consumed from.
pub const DEAD_LETTER_TOPIC: &str = "deadlettertopic";

/// A tower layer that parks events that keep failing on a dead-letter
/// topic.
///
/// When the inner handler fails and either the delivery attempt has reached
/// `max_attempts` or the error is not retryable ([`EventError::Rejected`],
/// [`EventError::NoHandler`], a bad payload…), the event is published to
/// the dead-letter topic with [`DEAD_LETTER_REASON`],
/// [`DEAD_LETTER_ATTEMPTS`] and [`DEAD_LETTER_TOPIC`] attached, and the
/// original delivery is acknowledged. If that publish fails, the original
/// error is returned so the delivery is nacked, not lost.
#[derive(Debug, Clone)]
pub struct DeadLetterLayer {
    publisher: Arc<dyn Publisher>,
    topic: String,
    max_attempts: u32,
}

impl DeadLetterLayer {
    /// Dead-letters to `topic` once `max_attempts` deliveries (at least 1)
    /// have failed.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] for a bad topic name.
    pub fn new(
        publisher: Arc<dyn Publisher>,
        topic: impl Into<String>,
        max_attempts: u32,
    ) -> Result<Self, EventError> {
        let topic = topic.into();
        validate_name(&topic)?;
        Ok(Self {
            publisher,
            topic,
            max_attempts: max_attempts.max(1),
        })
    }
}

impl<S> Layer<S> for DeadLetterLayer {
    type Service = DeadLetterService<S>;

    fn layer(&self, inner: S) -> DeadLetterService<S> {
        DeadLetterService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of a [`DeadLetterLayer`].
#[derive(Debug, Clone)]
pub struct DeadLetterService<S> {
    inner: S,
    layer: DeadLetterLayer,
}

fn dead_letter(received: &ReceivedEvent, error: &EventError) -> Result<Event, EventError> {
    received
        .event()
        .clone()
        .with_extension(DEAD_LETTER_REASON, error.to_string())?
        .with_extension(DEAD_LETTER_ATTEMPTS, received.attempt())?
        .with_extension(DEAD_LETTER_TOPIC, received.topic())
}

impl<S> Service<ReceivedEvent> for DeadLetterService<S>
where
    S: Service<ReceivedEvent, Response = ()> + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = EventError;
    type Future = EventFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), EventError>> {
        poll_ready_mapped(&mut self.inner, cx)
    }

    fn call(&mut self, event: ReceivedEvent) -> EventFuture {
        let call = call_mapped(&mut self.inner, event.clone());
        let layer = self.layer.clone();
        Box::pin(async move {
            let error = match call.await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            park(&layer, &event, error).await
        })
    }
}

/// Publishes a failed event to the dead-letter topic when its attempts
/// are used up or the error is permanent; else returns the error.
async fn park(
    layer: &DeadLetterLayer,
    event: &ReceivedEvent,
    error: EventError,
) -> Result<(), EventError> {
    if error.is_retryable() && event.attempt() < layer.max_attempts {
        return Err(error);
    }
    let parked = match dead_letter(event, &error) {
        Ok(parked) => parked,
        Err(build_error) => {
            tracing::error!(%build_error, "could not build a dead letter");
            return Err(error);
        }
    };
    match layer.publisher.publish(&layer.topic, parked).await {
        Ok(()) => {
            crate::observe::dead_lettered();
            tracing::warn!(%error, attempt = event.attempt(), dead_letter_topic = %layer.topic,
                "event dead-lettered");
            Ok(())
        }
        Err(publish_error) => {
            tracing::error!(%publish_error, "could not publish a dead letter; nacking instead");
            Err(error)
        }
    }
}

/// How [`redrive`] reads the dead-letter topic.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedriveOptions {
    /// The consumer group that reads dead letters (default `"redrive"`);
    /// a later redrive with the same group continues where this one ended.
    pub group: String,
    /// Stop after this many events (default: no limit).
    pub max_events: usize,
    /// Stop when no dead letter arrives for this long (default 1 s).
    pub idle: Duration,
    /// Send every dead letter here instead of its [`DEAD_LETTER_TOPIC`].
    pub target_topic: Option<String>,
}

impl Default for RedriveOptions {
    fn default() -> Self {
        Self {
            group: "redrive".to_owned(),
            max_events: usize::MAX,
            idle: Duration::from_secs(1),
            target_topic: None,
        }
    }
}

impl RedriveOptions {
    /// Sets the consumer group.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// Sets the maximum number of events moved.
    pub fn with_max_events(mut self, max: usize) -> Self {
        self.max_events = max;
        self
    }

    /// Sets the idle time that ends the redrive.
    pub fn with_idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// Sends every dead letter to `topic`.
    pub fn with_target_topic(mut self, topic: impl Into<String>) -> Self {
        self.target_topic = Some(topic.into());
        self
    }
}

/// Moves dead letters back to the topic they came from (or
/// [`RedriveOptions::target_topic`]), without the dead-letter extensions
/// and with their original id, and returns how many were moved.
///
/// Reads `dead_letter_topic` with a consumer group starting from the
/// earliest retained event; on a backend without
/// [`Capabilities::replay`](crate::Capabilities::replay) create the group
/// (subscribe once) before dead letters arrive. Each dead letter is
/// acknowledged only after it was republished.
///
/// # Errors
/// A subscribe or publish error, or [`EventError::InvalidAttribute`] for a
/// dead letter without [`DEAD_LETTER_TOPIC`] when no target is given (it
/// stays in the dead-letter topic).
pub async fn redrive(
    subscriber: &dyn Subscriber,
    publisher: &dyn Publisher,
    dead_letter_topic: &str,
    options: RedriveOptions,
) -> Result<usize, EventError> {
    let subscribe = SubscribeOptions::new()
        .with_group(options.group.clone())
        .starting_from(StartFrom::Earliest);
    let mut subscription = subscriber.subscribe(dead_letter_topic, subscribe).await?;
    let mut moved = 0;
    while moved < options.max_events {
        let delivery = match tokio::time::timeout(options.idle, subscription.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(delivery)) => delivery?,
        };
        let target = match &options.target_topic {
            Some(target) => target.clone(),
            None => match delivery
                .event()
                .extension(DEAD_LETTER_TOPIC)
                .and_then(|v| v.as_str())
            {
                Some(topic) => topic.to_owned(),
                None => {
                    delivery.nack(None).await?;
                    return Err(EventError::invalid(
                        DEAD_LETTER_TOPIC,
                        "dead letter does not say where it came from; give a target topic",
                    ));
                }
            },
        };
        let mut event = delivery.event().clone();
        for name in [DEAD_LETTER_REASON, DEAD_LETTER_ATTEMPTS, DEAD_LETTER_TOPIC] {
            event.remove_extension(name);
        }
        publisher.publish(&target, event).await?;
        delivery.ack().await?;
        crate::observe::redriven();
        moved += 1;
    }
    subscription.close().await;
    Ok(moved)
}
