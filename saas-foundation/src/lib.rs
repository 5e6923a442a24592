//! # saas-foundation
//!
//! The one dependency of a SaaS backend built on saas-foundation: the four
//! crates re-exported — [`core`] (tenant ids and context, JWT identity,
//! request resolution), [`tenancy`] (row, schema and database isolation),
//! [`billing`] (plans, subscriptions, usage, quotas, invoices) and
//! [`events`] (a tenant-aware event bus with transactional outboxes) — and
//! the glue that joins them, so hosts stop writing it.
//!
//! What it adds (features `postgres` and `sqlite` turn on every crate's
//! backend for that database; `axum`, `nats`, `rabbitmq` and `redis` the
//! rest; `metrics`, `prometheus`, `otel` and `otlp` instrument them):
//!
//! - `stack` — the whole foundation on one database in one call
//!   (`PgStack`, `SqliteStack`): catalog and billing tables migrated, the
//!   tenancy built and set up, the outbox relay over every tenant.
//! - `outboxes` — every tenant's outbox, read from the catalog, for the
//!   relays: each placement, within the tenancy's pool budget.
//! - `catalog_events` — tenant lifecycle and subscription events written
//!   into the outbox by triggers, in the same transaction as the change.
//! - `signup` — provision and subscribe as one operation, retried by
//!   tenant id and compensated on failure; [`subscriptions`] — tenant →
//!   current subscription.
//! - [`config`] — the settings every host reads at startup, from the
//!   environment, with secrets that never reach a log; [`identity`] — the
//!   host's own tokens (issuer, verifier, request resolver) from one
//!   secret.
//! - `metering` (feature `axum`) — every request counted against its
//!   tenant's meter, optionally refused over the plan's quota;
//!   `consumers` — event handlers given the event's tenant context;
//!   `ratelimit` (feature `ratelimit`) — per-tenant requests per second
//!   from the plan, 429 with `Retry-After` over it.
//! - `host` (feature `host`: axum and both databases) — the program
//!   around an app: the stack its settings name, the app started on it,
//!   served until Ctrl-C, everything stopped in order.
//! - `otel` (feature `otel`) — an incoming request's W3C trace context
//!   continued by its span, and carried by the events it publishes into
//!   their handlers' spans.
//! - [`services`] — one handle that stops routers, relays and pools in
//!   the right order.
//! - `problem` (feature `axum`) — every crate's error as an RFC 9457
//!   problem+json response from its kind; `transaction` (`axum` with a
//!   database) — the request tenant's scoped transaction, committed on
//!   success.
//!
//! Host code is written once for PostgreSQL and SQLite through
//! `tenancy::Tenancy`. Moving an existing axum app over: `ADOPTING.md`
//! in the crate's repository directory.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use saas_billing as billing;
pub use saas_core as core;
pub use saas_events as events;
pub use saas_tenancy as tenancy;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub mod catalog_events;
pub mod config;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub mod consumers;
#[cfg(feature = "host")]
#[cfg_attr(docsrs, doc(cfg(feature = "host")))]
pub mod host;
pub mod identity;
#[cfg(feature = "axum")]
mod layers;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod metering;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod otel;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub mod outboxes;
pub mod prelude;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod problem;
#[cfg(feature = "ratelimit")]
#[cfg_attr(docsrs, doc(cfg(feature = "ratelimit")))]
pub mod ratelimit;
pub mod services;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub mod signup;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub mod stack;
pub mod subscriptions;
#[cfg(all(feature = "axum", any(feature = "postgres", feature = "sqlite")))]
#[cfg_attr(
    docsrs,
    doc(cfg(all(feature = "axum", any(feature = "postgres", feature = "sqlite"))))
)]
pub mod transaction;
