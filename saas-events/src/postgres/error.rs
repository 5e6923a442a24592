//! Mapping sqlx errors onto [`EventError`] by meaning.

use crate::error::EventError;

/// Converts a sqlx error: connection trouble, pool exhaustion, serialization
/// failures, deadlocks and server shutdowns are retryable; constraint
/// violations and everything else are not. Decided from
/// `DatabaseError::kind()` and the SQLSTATE class, never the message.
pub(crate) fn pg_error(error: sqlx::Error) -> EventError {
    let retryable = match &error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation
            | sqlx::error::ErrorKind::ForeignKeyViolation
            | sqlx::error::ErrorKind::NotNullViolation
            | sqlx::error::ErrorKind::CheckViolation => false,
            _ => db.code().is_some_and(|code| {
                // 08 connection exception, 40 transaction rollback
                // (serialization failure, deadlock), 53 insufficient
                // resources, 57 operator intervention (shutdown).
                ["08", "40", "53", "57"]
                    .iter()
                    .any(|class| code.starts_with(class))
            }),
        },
        _ => false,
    };
    EventError::Backend {
        backend: "postgres",
        retryable,
        source: Box::new(error),
    }
}
