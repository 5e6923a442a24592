//! Conformance: a backend declares every optional behaviour it is tested
//! for, and refuses, with a typed error, each one it opts out of.
//!
//! This is what keeps a skip from passing silently: a behaviour test for a
//! capability the backend does not declare prints a line and passes, but
//! the suite's capability test then fails unless the opt-out is written in
//! the backend's `conformance_tests!` call, where it is tested as a refusal.

use std::sync::Arc;
use std::time::Duration;

use saas_core::TenantId;

use super::{must, next_delivery, unique_topic};
use crate::envelope::Event;
use crate::error::EventError;
use crate::traits::{Capabilities, Publisher, SubscribeOptions, Subscriber};

/// An optional behaviour of the suite, named after its
/// [`Capabilities`] flag; listed after `without:` in
/// [`conformance_tests!`](crate::conformance_tests) to opt out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Optional {
    /// [`Capabilities::ordering_per_key`] — tests `per_key_order`,
    /// `per_key_order_parallel`.
    OrderingPerKey,
    /// [`Capabilities::consumer_groups`] — tests `consumer_groups`,
    /// `close_and_resume`, `crash_mid_handler`, `redrive_dead_letters`,
    /// `per_key_order_parallel`.
    ConsumerGroups,
    /// [`Capabilities::delayed_delivery`] — tests `delayed_retry`.
    DelayedDelivery,
}

impl Optional {
    /// Every optional behaviour the suite knows.
    pub const ALL: [Optional; 3] = [
        Optional::OrderingPerKey,
        Optional::ConsumerGroups,
        Optional::DelayedDelivery,
    ];

    /// Whether `capabilities` declares it.
    pub fn declared_in(self, capabilities: &Capabilities) -> bool {
        match self {
            Optional::OrderingPerKey => capabilities.ordering_per_key,
            Optional::ConsumerGroups => capabilities.consumer_groups,
            Optional::DelayedDelivery => capabilities.delayed_delivery,
        }
    }
}

/// The backend declares every optional behaviour: none of the suite's
/// tests can pass by skipping. What in-tree backends run.
pub async fn every_capability_declared(p: Arc<dyn Publisher>, s: Arc<dyn Subscriber>) {
    declared_capabilities(p, s, &[]).await;
}

/// The backend declares every optional behaviour not in `without`, and
/// each one in `without` is undeclared and, where the API can ask for it,
/// refused with [`EventError::Unsupported`]:
/// - consumer groups: subscribing with a group;
/// - delayed delivery: `nack` with a delay;
/// - per-key order has no request to refuse; the opt-out is the
///   undeclared flag, which callers read from `capabilities()`.
pub async fn declared_capabilities(
    p: Arc<dyn Publisher>,
    s: Arc<dyn Subscriber>,
    without: &[Optional],
) {
    let capabilities = s.capabilities();
    for behaviour in Optional::ALL {
        let declared = behaviour.declared_in(&capabilities);
        if without.contains(&behaviour) {
            assert!(
                !declared,
                "{behaviour:?} is opted out of but declared: drop the opt-out so it is tested"
            );
            refuses(&p, &s, behaviour).await;
        } else {
            assert!(
                declared,
                "{behaviour:?} is not declared: its conformance test only skipped; \
                 declare it or opt out of it explicitly with `without: [{behaviour:?}]`"
            );
        }
    }
}

fn expect_unsupported<T: std::fmt::Debug>(result: Result<T, EventError>, what: &str) {
    match result {
        Err(EventError::Unsupported { .. }) => {}
        other => panic!("{what} must fail with EventError::Unsupported, got {other:?}"),
    }
}

async fn refuses(p: &Arc<dyn Publisher>, s: &Arc<dyn Subscriber>, behaviour: Optional) {
    match behaviour {
        Optional::OrderingPerKey => {}
        Optional::ConsumerGroups => {
            let topic = unique_topic("refuses-groups");
            let options = SubscribeOptions::new().with_group("refused");
            expect_unsupported(
                s.subscribe(&topic, options).await,
                "subscribing with a group",
            );
        }
        Optional::DelayedDelivery => {
            let topic = unique_topic("refuses-delay");
            let mut sub = must(
                s.subscribe(&topic, SubscribeOptions::new()).await,
                "subscribing",
            );
            let event = must(
                Event::new(TenantId::new(), "conformance.delay", "/conformance", &1),
                "building an event",
            );
            must(p.publish(&topic, event).await, "publishing");
            let delivery = next_delivery(&mut sub, "the event to nack").await;
            expect_unsupported(
                delivery.nack(Some(Duration::from_secs(1))).await,
                "a nack with a delay",
            );
        }
    }
}
