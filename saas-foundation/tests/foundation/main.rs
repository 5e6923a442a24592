//! The one integration test binary of `saas-foundation`.
#![allow(clippy::unwrap_used)]

mod adoption;
mod catalog_events;
mod catalog_events_billing;
#[cfg(feature = "postgres")]
mod catalog_events_pg;
#[cfg(feature = "postgres")]
mod catalog_events_pg_crash;
#[cfg(feature = "postgres")]
mod catalog_events_pg_security;
mod catalog_events_sqlite;
mod catalog_events_sqlite_crash;
mod config;
mod consumers;
mod host;
mod metering;
#[cfg(all(feature = "nats", feature = "postgres"))]
mod move_events;
#[cfg(all(feature = "otel", feature = "nats", feature = "postgres"))]
mod otel_trace;
mod outboxes;
mod problem;
mod ratelimit;
mod signup;
mod spans;
mod stack;
mod tenant_header;
mod transaction;
