//! The PostgreSQL transactional outbox and inbox (feature `postgres`).
//!
//! The inbox, [`PgInbox`], is the idempotent consumer: see
//! [`crate::middleware::InboxLayer`] for the idea.
//!
//! [`PgOutbox::publish`] writes an event into an outbox table **inside the
//! caller's transaction** (any `&mut sqlx::PgConnection`, so a
//! `saas_tenancy::postgres::PgTenantTx` works): the event exists if and only
//! if the transaction commits. The table is named without a schema, so it
//! resolves through the connection's `search_path` — the shared schema for
//! row tenants (add it to the tenancy's tenant tables so RLS covers it),
//! the tenant's schema or the tenant's database otherwise.
//!
//! An [`OutboxRelay`] moves committed rows to any [`Publisher`](crate::Publisher)
//! (an [`InMemoryBus`](crate::InMemoryBus) to deliver to in-process
//! subscribers, a broker backend to forward). It learns where outbox tables
//! are from an [`OutboxLocations`] implementation supplied by the host (or
//! by a tenancy integration), so this crate does not depend on
//! `saas-tenancy`.
//!
//! # Why the relay never skips a late commit
//!
//! Sequence numbers are handed out at `INSERT` but become visible at
//! `COMMIT`, so a transaction holding sequence 5 can commit after one
//! holding 6 was relayed; a relay that remembers "everything up to 6 is
//! done" would skip 5 forever. This relay keeps no high-water mark: a row
//! is pending exactly while it exists, and the relay deletes the rows it
//! delivered in the same transaction that read them. Each batch takes a
//! transaction-scoped advisory lock on its table (`pg_try_advisory_xact_lock`),
//! so several relay processes never work one table at once — no event is
//! delivered twice concurrently and per-tenant (per-table) order is kept.
//! A relay that crashes after forwarding but before committing forwards the
//! batch again (at-least-once; consumers deduplicate by event id).
//!
//! # Thousands of locations: waking on commit
//!
//! A relay over many outboxes (a schema per tenant) does not visit each
//! of them on every pass. [`PgOutbox`] inserts its rows and calls
//! `pg_notify(`[`WAKE_CHANNEL`]`, <schema>)` in the same statement — no
//! extra round trip; PostgreSQL delivers the notification at commit and
//! never for a rollback. A spawned relay listens on each database its
//! locations' own pools reach (one connection per database, outside those
//! pools) and visits only the locations announced, those it left with
//! work, those that had rows in the last 2 s, and those it cannot listen
//! to (pools lent per pass, e.g. tenant databases); an idle relay does
//! nothing until a commit. A writer announces its rows only when it saw
//! the outbox empty: notifying transactions serialise at commit (a global
//! lock held through the commit's flush), so writers into a busy outbox
//! skip it and the relay's visits to recently busy locations find their
//! rows. Every [`RelayConfig::full_scan_interval`] (30 s) the relay still
//! sweeps every location, a slice per pass — the net under a lost
//! notification or a writer slower than 2 s from insert to commit; a
//! commit in a schema not listed yet (a tenant provisioned since) has it
//! list its locations again. `BENCHMARKS.md` has the measured lag and
//! commit cost; [`PgOutbox::with_relay_wakeups`] and
//! [`RelayConfig::with_wake_on_commit`] turn it off. Listening needs
//! session connections: point the relay at PostgreSQL directly, not
//! through a transaction-pooling PgBouncer.
//!
//! Several relay processes may serve the same locations: each location's
//! pass holds its advisory lock, a pass finding it held skips it (the
//! holder is at work there), and every relay hears every commit, so a
//! location stays marked with the others until one visits it.
//!
//! Delivered rows are deleted in batches (`DELETE … WHERE seq = ANY(…)`),
//! so the table stays as small as the backlog and autovacuum keeps up; no
//! `delivered` flag accumulates dead rows.

mod dialect;
mod error;
mod location;
mod relay;
mod wake;

pub use location::{OutboxLocation, OutboxLocations, StaticLocations};
pub use relay::{OutboxRelay, RelayConfig, RelayHandle, RelayStats};
pub use wake::WAKE_CHANNEL;

pub use crate::sql::{DEFAULT_INBOX_TABLE, DEFAULT_OUTBOX_TABLE};
use crate::sql::{SqlInbox, SqlInboxHandler, SqlOutbox, SqlOutboxPublisher};

/// The PostgreSQL inbox: [`SqlInbox`] on `sqlx::Postgres`.
pub type PgInbox = SqlInbox<sqlx::Postgres>;
/// The router handler of [`SqlInbox::handler`] on `sqlx::Postgres`.
pub type PgInboxHandler = SqlInboxHandler<sqlx::Postgres>;
/// The PostgreSQL outbox: [`SqlOutbox`] on `sqlx::Postgres`.
pub type PgOutbox = SqlOutbox<sqlx::Postgres>;
/// The PostgreSQL outbox publisher: [`SqlOutboxPublisher`] on `sqlx::Postgres`.
pub type PgOutboxPublisher = SqlOutboxPublisher<sqlx::Postgres>;
