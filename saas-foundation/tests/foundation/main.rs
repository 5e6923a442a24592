//! The one integration test binary of `saas-foundation`.
#![allow(clippy::unwrap_used)]

mod adoption;
mod catalog_events;
mod outboxes;
mod problem;
mod transaction;
