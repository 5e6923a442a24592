//! [`SubscriptionStore`](crate::store::SubscriptionStore) on PostgreSQL:
//! the shared implementation ([`crate::store::sql::subscriptions`]) on a
//! [`PgPool`].

use sqlx::{PgPool, Postgres};

use crate::store::sql::subscriptions::SubscriptionTable;

/// Subscriptions in `billing_subscriptions`, with optimistic versions.
///
/// Implements [`SubscriptionStore`](crate::store::SubscriptionStore) through the
/// implementation it shares with the other SQL backend.
#[derive(Debug, Clone)]
pub struct PostgresSubscriptionStore {
    pool: PgPool,
}

impl PostgresSubscriptionStore {
    /// A store on `pool` (run [`PostgresBillingStores::migrate`](super::PostgresBillingStores::migrate) first).
    pub fn new(pool: PgPool) -> PostgresSubscriptionStore {
        PostgresSubscriptionStore { pool }
    }
}

impl SubscriptionTable for PostgresSubscriptionStore {
    type Db = Postgres;

    fn pool(&self) -> &PgPool {
        &self.pool
    }
}
