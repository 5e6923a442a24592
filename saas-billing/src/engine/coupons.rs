//! Coupons through the engine: creating them and redeeming them for a
//! subscription; the billing cycle applies them to each invoice.

use saas_core::TenantId;

use super::{BillingEngine, cycle::CycleReport};
use crate::discount::{Coupon, Redemption};
use crate::error::BillingError;
use crate::ids::{CouponId, SubscriptionId};
use crate::subscription::SubscriptionStatus;

impl BillingEngine {
    /// Stores a new coupon.
    ///
    /// # Errors
    /// As [`CouponStore::create`](crate::CouponStore::create).
    pub async fn create_coupon(&self, coupon: Coupon) -> Result<Coupon, BillingError> {
        self.stores.coupons.create(coupon).await
    }

    /// Redeems `coupon` for the subscription at the clock's time. It
    /// applies from the invoice of the period containing now (for a
    /// subscription in its trial: of the period the trial ends in), for
    /// the coupon's duration, to every invoice drafted or finalized from
    /// then on — a draft of an ended period awaiting finalization is not
    /// discounted.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use saas_billing::*;
    /// # async fn run(engine: &BillingEngine, tenant: TenantId, sub: SubscriptionId) -> Result<(), BillingError> {
    /// let launch = Coupon::percent(CouponId::new("launch-20")?, "Launch 20 %", dec!(20))?
    ///     .with_duration(CouponDuration::Repeating { periods: 3 })?;
    /// engine.create_coupon(launch).await?;
    /// engine.redeem_coupon(tenant, sub, &CouponId::new("launch-20")?).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `NotFound` (coupon or subscription); `InvalidInput` if the
    /// subscription has ended or the coupon has no amount in its
    /// currency; `CouponNotRedeemable` (expired, fully redeemed) and
    /// `AlreadyExists` (redeemed before) from the store.
    pub async fn redeem_coupon(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        coupon: &CouponId,
    ) -> Result<Redemption, BillingError> {
        let now = self.clock.now();
        self.advance(tenant, subscription, now, &mut CycleReport::default())
            .await?;
        let sub = self.stores.subscriptions.get(tenant, subscription).await?;
        if sub.status.is_terminal() {
            return Err(BillingError::invalid(
                "subscription",
                format!(
                    "{subscription} has ended ({}); it takes no coupon",
                    sub.status
                ),
            ));
        }
        let stored = self.stores.coupons.get(coupon).await?;
        if !stored.applies_in(sub.currency) {
            return Err(BillingError::invalid(
                "coupon",
                format!("{coupon} has no amount in {}", sub.currency),
            ));
        }
        let from = match (sub.status, sub.trial_end) {
            (SubscriptionStatus::Trialing, Some(end)) if end > now => end,
            _ => now,
        };
        let start = sub.calendar.period_containing(from)?.index();
        self.stores
            .coupons
            .redeem(coupon, tenant, subscription, start, now)
            .await
    }
}
