//! # saas-foundation
//!
//! The one dependency of a SaaS backend built on saas-foundation: the four
//! crates re-exported — [`core`] (tenant ids and context, JWT identity,
//! request resolution), [`tenancy`] (row, schema and database isolation),
//! [`billing`] (plans, subscriptions, usage, quotas, invoices) and
//! [`events`] (a tenant-aware event bus with transactional outboxes) — and
//! the glue that joins them, so hosts stop writing it.
//!
//! Features: `postgres` and `sqlite` (every crate's backend for that
//! database), `axum` (`problem`: every crate's error as an RFC 9457
//! problem+json response; `transaction`: the request tenant's scoped
//! transaction, committed on success), `nats` and `redis`.
//!
//! With `postgres` or `sqlite`, `catalog_events` installs triggers that
//! write tenant lifecycle and subscription events into the outbox in the
//! same transaction as the change (delivered at least once by the
//! ordinary relay).
//!
//! Not yet here (issue 14): outbox locations read from the tenant catalog,
//! sign-up as one operation, and one handle that starts and stops relays
//! and routers.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use saas_billing as billing;
pub use saas_core as core;
pub use saas_events as events;
pub use saas_tenancy as tenancy;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub mod catalog_events;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub mod outboxes;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod problem;
pub mod services;
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
