//! The whole foundation on one database, opened in one call: the tenant
//! catalog, the billing tables and the tenancy, migrated and set up, with
//! the outbox relay over every tenant's outbox and everything registered
//! to stop cleanly — what every host otherwise writes at startup.
//!
//! A stack owns the wiring, not the app: the app's tables and migrations,
//! tenant tables and pool limits go in through the tenancy builder (the
//! `configure` argument), its price list into the billing engine it builds
//! over [`PgStack::billing`]/[`SqliteStack::billing`], its consumers onto
//! the bus the relay feeds.

use saas_billing::BillingError;
use saas_core::ErrorKind;
use saas_tenancy::TenancyError;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PgStack;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteStack;

/// Why a stack could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    /// The database could not be reached or a file created.
    #[error("cannot open the database: {0}; check the URL or directory and that it is reachable")]
    Database(#[from] sqlx::Error),
    /// A directory could not be created.
    #[error("cannot create the data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The catalog, the tenancy or its migrations failed.
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    /// The billing tables could not be migrated.
    #[error(transparent)]
    Billing(#[from] BillingError),
}

impl StackError {
    /// The workspace-wide kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StackError::Database(_) | StackError::Io(_) => ErrorKind::Unavailable,
            StackError::Tenancy(e) => e.kind(),
            StackError::Billing(e) => e.kind(),
        }
    }
}
