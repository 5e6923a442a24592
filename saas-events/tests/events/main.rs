//! The one integration test binary of `saas-events`.
#![allow(clippy::unwrap_used)]

mod confirmation;
mod conformance;
mod envelope;
mod errors;
mod http_binding;
mod inbox;
mod metrics;
mod middleware;
mod nats;
#[cfg(feature = "otel")]
mod otel;
mod outbox;
mod outbox_tenancy;
mod outbox_wake;
mod rabbitmq;
mod redis_streams;
mod router;
mod sqlite_outbox;
mod sqlite_outbox_tenancy;
mod support;
mod tower_layers;
mod webhooks;
