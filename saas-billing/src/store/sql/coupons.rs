//! [`CouponStore`] once for every [`Dialect`](super::dialect::Dialect):
//! `billing_coupons` holds the coupon as JSON (`body`) and its redemption
//! count; `billing_coupon_redemptions` one row per (coupon, subscription)
//! — the primary key that makes a second redemption `AlreadyExists`. A
//! redemption locks the coupon's row (`FOR UPDATE`; SQLite's write
//! transaction), checks expiry and the limit, inserts and counts, in one
//! transaction: racing redemptions never exceed the limit.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::TenantId;
use sqlx::Pool;

use super::dialect::{Dialect, Param, Sql, all};
use super::{corrupt, from_json, to_json};
use crate::discount::{Coupon, Redemption};
use crate::error::BillingError;
use crate::ids::{CouponId, SubscriptionId};
use crate::store::CouponStore;
use crate::store::memory_coupons::refusal;

/// A coupon store on a pool of a [`Sql`] database: implementing it
/// implements [`CouponStore`].
pub(crate) trait CouponTable: std::fmt::Debug + Send + Sync {
    /// The database.
    type Db: Sql;

    /// The pool holding the coupon tables.
    fn pool(&self) -> &Pool<Self::Db>;
}

fn read_coupon<D: Sql>(row: &D::Row) -> Result<Coupon, BillingError> {
    from_json(D::BACKEND, &D::text(row, "body").map_err(D::error)?)
}

fn read_redemption<D: Sql>(row: &D::Row) -> Result<Redemption, BillingError> {
    from_json(D::BACKEND, &D::text(row, "body").map_err(D::error)?)
}

fn already_exists(coupon: &CouponId, subscription: SubscriptionId) -> BillingError {
    BillingError::AlreadyExists {
        what: "coupon redemption",
        id: format!("{coupon} by subscription {subscription}"),
    }
}

#[async_trait]
impl<S: CouponTable> CouponStore for S {
    async fn create(&self, coupon: Coupon) -> Result<Coupon, BillingError> {
        let sql = format!(
            "INSERT INTO billing_coupons (id, max_redemptions, redeem_by, times_redeemed, body) \
             VALUES ($1, $2, $3, 0, $4{})",
            S::Db::JSON_PARAM
        );
        let params = vec![
            Param::Text(coupon.id.to_string()),
            Param::MaybeInt(coupon.max_redemptions.map(i64::from)),
            Param::At(coupon.redeem_by),
            Param::Text(to_json(S::Db::BACKEND, &coupon)?),
        ];
        let mut conn = self.pool().acquire().await.map_err(S::Db::error)?;
        match S::Db::execute(&mut *conn, sql, params).await {
            Ok(_) => Ok(coupon),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(BillingError::AlreadyExists {
                    what: "coupon",
                    id: coupon.id.to_string(),
                })
            }
            Err(e) => Err(S::Db::error(e)),
        }
    }

    async fn get(&self, id: &CouponId) -> Result<Coupon, BillingError> {
        let sql = format!(
            "SELECT body{} AS body FROM billing_coupons WHERE id = $1",
            S::Db::JSON_TEXT
        );
        super::dialect::optional(
            self.pool(),
            sql,
            vec![Param::Text(id.to_string())],
            read_coupon::<S::Db>,
        )
        .await?
        .ok_or_else(|| BillingError::not_found("coupon", id))
    }

    async fn redeem(
        &self,
        coupon: &CouponId,
        tenant: TenantId,
        subscription: SubscriptionId,
        start_period: i64,
        at: DateTime<Utc>,
    ) -> Result<Redemption, BillingError> {
        type D<S> = <S as CouponTable>::Db;
        let mut tx = D::<S>::begin_write(self.pool()).await?;
        let sql = format!(
            "SELECT body{} AS body, times_redeemed FROM billing_coupons WHERE id = $1{}",
            D::<S>::JSON_TEXT,
            D::<S>::FOR_UPDATE
        );
        let row = D::<S>::fetch_optional(&mut *tx, sql, vec![Param::Text(coupon.to_string())])
            .await
            .map_err(D::<S>::error)?
            .ok_or_else(|| BillingError::not_found("coupon", coupon))?;
        let stored = read_coupon::<D<S>>(&row)?;
        let count = D::<S>::int(&row, "times_redeemed").map_err(D::<S>::error)?;
        let count = u64::try_from(count)
            .map_err(|_| corrupt(D::<S>::BACKEND, format!("times_redeemed {count}")))?;
        if let Some(refused) = refusal(&stored, count, at) {
            return Err(refused);
        }
        let redemption = Redemption {
            coupon: stored,
            tenant_id: tenant,
            subscription_id: subscription,
            start_period,
            redeemed_at: at,
        };
        let sql = format!(
            "INSERT INTO billing_coupon_redemptions (coupon_id, tenant_id, subscription_id, body) \
             VALUES ($1, $2, $3, $4{})",
            D::<S>::JSON_PARAM
        );
        let params = vec![
            Param::Text(coupon.to_string()),
            Param::Tenant(tenant),
            Param::Id(*subscription.as_uuid()),
            Param::Text(to_json(D::<S>::BACKEND, &redemption)?),
        ];
        match D::<S>::execute(&mut *tx, sql, params).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                return Err(already_exists(coupon, subscription));
            }
            Err(e) => return Err(D::<S>::error(e)),
        }
        let sql = "UPDATE billing_coupons SET times_redeemed = times_redeemed + 1 WHERE id = $1";
        D::<S>::execute(
            &mut *tx,
            sql.to_owned(),
            vec![Param::Text(coupon.to_string())],
        )
        .await
        .map_err(D::<S>::error)?;
        tx.commit().await.map_err(D::<S>::error)?;
        Ok(redemption)
    }

    async fn times_redeemed(&self, id: &CouponId) -> Result<u32, BillingError> {
        let sql = "SELECT times_redeemed FROM billing_coupons WHERE id = $1".to_owned();
        let count =
            super::dialect::optional(self.pool(), sql, vec![Param::Text(id.to_string())], |row| {
                S::Db::int(row, "times_redeemed").map_err(S::Db::error)
            })
            .await?
            .ok_or_else(|| BillingError::not_found("coupon", id))?;
        u32::try_from(count).map_err(|_| corrupt(S::Db::BACKEND, format!("times_redeemed {count}")))
    }

    async fn redemptions(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Vec<Redemption>, BillingError> {
        let sql = format!(
            "SELECT body{} AS body FROM billing_coupon_redemptions \
             WHERE tenant_id = $1 AND subscription_id = $2 ORDER BY sequence",
            S::Db::JSON_TEXT
        );
        let params = vec![Param::Tenant(tenant), Param::Id(*subscription.as_uuid())];
        all(self.pool(), sql, params, read_redemption::<S::Db>).await
    }
}
