//! What truly differs between the PostgreSQL and SQLite stores, in one
//! trait implemented on each sqlx database type: a few SQL fragments (JSON
//! casts, the row lock), how a write transaction begins, and how a
//! [`Param`] is encoded in that database's column types. The stores'
//! logic ([`super::subscriptions`], [`super::invoices`],
//! [`super::usage`], whose [`UsageDialect`](super::usage::UsageDialect)
//! adds usage's batched statements) is written once over it; [`Sql`] runs
//! statements on any of them.
//!
//! Statements use numbered `$n` placeholders, which sqlx's SQLite driver
//! binds by number as PostgreSQL does.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use saas_core::TenantId;
use sqlx::query::Query;
use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Executor, IntoArguments, Pool, Row, Transaction,
    Type,
};
use uuid::Uuid;

use crate::error::BillingError;

/// A statement parameter in the stores' terms; each dialect encodes it in
/// its own column type.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    /// One of this crate's ids: `uuid` (PostgreSQL), canonical lowercase
    /// hyphenated text, whose order is the UUID's byte order (SQLite).
    Id(Uuid),
    /// An id or `NULL`, encoded as [`Param::Id`].
    MaybeId(Option<Uuid>),
    /// A tenant: `TenantId`'s own sqlx encoding on both (`uuid`; a 16-byte
    /// BLOB, as saas-tenancy stores it).
    Tenant(TenantId),
    /// An integer (`bigint` / `INTEGER`).
    Int(i64),
    /// An integer or `NULL`.
    MaybeInt(Option<i64>),
    /// Text or `NULL`.
    MaybeText(Option<String>),
    /// Text, JSON text included (its cast, if any, is in the SQL).
    Text(String),
    /// An instant or `NULL`: `timestamptz` (PostgreSQL), fixed-width
    /// RFC 3339 text that sorts like the instant (SQLite).
    At(Option<DateTime<Utc>>),
    /// An exact decimal: `numeric` (PostgreSQL), its text (SQLite).
    Amount(Decimal),
}

impl Param {
    /// A row limit (`LIMIT`), saturated at `i64::MAX`.
    pub(crate) fn limit(limit: usize) -> Param {
        Param::Int(i64::try_from(limit).unwrap_or(i64::MAX))
    }
}

/// A statement being built, its parameters bound one by one.
pub(crate) type Statement<DB> = Query<'static, DB, <DB as Database>::Arguments>;

/// What differs per database: implemented for `sqlx::Postgres` and
/// `sqlx::Sqlite`.
#[async_trait]
pub(crate) trait Dialect: Database {
    /// The backend's name in [`BillingError::Backend`].
    const BACKEND: &'static str;
    /// Appended to a JSON text parameter: `::jsonb` on PostgreSQL.
    const JSON_PARAM: &'static str;
    /// Appended to a JSON column read as text: `::text` on PostgreSQL.
    const JSON_TEXT: &'static str;
    /// Appended to a [`Param::MaybeId`] tested with `IS NULL`, whose type
    /// PostgreSQL cannot infer: `::uuid`.
    const ID_PARAM: &'static str;
    /// Appended to a read that precedes a write in the same transaction:
    /// ` FOR UPDATE` on PostgreSQL. Empty on SQLite, whose write
    /// transaction ([`Dialect::begin_write`]) holds the database's write
    /// lock from its start.
    const FOR_UPDATE: &'static str;

    /// Begins a transaction that reads then writes.
    async fn begin_write(pool: &Pool<Self>) -> Result<Transaction<'static, Self>, BillingError>;

    /// Binds the next parameter, encoded in this database's column type.
    fn bind(statement: Statement<Self>, param: Param) -> Statement<Self>;

    /// The number of rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;
}

/// Running statements and reading rows, the same on every [`Dialect`]
/// sqlx can execute on: the one place that states the bounds.
#[async_trait]
pub(crate) trait Sql: Dialect {
    /// Runs `sql` with `params` bound in order; the number of rows changed.
    async fn execute(
        conn: &mut Self::Connection,
        sql: String,
        params: Vec<Param>,
    ) -> Result<u64, sqlx::Error>;

