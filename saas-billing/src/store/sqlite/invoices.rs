//! [`InvoiceStore`](crate::store::InvoiceStore) on SQLite: the shared
//! implementation ([`crate::store::sql::invoices`]) on a [`SqlitePool`].

use sqlx::{Sqlite, SqlitePool};

use crate::store::sql::invoices::InvoiceTable;

/// Invoices in `billing_invoices`: one per subscription and period (a
/// unique constraint), immutable once finalized (checked by the store and
/// by a trigger).
///
/// Implements [`InvoiceStore`](crate::store::InvoiceStore) through the
/// implementation it shares with the other SQL backend.
#[derive(Debug, Clone)]
pub struct SqliteInvoiceStore {
    pool: SqlitePool,
}

impl SqliteInvoiceStore {
    /// A store on `pool` (run [`SqliteBillingStores::migrate`](super::SqliteBillingStores::migrate) first).
    pub fn new(pool: SqlitePool) -> SqliteInvoiceStore {
        SqliteInvoiceStore { pool }
    }
}

impl InvoiceTable for SqliteInvoiceStore {
    type Db = Sqlite;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}
