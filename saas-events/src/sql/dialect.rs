//! What differs between the PostgreSQL and SQLite outbox, inbox and relay,
//! in one trait implemented on each sqlx database type ([`Dialect`]), and
//! the running of statements, the same on both ([`Sql`]).
//!
//! Both traits are public only so that they can bound the public generic
//! types; they live in a private module, so nothing outside this crate can
//! name or implement them, which seals [`SqlDialect`](super::SqlDialect).

use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Database, Encode, Executor, IntoArguments, Pool, Transaction, Type};
use uuid::Uuid;

use crate::envelope::Event;
use crate::error::EventError;
use crate::outbox_core::OutboxSettings;

/// A statement parameter; each is bound with sqlx's own encoding of its
/// Rust type on both databases, as the backends always did.
#[derive(Debug, Clone)]
pub enum Param {
    /// Text.
    Text(String),
    /// A UUID (`uuid` on PostgreSQL, a 16-byte BLOB on SQLite).
    Uuid(Uuid),
    /// An integer.
    Int(i64),
}

/// A statement being built, its parameters bound one by one.
type Statement<DB> = Query<'static, DB, <DB as Database>::Arguments>;

/// What differs per database: implemented for `sqlx::Postgres` (in
/// `crate::postgres`) and `sqlx::Sqlite` (in `crate::sqlite`).
#[async_trait]
pub trait Dialect: Database {
    /// The backend's type-name prefix, for `Debug`: `Pg`, `Sqlite`.
    const PREFIX: &'static str;
    /// The text column type.
    const TEXT: &'static str;
    /// The column type of a UUID (a tenant id).
    const UUID: &'static str;
    /// The column type of an instant written as Unix milliseconds
    /// ([`Dialect::millis_param`]).
    const INSTANT: &'static str;
    /// The outbox's sequence column: a key that never repeats.
    const SEQ_KEY: &'static str;
    /// The outbox's `created_at` column.
    const CREATED_AT: &'static str;
    /// The statement beginning a transaction that writes, or `None` for
    /// the driver's plain `BEGIN`.
    const BEGIN_WRITE: Option<&'static str>;

    /// The placeholder of the `n`th parameter (from 1).
    fn param(n: usize) -> String;
    /// The placeholder of the `n`th parameter, an instant bound as Unix
    /// milliseconds and stored as [`Dialect::INSTANT`].
    fn millis_param(n: usize) -> String;
    /// Converts a driver error, by meaning.
    fn error(error: sqlx::Error) -> EventError;
    /// The number of rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// Writes `events` to `settings`' outbox table under `topic` in
    /// `conn`'s transaction, in order, all or none, after every check
    /// ([`OutboxSettings::rows`]).
    async fn insert_outbox_rows(
        settings: &OutboxSettings,
        conn: &mut Self::Connection,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<(), EventError>;
}

/// Running statements, the same on every [`Dialect`] sqlx can execute on:
/// the one place that states the bounds.
#[async_trait]
pub trait Sql: Dialect {
    /// Runs `sql` (possibly several statements) without parameters, as
    /// the driver's simple query.
    async fn execute_raw(conn: &mut Self::Connection, sql: String) -> Result<(), sqlx::Error>;

    /// Runs `sql` with `params` bound in order; the number of rows changed.
    async fn execute(
        conn: &mut Self::Connection,
        sql: String,
        params: Vec<Param>,
    ) -> Result<u64, sqlx::Error>;

    /// Begins a transaction that writes on a connection of `pool`.
    async fn begin_write(pool: &Pool<Self>) -> Result<Transaction<'static, Self>, sqlx::Error>;

    /// Begins a transaction that writes on `conn`.
    async fn begin_write_on(
        conn: &mut Self::Connection,
    ) -> Result<Transaction<'_, Self>, sqlx::Error>;
}

fn statement<DB: Database>(sql: String, params: Vec<Param>) -> Statement<DB>
where
    String: for<'q> Encode<'q, DB> + Type<DB>,
    Uuid: for<'q> Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
{
    params.into_iter().fold(
        sqlx::query(AssertSqlSafe(sql)),
        |query, param| match param {
            Param::Text(text) => query.bind(text),
            Param::Uuid(uuid) => query.bind(uuid),
            Param::Int(int) => query.bind(int),
        },
    )
}

#[async_trait]
impl<DB> Sql for DB
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    Uuid: for<'q> Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
{
    async fn execute_raw(conn: &mut DB::Connection, sql: String) -> Result<(), sqlx::Error> {
        conn.execute(AssertSqlSafe(sql)).await.map(|_| ())
    }

    async fn execute(
        conn: &mut DB::Connection,
        sql: String,
        params: Vec<Param>,
    ) -> Result<u64, sqlx::Error> {
        let done = statement::<DB>(sql, params).execute(conn).await?;
        Ok(DB::rows_affected(&done))
    }

    async fn begin_write(pool: &Pool<DB>) -> Result<Transaction<'static, DB>, sqlx::Error> {
        match DB::BEGIN_WRITE {
            Some(begin) => pool.begin_with(begin).await,
            None => pool.begin().await,
        }
    }

    async fn begin_write_on(conn: &mut DB::Connection) -> Result<Transaction<'_, DB>, sqlx::Error> {
        use sqlx::Connection as _;
        match DB::BEGIN_WRITE {
            Some(begin) => conn.begin_with(begin).await,
            None => conn.begin().await,
        }
    }
}
