//! The conformance suite against the in-memory backend.

use std::sync::Arc;

use saas_events::testing::backend;
use saas_events::{InMemoryBus, Publisher, Subscriber};

async fn memory() -> Option<(Arc<dyn Publisher>, Arc<dyn Subscriber>)> {
    Some(backend(InMemoryBus::new()))
}

saas_events::conformance_tests!(memory());

/// The opt-out path: a bus without per-key order runs every behaviour, and
/// its capability test checks the opt-out is undeclared.
mod unordered {
    use super::*;
    use saas_events::InMemoryConfig;

    async fn unordered_memory() -> Option<(Arc<dyn Publisher>, Arc<dyn Subscriber>)> {
        let config = InMemoryConfig::default().with_ordering_per_key(false);
        Some(backend(InMemoryBus::with_config(config)))
    }

    saas_events::conformance_tests!(unordered_memory(), without: [OrderingPerKey]);

    /// Without the opt-out written down, the undeclared behaviour fails the
    /// suite instead of passing as a skip.
    #[tokio::test]
    #[should_panic(expected = "OrderingPerKey is not declared")]
    async fn an_undeclared_behaviour_without_an_opt_out_fails() {
        let (p, s) = unordered_memory().await.unwrap();
        saas_events::testing::every_capability_declared(p, s).await;
    }

    /// An opt-out of something the backend does declare fails too: the
    /// behaviour would go untested.
    #[tokio::test]
    #[should_panic(expected = "ConsumerGroups is opted out of but declared")]
    async fn an_opt_out_of_a_declared_behaviour_fails() {
        let (p, s) = unordered_memory().await.unwrap();
        saas_events::testing::declared_capabilities(
            p,
            s,
            &[
                saas_events::testing::Optional::OrderingPerKey,
                saas_events::testing::Optional::ConsumerGroups,
            ],
        )
        .await;
    }
}

/// The opt-out path for consumer groups: a backend refusing groups runs
/// every behaviour, and its capability test checks that subscribing with
/// a group fails with `Unsupported`.
mod without_groups {
    use super::*;
    use async_trait::async_trait;
    use saas_events::{Capabilities, EventError, SubscribeOptions, Subscription};

    /// An in-memory bus that refuses consumer groups.
    #[derive(Debug, Clone)]
    struct NoGroups(InMemoryBus);

    #[async_trait]
    impl Subscriber for NoGroups {
        async fn subscribe(
            &self,
            topic: &str,
            options: SubscribeOptions,
        ) -> Result<Subscription, EventError> {
            if options.group.is_some() {
                return Err(EventError::Unsupported {
                    operation: "consumer groups",
                });
            }
            self.0.subscribe(topic, options).await
        }

        fn capabilities(&self) -> Capabilities {
            let mut capabilities = Subscriber::capabilities(&self.0);
            capabilities.consumer_groups = false;
            capabilities
        }
    }

    async fn no_groups() -> Option<(Arc<dyn Publisher>, Arc<dyn Subscriber>)> {
        let bus = InMemoryBus::new();
        Some((Arc::new(bus.clone()), Arc::new(NoGroups(bus))))
    }

    saas_events::conformance_tests!(no_groups(), without: [ConsumerGroups]);
}
