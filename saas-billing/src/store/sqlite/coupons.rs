//! [`CouponStore`](crate::store::CouponStore) on Sqlite: the shared
//! implementation ([`crate::store::sql::coupons`]) on a [`SqlitePool`].

use sqlx::{Sqlite, SqlitePool};

use crate::store::sql::coupons::CouponTable;

/// Coupons in `billing_coupons` and their redemptions in
/// `billing_coupon_redemptions` (one per coupon and subscription);
/// redemptions of one coupon are serialized, so its limit holds.
///
/// Implements [`CouponStore`](crate::store::CouponStore) through the
/// implementation it shares with the other SQL backend.
#[derive(Debug, Clone)]
pub struct SqliteCouponStore {
    pool: SqlitePool,
}

impl SqliteCouponStore {
    /// A store on `pool` (run [`SqliteBillingStores::migrate`](super::SqliteBillingStores::migrate) first).
    pub fn new(pool: SqlitePool) -> SqliteCouponStore {
        SqliteCouponStore { pool }
    }
}

impl CouponTable for SqliteCouponStore {
    type Db = Sqlite;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}
