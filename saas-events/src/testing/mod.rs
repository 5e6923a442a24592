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
//! broker do not collide.
//!
//! # No silent skips
//!
//! A behaviour test for an ability the backend's
//! [`Capabilities`](crate::Capabilities) lacks prints a line and passes —
//! so the macro also stamps a capability test that makes such a pass
//! impossible unless it is written down:
//!
//! - `conformance_tests!(backend())` stamps `every_capability_declared`,
//!   which fails unless the backend declares every [`Optional`] behaviour:
//!   nothing is skipped. Every backend of this crate runs it.
//! - `conformance_tests!(backend(), without: [DelayedDelivery])` opts out
//!   of the listed behaviours; `declared_capabilities` then fails if a
//!   listed one is declared or an unlisted one is not, and checks that
//!   each listed one is refused with [`EventError::Unsupported`].
//! - `conformance_tests!(@each backend(); round_trip, …)` stamps only the
//!   listed tests, for a backend that runs some behaviour elsewhere (on a
//!   server of its own, say); list `every_capability_declared` with them.
//!
//! The generated tests need `tokio` (features `macros`, `rt-multi-thread`)
//! among the caller's dev-dependencies.

mod content;
mod declared;
mod failure;
mod parallel;
mod pubsub;

use std::sync::Arc;
use std::time::Duration;

use crate::delivery::{Delivery, Subscription};
use crate::error::EventError;
use crate::traits::{Publisher, Subscriber};

pub use content::{headers_and_trace, large_payload};
pub use declared::{Optional, declared_capabilities, every_capability_declared};
pub use failure::{
    crash_mid_handler, dead_lettering, delayed_retry, nack_redelivery, redrive_dead_letters,
};
pub use parallel::per_key_order_parallel;
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

/// Prints why a test was skipped (the capability test of the suite fails
/// unless the skip was opted into).
pub(crate) fn skip(test: &str, capability: &str) {
    println!("conformance: skipped `{test}`: the backend does not declare `{capability}`");
}

/// How many times each generated conformance test runs its behaviour:
/// `SAAS_EVENTS_STRESS=N` (default 1) — the suite's stress mode, for
/// shaking out races (`SAAS_EVENTS_STRESS=20 cargo test -p saas-events`).
///
/// # Panics
/// If the variable is set but is not a whole number from 1 to 10,000: a
/// stress run that silently ran once would prove nothing.
pub fn stress_repeats() -> u32 {
    match std::env::var("SAAS_EVENTS_STRESS") {
        Err(_) => 1,
        Ok(value) => match value.trim().parse::<u32>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => panic!("SAAS_EVENTS_STRESS must be a whole number from 1 to 10000, not {value:?}"),
        },
    }
}

/// Stamps out one `#[tokio::test]` per conformance behaviour, and one
/// checking the backend's declared capabilities.
///
/// `$backend` is an expression evaluating to a future of
/// `Option<(Arc<dyn Publisher>, Arc<dyn Subscriber>)>`, evaluated afresh in
/// each test; `None` skips the test (for example when a service is not
/// configured — print why).
///
/// - `conformance_tests!(backend())`: every behaviour, and
///   `every_capability_declared`.
/// - `conformance_tests!(backend(), without: [OrderingPerKey, …])`: every
///   behaviour, and `declared_capabilities`, which checks the listed
///   [`Optional`](crate::testing::Optional) behaviours are undeclared and
///   refused, and every other one declared.
/// - `conformance_tests!(@each backend(); name, …)`: only the listed tests.
///
/// See the [module docs](crate::testing) for an example.
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr) => {
        $crate::conformance_tests!(@each $backend;
            round_trip, concurrent_publishers, topic_isolation, nack_redelivery,
            per_key_order, per_key_order_parallel, consumer_groups, close_and_resume, dead_lettering,
            redrive_dead_letters, delayed_retry, crash_mid_handler, tenant_isolation,
            headers_and_trace, large_payload, every_capability_declared);
    };
    ($backend:expr, without: [$($optional:ident),* $(,)?]) => {
        $crate::conformance_tests!(@each $backend;
            round_trip, concurrent_publishers, topic_isolation, nack_redelivery,
            per_key_order, per_key_order_parallel, consumer_groups, close_and_resume, dead_lettering,
            redrive_dead_letters, delayed_retry, crash_mid_handler, tenant_isolation,
            headers_and_trace, large_payload);

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn declared_capabilities() {
            let Some((publisher, subscriber)) = $backend.await else {
                return;
            };
            $crate::testing::declared_capabilities(
                publisher,
                subscriber,
                &[$($crate::testing::Optional::$optional),*],
            )
            .await;
        }
    };
    (@each $backend:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                // Stress mode: `SAAS_EVENTS_STRESS=N` runs each behaviour
                // N times, each on a fresh backend.
                for _ in 0..$crate::testing::stress_repeats() {
                    let Some((publisher, subscriber)) = $backend.await else {
                        return;
                    };
                    $crate::testing::$name(publisher, subscriber).await;
                }
            }
        )+
    };
}
