//! The backend conformance suite (feature `testing`).
//!
//! Each behaviour in the [`Publisher`] and [`Subscriber`] contracts is one
//! plain `pub async fn` over `Arc<dyn Publisher>` and `Arc<dyn Subscriber>`
//! that panics on failure. [`conformance_tests!`](crate::conformance_tests)
//! stamps out one named `#[tokio::test]` per behaviour for a backend, so a
//! third-party backend runs the same suite:
//!
//! ```
//! use std::sync::Arc;
//! use saas_events::{InMemoryBus, Publisher, Subscriber};
//!
//! // A real backend would connect here, returning `None` (and printing why)
//! // when its service is not configured, which skips the suite.
//! async fn my_backend() -> Option<(Arc<dyn Publisher>, Arc<dyn Subscriber>)> {
//!     Some(saas_events::testing::backend(InMemoryBus::new()))
//! }
//!
//! saas_events::conformance_tests!(my_backend());
//! # fn main() {}
//! ```
//!
//! Every wait is bounded by [`WAIT`], so a broken backend fails instead of
//! hanging. Each test uses fresh topic names, so runs against a shared
//! broker do not collide. Tests for an ability the backend's
//! [`Capabilities`](crate::Capabilities) lacks print a line and pass.
//! The generated tests need `tokio` (features `macros`, `rt-multi-thread`)
//! among the caller's dev-dependencies.

mod content;
mod failure;
mod pubsub;

use std::sync::Arc;
use std::time::Duration;

use crate::delivery::{Delivery, Subscription};
use crate::error::EventError;
use crate::traits::{Publisher, Subscriber};

pub use content::{headers_and_trace, large_payload};
pub use failure::{
    crash_mid_handler, dead_lettering, delayed_retry, nack_redelivery, redrive_dead_letters,
};
pub use pubsub::{
    close_and_resume, concurrent_publishers, consumer_groups, per_key_order, round_trip,
    tenant_isolation, topic_isolation,
};

/// The longest any conformance test waits for one thing to happen.
pub const WAIT: Duration = Duration::from_secs(20);

/// Splits a backend implementing both traits into the suite's arguments.
pub fn backend<B>(bus: B) -> (Arc<dyn Publisher>, Arc<dyn Subscriber>)
where
    B: Publisher + Subscriber + Clone + 'static,
{
    (Arc::new(bus.clone()), Arc::new(bus))
}

/// A topic name unique to this run.
pub fn unique_topic(label: &str) -> String {
    format!("conformance.{label}.{}", uuid::Uuid::now_v7().simple())
}

/// Unwraps `result` or fails the test, saying what was being done.
#[track_caller]
pub(crate) fn must<T>(result: Result<T, EventError>, doing: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{doing} failed: {error}"),
    }
}

/// The next delivery, or a test failure after [`WAIT`].
#[track_caller]
pub(crate) fn next_delivery(
    subscription: &mut Subscription,
    what: &'static str,
) -> impl std::future::Future<Output = Delivery> {
    let caller = std::panic::Location::caller();
    async move {
        match tokio::time::timeout(WAIT, subscription.next()).await {
            Ok(Some(Ok(delivery))) => delivery,
            Ok(Some(Err(error))) => panic!("{caller}: waiting for {what}: {error}"),
            Ok(None) => panic!("{caller}: waiting for {what}: the subscription ended"),
            Err(_) => panic!("{caller}: waiting for {what}: nothing arrived within {WAIT:?}"),
        }
    }
}

/// Prints why a test was skipped.
pub(crate) fn skip(test: &str, capability: &str) {
    println!("conformance: skipped `{test}`: the backend does not declare `{capability}`");
}

/// Stamps out one `#[tokio::test]` per conformance behaviour.
///
/// `$backend` is an expression evaluating to a future of
/// `Option<(Arc<dyn Publisher>, Arc<dyn Subscriber>)>`, evaluated afresh in
/// each test; `None` skips the test (for example when a service is not
/// configured — print why).
///
/// See the [module docs](crate::testing) for an example.
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr) => {
        $crate::conformance_tests!(@each $backend;
            round_trip, concurrent_publishers, topic_isolation, nack_redelivery,
            per_key_order, consumer_groups, close_and_resume, dead_lettering,
            redrive_dead_letters, delayed_retry, crash_mid_handler, tenant_isolation,
            headers_and_trace, large_payload);
    };
    (@each $backend:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((publisher, subscriber)) = $backend.await else {
                    return;
                };
                $crate::testing::$name(publisher, subscriber).await;
            }
        )+
    };
}
