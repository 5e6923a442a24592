//! [`CouponStore`](crate::store::CouponStore) on Postgres: the shared
//! implementation ([`crate::store::sql::coupons`]) on a [`PgPool`].

use sqlx::{PgPool, Postgres};

use crate::store::sql::coupons::CouponTable;

/// Coupons in `billing_coupons` and their redemptions in
/// `billing_coupon_redemptions` (one per coupon and subscription);
/// redemptions of one coupon are serialized, so its limit holds.
///
/// Implements [`CouponStore`](crate::store::CouponStore) through the
/// implementation it shares with the other SQL backend.
#[derive(Debug, Clone)]
pub struct PgCouponStore {
    pool: PgPool,
}

impl PgCouponStore {
    /// A store on `pool` (run [`PgBillingStores::migrate`](super::PgBillingStores::migrate) first).
    pub fn new(pool: PgPool) -> PgCouponStore {
        PgCouponStore { pool }
    }
}

impl CouponTable for PgCouponStore {
    type Db = Postgres;

    fn pool(&self) -> &PgPool {
        &self.pool
    }
}
