//! What the SQL outbox and inbox do the SQLite way.

use sqlx::Sqlite;
use sqlx::sqlite::SqliteQueryResult;

use super::error::sqlite_error;
use crate::error::EventError;
use crate::sql::dialect::Dialect;

impl Dialect for Sqlite {
    const PREFIX: &'static str = "Sqlite";
    const TEXT: &'static str = "TEXT";
    const UUID: &'static str = "BLOB";
    const INSTANT: &'static str = "INTEGER";
    // The write lock up front: a deferred transaction that reads before
    // writing can fail with SQLITE_BUSY instead of waiting.
    const BEGIN_WRITE: Option<&'static str> = Some("BEGIN IMMEDIATE");

    fn param(_: usize) -> String {
        "?".to_owned()
    }

    fn millis_param(_: usize) -> String {
        "?".to_owned()
    }

    fn error(error: sqlx::Error) -> EventError {
        sqlite_error(error)
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}
