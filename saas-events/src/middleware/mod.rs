//! Middleware for the [`Router`](crate::router::Router): retry with
//! backoff, dead-lettering, timeouts, tracing and the idempotent consumer
//! (inbox: [`InboxLayer`], and the SQL inboxes of the `postgres` and
//! `sqlite` modules).
//!
//! Each is a tower `Layer` whose service wraps any tower service of
//! [`ReceivedEvent`](crate::router::ReceivedEvent)s (its error, if not an
//! [`EventError`](crate::EventError), is mapped to one), so they stack with
//! tower's own layers (`timeout`, `limit`, `load_shed`…) in a
//! [`Router`](crate::router::Router) or a `tower::ServiceBuilder`.
//!
//! [`Router::layer`](crate::router::Router::layer) makes the **last added
//! outermost**. A sensible stack, added in this order (innermost first):
//! [`TimeoutLayer`], [`RetryLayer`], [`DeadLetterLayer`], [`TracingLayer`]
//! — an event then meets tracing first and the timeout last.

mod backoff;
mod dead_letter;
mod inbox;
mod retry;
mod timeout;
mod tracing_layer;

pub use backoff::{Backoff, RandomSource, SeededRandom};
pub use dead_letter::{
    DEAD_LETTER_ATTEMPTS, DEAD_LETTER_REASON, DEAD_LETTER_TOPIC, DeadLetterLayer,
    DeadLetterService, RedriveOptions, redrive,
};
pub use inbox::{InMemoryInbox, InboxClaim, InboxLayer, InboxService, TxHandler};
pub use retry::{RetryLayer, RetryService};
pub use timeout::{TimeoutLayer, TimeoutService};
pub use tracing_layer::{TracingLayer, TracingService};
