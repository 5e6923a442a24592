//! What the SQL outbox and inbox do the PostgreSQL way.

use sqlx::Postgres;
use sqlx::postgres::PgQueryResult;

use super::error::pg_error;
use crate::error::EventError;
use crate::sql::dialect::Dialect;

impl Dialect for Postgres {
    const PREFIX: &'static str = "Pg";
    const TEXT: &'static str = "text";
    const UUID: &'static str = "uuid";
    const INSTANT: &'static str = "timestamptz";
    const BEGIN_WRITE: Option<&'static str> = None;

    fn param(n: usize) -> String {
        format!("${n}")
    }

    fn millis_param(n: usize) -> String {
        format!("to_timestamp(${n}::float8 / 1000)")
    }

    fn error(error: sqlx::Error) -> EventError {
        pg_error(error)
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }
}
