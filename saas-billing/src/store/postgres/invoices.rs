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
pub struct PgInvoiceStore {
    pool: PgPool,
}

impl PgInvoiceStore {
    /// A store on `pool` (run [`PgBillingStores::migrate`](super::PgBillingStores::migrate) first).
    pub fn new(pool: PgPool) -> PgInvoiceStore {
        PgInvoiceStore { pool }
    }
}

impl InvoiceTable for PgInvoiceStore {
    type Db = Postgres;

    fn pool(&self) -> &PgPool {
        &self.pool
    }
}
