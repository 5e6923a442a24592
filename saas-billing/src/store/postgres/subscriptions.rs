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
pub struct PgSubscriptionStore {
    pool: PgPool,
}

impl PgSubscriptionStore {
    /// A store on `pool` (run [`PgBillingStores::migrate`](super::PgBillingStores::migrate) first).
    pub fn new(pool: PgPool) -> PgSubscriptionStore {
        PgSubscriptionStore { pool }
    }
}

impl SubscriptionTable for PgSubscriptionStore {
    type Db = Postgres;

    fn pool(&self) -> &PgPool {
        &self.pool
    }
}
