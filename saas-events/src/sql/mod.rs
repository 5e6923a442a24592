//! The SQL outbox and inbox, written once over PostgreSQL and SQLite
//! (features `postgres`, `sqlite`).
//!
//! Each type here is generic over the database, a [`SqlDialect`]:
//! `sqlx::Postgres` or `sqlx::Sqlite`. Use it through its alias in the
//! backend's module ([`postgres`](crate::postgres),
//! [`sqlite`](crate::sqlite)), whose docs say how that database places and
//! relays the tables:
//!
//! | generic | PostgreSQL | SQLite |
//! |---|---|---|
//! | [`SqlInbox`] | `postgres::PgInbox` | `sqlite::SqliteInbox` |
//! | [`SqlInboxHandler`] | `postgres::PgInboxHandler` | `sqlite::SqliteInboxHandler` |
//! | [`SqlOutbox`] | `postgres::PgOutbox` | `sqlite::SqliteOutbox` |
//! | [`SqlOutboxPublisher`] | `postgres::PgOutboxPublisher` | `sqlite::SqliteOutboxPublisher` |
//!
//! What differs between the two databases — placeholders, column types,
//! how a write transaction begins, how errors map — is the dialect's; the
//! logic, the docs and the table layouts are written once here.

pub(crate) mod dialect;
mod inbox;
mod outbox;

pub use inbox::{DEFAULT_INBOX_TABLE, SqlInbox, SqlInboxHandler};
// For `SqliteOutbox::create_table_sql_as`, the one outbox method only SQLite has.
#[cfg(feature = "sqlite")]
pub(crate) use outbox::outbox_table_sql;
pub use outbox::{DEFAULT_OUTBOX_TABLE, SqlOutbox, SqlOutboxPublisher};

/// A database the SQL outbox and inbox run on: `sqlx::Postgres` (feature
/// `postgres`) and `sqlx::Sqlite` (feature `sqlite`).
///
/// Sealed: its requirements are this crate's own, so it is implemented
/// for those two databases only.
pub trait SqlDialect: dialect::Sql {}

#[cfg(feature = "postgres")]
impl SqlDialect for sqlx::Postgres {}
#[cfg(feature = "sqlite")]
impl SqlDialect for sqlx::Sqlite {}

#[cfg(test)]
mod tests;
