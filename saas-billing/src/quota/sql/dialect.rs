//! What the quota stores do differently per database: the SQL of the
//! changes that must happen exactly once, how instants are stored, and
//! how an operation is serialized against the same key's others.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Database;
#[cfg(feature = "sqlite")]
use sqlx::Transaction;

use crate::error::BillingError;
use crate::store::sql::dialect::{Param, Sql};

/// What the quota stores do differently per database.
#[async_trait]
pub(crate) trait QuotaDialect: Sql {
    /// Statements, run in order with the key and the instant `$4`, that
    /// delete the key's reservations expired at `$4` and subtract their
    /// units from `used`, exactly once.
    const RECLAIM: &'static [&'static str];

    /// Statements, run in order with the key and the reservation id `$4`,
    /// that delete that reservation and subtract its units from `used`,
    /// exactly once; nothing if it is gone.
    const RELEASE: &'static [&'static str];

    /// An instant as `expires_at` stores it.
    fn instant(at: DateTime<Utc>) -> Result<Param, BillingError>;

    /// Begins one operation on `conn`, serialized against the same key's
    /// other operations as this database needs.
    async fn begin_op(conn: &mut Self::Connection) -> Result<Op<'_, Self>, BillingError>;
}

/// One operation in progress on a connection.
pub(crate) enum Op<'c, D: Database> {
    /// Statements run on the connection as they come, each on its own or
    /// in the caller's transaction; each serializes itself (PostgreSQL).
    #[cfg(feature = "postgres")]
    Statements(&'c mut D::Connection),
    /// Statements run in a transaction (or savepoint) of their own,
    /// committed by [`Op::finish`], rolled back if dropped on an error
    /// (SQLite).
    #[cfg(feature = "sqlite")]
    Transaction(Transaction<'c, D>),
}

impl<D: Database> Op<'_, D> {
    pub(super) fn conn(&mut self) -> &mut D::Connection {
        match self {
            #[cfg(feature = "postgres")]
            Op::Statements(conn) => conn,
            #[cfg(feature = "sqlite")]
            Op::Transaction(tx) => tx,
        }
    }

    pub(super) async fn finish(self) -> Result<(), sqlx::Error> {
        match self {
            #[cfg(feature = "postgres")]
            Op::Statements(_) => Ok(()),
            #[cfg(feature = "sqlite")]
            Op::Transaction(tx) => tx.commit().await,
        }
    }
}
