//! Middleware for the [`Router`](crate::router::Router): retry with
//! backoff, dead-lettering, timeouts, tracing and the idempotent consumer
//! (inbox: [`InboxLayer`], and the SQL inboxes of the `postgres` and
//! `sqlite` modules).
//!
//! A sensible stack, outermost first: [`TracingLayer`], [`DeadLetterLayer`],
//! [`RetryLayer`], [`TimeoutLayer`]. Each layer is a
//! [`Middleware`](crate::router::Middleware) wrapping a
//! [`SharedHandler`](crate::router::SharedHandler); this crate uses
//! its own small trait rather than tower's `Service` because handlers need
//! no readiness and are shared as trait objects.

mod backoff;
mod dead_letter;
mod inbox;
mod retry;
mod timeout;
mod tracing_layer;

pub use backoff::{Backoff, RandomSource, SeededRandom};
pub use dead_letter::{
    DEAD_LETTER_ATTEMPTS, DEAD_LETTER_REASON, DEAD_LETTER_TOPIC, DeadLetterLayer, RedriveOptions,
    redrive,
};
pub use inbox::{InMemoryInbox, InboxClaim, InboxLayer, TxHandler};
pub use retry::RetryLayer;
pub use timeout::TimeoutLayer;
pub use tracing_layer::TracingLayer;