    /// Runs `sql`; its first row, if any.
    async fn fetch_optional(
        conn: &mut Self::Connection,
        sql: String,
        params: Vec<Param>,
    ) -> Result<Option<Self::Row>, sqlx::Error>;

    /// Runs `sql`; every row.
    async fn fetch_all(
        conn: &mut Self::Connection,
        sql: String,
        params: Vec<Param>,
    ) -> Result<Vec<Self::Row>, sqlx::Error>;

    /// A text column.
    fn text(row: &Self::Row, column: &str) -> Result<String, sqlx::Error>;

    /// An integer column.
    fn int(row: &Self::Row, column: &str) -> Result<i64, sqlx::Error>;

    /// A tenant id column (`TenantId`'s own sqlx encoding).
    fn tenant(row: &Self::Row, column: &str) -> Result<TenantId, sqlx::Error>;

    /// Converts a driver error (see [`super::backend_error`]).
    fn error(error: sqlx::Error) -> BillingError {
        super::backend_error(Self::BACKEND, error)
    }
}

/// Runs `sql` on a connection of `pool`; every row, read by `read`.
pub(crate) async fn all<D: Sql, T>(
    pool: &Pool<D>,
    sql: String,
    params: Vec<Param>,
    read: fn(&D::Row) -> Result<T, BillingError>,
) -> Result<Vec<T>, BillingError> {
    let mut conn = pool.acquire().await.map_err(D::error)?;
    let rows = D::fetch_all(&mut *conn, sql, params)
        .await
        .map_err(D::error)?;
    rows.iter().map(read).collect()
}

/// Runs `sql` on a connection of `pool`; its first row, if any, read by
/// `read`.
pub(crate) async fn optional<D: Sql, T>(
    pool: &Pool<D>,
    sql: String,
    params: Vec<Param>,
    read: fn(&D::Row) -> Result<T, BillingError>,
) -> Result<Option<T>, BillingError> {
    let mut conn = pool.acquire().await.map_err(D::error)?;
    let row = D::fetch_optional(&mut *conn, sql, params)
        .await
        .map_err(D::error)?;
    row.as_ref().map(read).transpose()
}

fn statement<DB: Dialect>(sql: String, params: Vec<Param>) -> Statement<DB> {
    params
        .into_iter()
        .fold(sqlx::query(AssertSqlSafe(sql)), DB::bind)
}

#[async_trait]
impl<DB> Sql for DB
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    TenantId: for<'r> Decode<'r, DB> + Type<DB>,
    for<'s> &'s str: ColumnIndex<DB::Row>,
{
    async fn execute(
        conn: &mut DB::Connection,
        sql: String,
        params: Vec<Param>,
    ) -> Result<u64, sqlx::Error> {
        let done = statement::<DB>(sql, params).execute(conn).await?;
        Ok(DB::rows_affected(&done))
    }

    async fn fetch_optional(
        conn: &mut DB::Connection,
        sql: String,
        params: Vec<Param>,
    ) -> Result<Option<DB::Row>, sqlx::Error> {
        statement::<DB>(sql, params).fetch_optional(conn).await
    }

    async fn fetch_all(
        conn: &mut DB::Connection,
        sql: String,
        params: Vec<Param>,
    ) -> Result<Vec<DB::Row>, sqlx::Error> {
        statement::<DB>(sql, params).fetch_all(conn).await
    }

    fn text(row: &DB::Row, column: &str) -> Result<String, sqlx::Error> {
        row.try_get(column)
    }

    fn int(row: &DB::Row, column: &str) -> Result<i64, sqlx::Error> {
        row.try_get(column)
    }

    fn tenant(row: &DB::Row, column: &str) -> Result<TenantId, sqlx::Error> {
        row.try_get(column)
    }
}
