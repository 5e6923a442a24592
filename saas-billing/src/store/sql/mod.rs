//! What the PostgreSQL and SQLite stores share: the stores themselves,
//! written once over a [`dialect::Dialect`], error classification, the
//! JSON form of stored values, exact timestamps and the plan of a batched
//! ingestion.

pub(crate) mod coupons;
pub(crate) mod credit_notes;
pub(crate) mod credits;
pub(crate) mod dialect;
pub(crate) mod ingest;
pub(crate) mod invoices;
pub(crate) mod subscriptions;
pub(crate) mod usage;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::BillingError;

/// SQLSTATEs (PostgreSQL) and result codes (SQLite, primary or extended)
/// after which the same call may succeed: serialization failure, deadlock,
/// lock timeout, too many connections, admin shutdown; `SQLITE_BUSY`,
/// `SQLITE_LOCKED` and their extended codes.
fn retryable_code(backend: &'static str, code: &str) -> bool {
    if backend == "sqlite" {
        code.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
    } else {
        matches!(code, "40001" | "40P01" | "55P03" | "53300" | "57P01")
    }
}

/// Converts a driver error, classified by kind and code, never by message.
pub(crate) fn backend_error(backend: &'static str, error: sqlx::Error) -> BillingError {
    let retryable = match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| retryable_code(backend, &c)),
        _ => false,
    };
    BillingError::Backend {
        backend,
        retryable,
        message: error.to_string(),
    }
}

/// A stored value that cannot be read back (edited by hand, or written by
/// an incompatible version).
pub(crate) fn corrupt(backend: &'static str, what: impl std::fmt::Display) -> BillingError {
    BillingError::Backend {
        backend,
        retryable: false,
        message: format!("unreadable stored row: {what}"),
    }
}

/// The JSON text stored for `value`.
pub(crate) fn to_json<T: Serialize + ?Sized>(
    backend: &'static str,
    value: &T,
) -> Result<String, BillingError> {
    serde_json::to_string(value).map_err(|e| BillingError::Backend {
        backend,
        retryable: false,
        message: format!("cannot encode a value as JSON: {e}"),
    })
}

/// A value read back from its stored JSON text.
pub(crate) fn from_json<T: DeserializeOwned>(
    backend: &'static str,
    text: &str,
) -> Result<T, BillingError> {
    serde_json::from_str(text).map_err(|e| corrupt(backend, e))
}

/// Rebuilds an instant from whole seconds and the nanoseconds within the
/// second, the exact form the stores keep next to their indexed column.
pub(crate) fn instant(
    backend: &'static str,
    seconds: i64,
    nanos: i64,
) -> Result<DateTime<Utc>, BillingError> {
    u32::try_from(nanos)
        .ok()
        .and_then(|n| DateTime::from_timestamp(seconds, n))
        .ok_or_else(|| corrupt(backend, format!("timestamp {seconds}s {nanos}ns")))
}

#[cfg(feature = "sqlite")]
/// Fixed-width RFC 3339 text with nanoseconds: sorts like the instant for
/// years 0000–9999 (SQLite keeps instants as such text).
pub(crate) fn sortable(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[cfg(feature = "sqlite")]
/// Parses a UUID stored as text.
pub(crate) fn parse_uuid(backend: &'static str, text: &str) -> Result<uuid::Uuid, BillingError> {
    uuid::Uuid::parse_str(text).map_err(|e| corrupt(backend, e))
}

/// A version as stored (`bigint`).
pub(crate) fn version_to_db(version: u64) -> Result<i64, BillingError> {
    i64::try_from(version).map_err(|_| BillingError::invalid("version", "exceeds i64::MAX"))
}

/// A stored version.
pub(crate) fn version_from_db(backend: &'static str, version: i64) -> Result<u64, BillingError> {
    u64::try_from(version).map_err(|_| corrupt(backend, format!("version {version}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_codes() {
        assert!(retryable_code("postgres", "40001"));
        assert!(retryable_code("postgres", "40P01"));
        assert!(!retryable_code("postgres", "23505"));
        assert!(!retryable_code("postgres", "22021"));
        assert!(retryable_code("sqlite", "5")); // SQLITE_BUSY
        assert!(retryable_code("sqlite", "517")); // SQLITE_BUSY_SNAPSHOT
        assert!(retryable_code("sqlite", "262")); // SQLITE_LOCKED_SHAREDCACHE
        assert!(!retryable_code("sqlite", "2067")); // SQLITE_CONSTRAINT_UNIQUE
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sortable_text_round_trips_and_sorts() {
        let a = DateTime::from_timestamp(1_700_000_000, 5).unwrap_or_default();
        let b = DateTime::from_timestamp(1_700_000_000, 40).unwrap_or_default();
        assert!(sortable(a) < sortable(b));
        assert_eq!(sortable(a), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(instant("t", 1_700_000_000, 5).ok(), Some(a));
    }
}
