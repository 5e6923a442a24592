//! [`SubscriptionStore`](crate::store::SubscriptionStore) on SQLite: the
//! shared implementation ([`crate::store::sql::subscriptions`]) on a
//! [`SqlitePool`].

use sqlx::{Sqlite, SqlitePool};

use crate::store::sql::subscriptions::SubscriptionTable;

/// Subscriptions in `billing_subscriptions`, with optimistic versions.
///
/// Implements [`SubscriptionStore`](crate::store::SubscriptionStore) through the
/// implementation it shares with the other SQL backend.
#[derive(Debug, Clone)]
pub struct SqliteSubscriptionStore {
    pool: SqlitePool,
}

impl SqliteSubscriptionStore {
    /// A store on `pool` (run [`SqliteBillingStores::migrate`](super::SqliteBillingStores::migrate) first).
    pub fn new(pool: SqlitePool) -> SqliteSubscriptionStore {
        SqliteSubscriptionStore { pool }
    }
}

impl SubscriptionTable for SqliteSubscriptionStore {
    type Db = Sqlite;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}
