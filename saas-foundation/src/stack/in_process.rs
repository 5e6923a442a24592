//! The stack's events consumed inside the server that publishes them.

use std::sync::Arc;

use saas_events::router::{Handler, Router};
use saas_events::{EventError, InMemoryBus, SubscribeOptions, Subscriber};

use super::{Stack, StackBackend};
use crate::services::Services;

/// Consumers of the stack's outbox in this process, started by
/// [`InProcess::start`]; made by [`Stack::in_process`].
///
/// Each consumer's router is subscribed to an in-memory bus before the
/// relay starts feeding it, and registered with the services before the
/// relay, so on shutdown the relay stops first. An event a consumer
/// receives leaves the outbox only once its handler succeeded (the bus
/// acknowledges back to the relay), so a crash loses nothing: the
/// restarted relay delivers it again — make handlers idempotent (an
/// inbox, or an insert keyed by the event id).
///
/// The relay forwards every topic of the outbox. An event on a topic no
/// consumer here subscribes to is confirmed by the bus at once (nobody
/// holds it) and leaves the outbox: give every topic the app publishes to
/// a consumer before [`InProcess::start`], or relay to a broker instead
/// ([`Stack::start_relay`]).
///
/// ```no_run
/// use std::sync::Arc;
/// use saas_events::router::{ReceivedEvent, Router, handler_fn};
/// use saas_foundation::services::Services;
/// use saas_foundation::stack::{Stack, StackBackend};
///
/// async fn start<T: StackBackend>(stack: &Stack<T>, services: &mut Services)
/// -> Result<(), saas_events::EventError> {
///     let audit = handler_fn(|event: ReceivedEvent| async move {
///         // … record `event.event()`, once per event id …
///         # let _ = event;
///         Ok(())
///     });
///     let billing = Router::new(); // … `.route(type, handler)` per event type …
///     stack
///         .in_process()
///         .handler("app.changes", "audit-log", audit)
///         .consumer("app.changes", "billing", billing)
///         .start(services)
///         .await?;
///     Ok(())
/// }
/// ```
#[must_use = "nothing is consumed until `start` is called"]
pub struct InProcess<'a, T: StackBackend> {
    stack: &'a Stack<T>,
    bus: InMemoryBus,
    consumers: Vec<(String, SubscribeOptions, Router)>,
    relay: T::RelayConfig,
}

impl<T: StackBackend> std::fmt::Debug for InProcess<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let topics: Vec<&str> = self.consumers.iter().map(|(t, _, _)| t.as_str()).collect();
        f.debug_struct("InProcess")
            .field("topics", &topics)
            .finish_non_exhaustive()
    }
}

impl<T: StackBackend> Stack<T> {
    /// Consumers of this stack's events in this process; see [`InProcess`].
    pub fn in_process(&self) -> InProcess<'_, T> {
        InProcess {
            stack: self,
            bus: InMemoryBus::new(),
            consumers: Vec::new(),
            relay: T::RelayConfig::default(),
        }
    }
}

impl<T: StackBackend> InProcess<'_, T> {
    /// Routes the events published to `topic` through `router`, as the
    /// consumer group `group` (each group gets every event once).
    pub fn consumer(mut self, topic: impl Into<String>, group: &str, router: Router) -> Self {
        let options = SubscribeOptions::new().with_group(group);
        self.consumers.push((topic.into(), options, router));
        self
    }

    /// Calls `handler` for every event published to `topic`, as the
    /// consumer group `group`: [`InProcess::consumer`] with a router that
    /// sends every event type to `handler`.
    pub fn handler(
        self,
        topic: impl Into<String>,
        group: &str,
        handler: impl Handler + 'static,
    ) -> Self {
        self.consumer(topic, group, Router::new().fallback(handler))
    }

    /// The relay's settings (batch size, poll interval…) instead of the
    /// defaults.
    pub fn relay_config(mut self, config: T::RelayConfig) -> Self {
        self.relay = config;
        self
    }

    /// Subscribes every consumer, then starts the relay of every tenant's
    /// outbox into the bus; all registered with `services`. Returns the bus
    /// (to publish to it directly; a consumer subscribed to it later misses
    /// what was relayed before).
    ///
    /// # Errors
    /// [`EventError::Unsupported`] without any consumer (every relayed
    /// event would be dropped); a subscription refused — the consumers
    /// started before it are registered with `services`, which stops them.
    pub async fn start(self, services: &mut Services) -> Result<InMemoryBus, EventError> {
        if self.consumers.is_empty() {
            return Err(EventError::Unsupported {
                operation: "an in-process relay without consumers (it would drop every \
                            event): add one with .consumer(..), or relay to a broker with \
                            Stack::start_relay",
            });
        }
        for (topic, options, router) in self.consumers {
            let name = format!("consumer of {topic}");
            let subscription = self.bus.subscribe(&topic, options).await?;
            services.start(name, router.run_subscription(subscription));
        }
        let sink = Arc::new(self.bus.clone());
        self.stack.start_relay(sink, self.relay, services);
        Ok(self.bus)
    }
}
