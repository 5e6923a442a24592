//! The SQLite transactional outbox and inbox (feature `sqlite`).
//!
//! The inbox, [`SqliteInbox`], is the idempotent consumer: see
//! [`crate::middleware::InboxLayer`] for the idea.
//!
//! [`SqliteOutbox::publish`] writes an event into an outbox table **inside
//! the caller's transaction** (any `&mut sqlx::SqliteConnection`, so a
//! `saas_tenancy::sqlite::SqliteTenantTx` works): the event exists if and
//! only if the transaction commits. An [`OutboxRelay`] moves committed
//! rows to any [`Publisher`](crate::Publisher) — an
//! [`InMemoryBus`](crate::InMemoryBus) for in-process subscribers, or a
//! broker backend — and learns where outbox tables are from an
//! [`OutboxLocations`] implementation asked again on every pass, so tenant
//! files provisioned later are picked up.
//!
//! # Under saas-tenancy's SQLite placements
//!
//! - **Row tenants in a shared file.** Declare the outbox as a tenant
//!   table (`TenantTable::new("saas_events_outbox")`, stored as
//!   `saas_events_outbox_rows`; create the physical table with
//!   [`SqliteOutbox::create_table_sql_as`]). Tenant connections then see
//!   `saas_events_outbox` as their own view, whose trigger refuses an event
//!   claiming another tenant and stamps the transaction's tenant on a
//!   tenant-less one. The relay reads the physical table through an
//!   unscoped pool ([`OutboxLocation::with_table`]) and gives each event
//!   the tenant of its row.
//! - **Database tenants.** Put [`SqliteOutbox::create_table_sql`] in the
//!   tenant migrations; each tenant's outbox lives in its file. Give each
//!   file's location its tenant ([`OutboxLocation::with_tenant`]): the
//!   relay stamps that tenant on tenant-less events and refuses to forward
//!   an event claiming any other (it stays, visible in
//!   [`OutboxRelay::oldest_pending_age`]).
//!
//! # Why nothing committed late is skipped
//!
//! SQLite has one writer per file at a time, so a row's sequence number is
//! handed out while its transaction holds the write lock and rows commit
//! in sequence order. The relay does not rely on that either: it keeps no
//! high-water mark — a row is pending exactly while it exists. A pass takes
//! the file's write lock (`BEGIN IMMEDIATE`), reads a batch in sequence
//! order, forwards it and deletes it before committing, so two relays
//! never forward one row concurrently and the table stays as small as the
//! backlog. The lock is held while the batch is forwarded: the batch size
//! bounds how long the application's writers wait. A relay that crashes
//! mid-pass forwards the batch again (at-least-once; consumers deduplicate
//! by event id, see [`crate::middleware`]).

mod dialect;
mod error;
mod location;
mod outbox;
mod relay;

pub use location::{OutboxLocation, OutboxLocations, StaticLocations};
pub use relay::{OutboxRelay, RelayConfig, RelayHandle, RelayStats};

pub use crate::sql::{DEFAULT_INBOX_TABLE, DEFAULT_OUTBOX_TABLE};
use crate::sql::{SqlInbox, SqlInboxHandler, SqlOutbox, SqlOutboxPublisher};

/// The SQLite inbox: [`SqlInbox`] on `sqlx::Sqlite`.
pub type SqliteInbox = SqlInbox<sqlx::Sqlite>;
/// The router handler of [`SqlInbox::handler`] on `sqlx::Sqlite`.
pub type SqliteInboxHandler = SqlInboxHandler<sqlx::Sqlite>;
/// The SQLite outbox: [`SqlOutbox`] on `sqlx::Sqlite`.
pub type SqliteOutbox = SqlOutbox<sqlx::Sqlite>;
/// The SQLite outbox publisher: [`SqlOutboxPublisher`] on `sqlx::Sqlite`.
pub type SqliteOutboxPublisher = SqlOutboxPublisher<sqlx::Sqlite>;
