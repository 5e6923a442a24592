//! Coupons in memory: one mutex is the critical section a SQL store's
//! transaction would be.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::TenantId;

use super::CouponStore;
use crate::discount::{Coupon, Redemption};
use crate::error::BillingError;
use crate::ids::{CouponId, SubscriptionId};

#[derive(Debug, Default)]
struct CouponState {
    coupons: HashMap<CouponId, Coupon>,
    redemptions: Vec<Redemption>,
}

/// Coupons and redemptions in memory.
#[derive(Debug, Default)]
pub struct InMemoryCouponStore {
    state: Mutex<CouponState>,
}

impl InMemoryCouponStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Why `coupon` cannot be redeemed at `at` after `redeemed` redemptions.
pub(crate) fn refusal(coupon: &Coupon, redeemed: u64, at: DateTime<Utc>) -> Option<BillingError> {
    let reason = if coupon.redeem_by.is_some_and(|by| at >= by) {
        "expired"
    } else if coupon
        .max_redemptions
        .is_some_and(|max| redeemed >= u64::from(max))
    {
        "fully redeemed"
    } else {
        return None;
    };
    Some(BillingError::CouponNotRedeemable {
        coupon: coupon.id.to_string(),
        reason,
    })
}

#[async_trait]
impl CouponStore for InMemoryCouponStore {
    async fn create(&self, coupon: Coupon) -> Result<Coupon, BillingError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.coupons.contains_key(&coupon.id) {
            return Err(BillingError::AlreadyExists {
                what: "coupon",
                id: coupon.id.to_string(),
            });
        }
        state.coupons.insert(coupon.id.clone(), coupon.clone());
        Ok(coupon)
    }

    async fn get(&self, id: &CouponId) -> Result<Coupon, BillingError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .coupons
            .get(id)
            .cloned()
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
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let stored = state
            .coupons
            .get(coupon)
            .cloned()
            .ok_or_else(|| BillingError::not_found("coupon", coupon))?;
        let redeemed = state
            .redemptions
            .iter()
            .filter(|r| r.coupon.id == *coupon)
            .count() as u64;
        if let Some(refused) = refusal(&stored, redeemed, at) {
            return Err(refused);
        }
        if state
            .redemptions
            .iter()
            .any(|r| r.coupon.id == *coupon && r.subscription_id == subscription)
        {
            return Err(BillingError::AlreadyExists {
                what: "coupon redemption",
                id: format!("{coupon} by subscription {subscription}"),
            });
        }
        let redemption = Redemption {
            coupon: stored,
            tenant_id: tenant,
            subscription_id: subscription,
            start_period,
            redeemed_at: at,
        };
        state.redemptions.push(redemption.clone());
        Ok(redemption)
    }

    async fn times_redeemed(&self, id: &CouponId) -> Result<u32, BillingError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.coupons.contains_key(id) {
            return Err(BillingError::not_found("coupon", id));
        }
        let count = state
            .redemptions
            .iter()
            .filter(|r| r.coupon.id == *id)
            .count();
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    async fn redemptions(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Vec<Redemption>, BillingError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(state
            .redemptions
            .iter()
            .filter(|r| r.tenant_id == tenant && r.subscription_id == subscription)
            .cloned()
            .collect())
    }
}
