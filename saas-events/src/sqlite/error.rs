//! Mapping sqlx errors onto [`EventError`] by meaning.

use crate::error::EventError;

/// SQLite's primary result codes worth retrying: `SQLITE_BUSY` (5) and
/// `SQLITE_LOCKED` (6) — another connection holds the lock.
const RETRYABLE_PRIMARY_CODES: [i64; 2] = [5, 6];

/// Converts a sqlx error: I/O trouble, pool exhaustion and a busy or
/// locked database are retryable; constraint violations and everything
/// else are not. Decided from `DatabaseError::kind()` and the (extended)
/// result code, never the message.
pub(crate) fn sqlite_error(error: sqlx::Error) -> EventError {
    let retryable = match &error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation
            | sqlx::error::ErrorKind::ForeignKeyViolation
            | sqlx::error::ErrorKind::NotNullViolation
            | sqlx::error::ErrorKind::CheckViolation => false,
            _ => db
                .code()
                .and_then(|code| code.parse::<i64>().ok())
                // Extended codes carry the primary code in the low byte.
                .is_some_and(|code| RETRYABLE_PRIMARY_CODES.contains(&(code & 0xff))),
        },
        _ => false,
    };
    EventError::Backend {
        backend: "sqlite",
        retryable,
        source: Box::new(error),
    }
}
