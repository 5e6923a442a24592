//! [`InvoiceStore`](crate::store::InvoiceStore) on Postgres: the shared
//! implementation ([`crate::store::sql::invoices`]) on a [`PgPool`].

use sqlx::{PgPool, Postgres};

use crate::store::sql::invoices::InvoiceTable;

/// Invoices in `billing_invoices`: one per subscription and period (a
/// unique constraint), immutable once finalized (checked by the store and
/// by a trigger).
///
/// Implements [`InvoiceStore`](crate::store::InvoiceStore) through the
/// implementation it shares with the other SQL backend.
#[derive(Debug, Clone)]
pub struct PostgresInvoiceStore {
    pool: PgPool,
}

impl PostgresInvoiceStore {
    /// A store on `pool` (run [`PostgresBillingStores::migrate`](super::PostgresBillingStores::migrate) first).
    pub fn new(pool: PgPool) -> PostgresInvoiceStore {
        PostgresInvoiceStore { pool }
    }
}

impl InvoiceTable for PostgresInvoiceStore {
    type Db = Postgres;

    fn pool(&self) -> &PgPool {
        &self.pool
    }
}
