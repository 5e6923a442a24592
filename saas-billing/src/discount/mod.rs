//! Discounts: coupons (percentage or fixed amount per currency; once,
//! repeating for N periods or forever; on the whole invoice or on named
//! prices; with a redemption limit and a last redemption time) and their
//! redemption by subscriptions.
//!
//! Order, on each invoice (before tax, which is computed on the
//! discounted lines):
//! 1. Only lines of positive amount are discounted (credits never are),
//!    and only by coupons active in the invoice's period.
//! 2. Percentage coupons, in redemption order: each takes
//!    `round(amount × p / 100)` of every eligible line's *undiscounted*
//!    amount, rounded once per line, capped at what remains of the line.
//! 3. Fixed-amount coupons, in redemption order: the coupon's amount in
//!    the invoice's currency is shared among its eligible lines in
//!    proportion to what remains of each, by largest remainder in whole
//!    minor units; when it exceeds what remains, every eligible line is
//!    taken to zero and the rest is lost (not carried over).
//!
//! No discount takes a line below zero.

mod apply;

pub use apply::apply_discounts;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use saas_core::TenantId;
use serde::{Deserialize, Serialize};

use crate::currency::Currency;
use crate::error::BillingError;
use crate::ids::{CouponId, PriceKey, SubscriptionId};
use crate::money::Money;

/// How much a coupon takes off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CouponAmount {
    /// A percentage (20 for 20 %) of each eligible line.
    Percent(Decimal),
    /// A fixed amount per invoice, one per currency; a subscription in
    /// another currency cannot redeem it.
    Fixed(Vec<Money>),
}

/// For how many billing periods a redeemed coupon applies, from the
/// period it was redeemed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CouponDuration {
    /// The redemption period's invoice only.
    Once,
    /// That many periods' invoices (at least 1).
    Repeating {
        /// The number of periods.
        periods: u32,
    },
    /// Every invoice from the redemption period on.
    Forever,
}

/// Which lines a coupon discounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CouponScope {
    /// Every line of positive amount.
    Invoice,
    /// Only lines of these prices.
    Prices(Vec<PriceKey>),
}

/// A coupon. Build it with [`Coupon::percent`] or [`Coupon::fixed`] and
/// the `with_*` setters; store it in a
/// [`CouponStore`](crate::store::CouponStore).
///
/// ```
/// use saas_billing::{Coupon, CouponDuration, CouponId, dec};
///
/// let launch = Coupon::percent(CouponId::new("launch-20").unwrap(), "Launch", dec!(20))
///     .unwrap()
///     .with_duration(CouponDuration::Repeating { periods: 3 })
///     .unwrap()
///     .with_max_redemptions(100)
///     .unwrap();
/// assert_eq!(launch.max_redemptions, Some(100));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    /// Its id (the code customers type, or your own key).
    pub id: CouponId,
    /// The name shown on invoice lines.
    pub name: String,
    /// Percentage or fixed amounts.
    pub amount: CouponAmount,
    /// How many periods it applies for.
    pub duration: CouponDuration,
    /// Which lines it discounts.
    pub scope: CouponScope,
    /// How many subscriptions may redeem it in all; `None` for no limit.
    pub max_redemptions: Option<u32>,
    /// The instant from which it can no longer be redeemed (redemptions
    /// made before keep applying); `None` for never.
    pub redeem_by: Option<DateTime<Utc>>,
}

impl Coupon {
    /// A coupon of `percent` % (more than 0, at most 100), once, on the
    /// whole invoice, without limits.
    ///
    /// # Errors
    /// `InvalidInput` (field `percent`) out of range.
    pub fn percent(
        id: CouponId,
        name: impl Into<String>,
        percent: Decimal,
    ) -> Result<Coupon, BillingError> {
        if percent <= Decimal::ZERO || percent > Decimal::ONE_HUNDRED {
            return Err(BillingError::invalid(
                "percent",
                format!("{percent} must be more than 0 and at most 100"),
            ));
        }
        Ok(Coupon::new(id, name, CouponAmount::Percent(percent)))
    }

    /// A coupon of a fixed amount per invoice (one amount per currency),
    /// once, on the whole invoice, without limits.
    ///
    /// # Errors
    /// `InvalidInput` (field `amounts`) if empty, with two amounts in one
    /// currency, or an amount that is not positive or not rounded to its
    /// currency's minor unit.
    pub fn fixed(
        id: CouponId,
        name: impl Into<String>,
        amounts: impl IntoIterator<Item = Money>,
    ) -> Result<Coupon, BillingError> {
        let amounts: Vec<Money> = amounts.into_iter().collect();
        if amounts.is_empty() {
            return Err(BillingError::invalid("amounts", "give at least one amount"));
        }
        for (i, amount) in amounts.iter().enumerate() {
            if amount.is_negative() || amount.is_zero() || !amount.is_rounded() {
                return Err(BillingError::invalid(
                    "amounts",
                    format!("{amount} must be positive and rounded to the minor unit"),
                ));
            }
            if amounts[..i]
                .iter()
                .any(|a| a.currency() == amount.currency())
            {
                return Err(BillingError::invalid(
                    "amounts",
                    format!("two amounts in {}", amount.currency()),
                ));
            }
        }
        Ok(Coupon::new(id, name, CouponAmount::Fixed(amounts)))
    }

    fn new(id: CouponId, name: impl Into<String>, amount: CouponAmount) -> Coupon {
        Coupon {
            id,
            name: name.into(),
            amount,
            duration: CouponDuration::Once,
            scope: CouponScope::Invoice,
            max_redemptions: None,
            redeem_by: None,
        }
    }

    /// Sets the duration.
    ///
    /// # Errors
    /// `InvalidInput` for `Repeating` of 0 periods.
    pub fn with_duration(mut self, duration: CouponDuration) -> Result<Coupon, BillingError> {
        if duration == (CouponDuration::Repeating { periods: 0 }) {
            return Err(BillingError::invalid(
                "duration",
                "repeat for at least 1 period",
            ));
        }
        self.duration = duration;
        Ok(self)
    }

    /// Restricts it to lines of these prices.
    ///
    /// # Errors
    /// `InvalidInput` for an empty list.
    pub fn with_prices(
        mut self,
        prices: impl IntoIterator<Item = PriceKey>,
    ) -> Result<Coupon, BillingError> {
        let prices: Vec<PriceKey> = prices.into_iter().collect();
        if prices.is_empty() {
            return Err(BillingError::invalid("prices", "name at least one price"));
        }
        self.scope = CouponScope::Prices(prices);
        Ok(self)
    }

    /// Limits how many subscriptions may redeem it.
    ///
    /// # Errors
    /// `InvalidInput` for 0.
    pub fn with_max_redemptions(mut self, max: u32) -> Result<Coupon, BillingError> {
        if max == 0 {
            return Err(BillingError::invalid(
                "max_redemptions",
                "must be at least 1",
            ));
        }
        self.max_redemptions = Some(max);
        Ok(self)
    }

    /// Sets the instant from which it can no longer be redeemed.
    pub fn with_redeem_by(mut self, at: DateTime<Utc>) -> Coupon {
        self.redeem_by = Some(at);
        self
    }

    /// The fixed amount in `currency`, if it is a fixed-amount coupon.
    pub fn fixed_amount(&self, currency: Currency) -> Option<Money> {
        match &self.amount {
            CouponAmount::Fixed(amounts) => {
                amounts.iter().find(|a| a.currency() == currency).copied()
            }
            CouponAmount::Percent(_) => None,
        }
    }

    /// Whether a subscription in `currency` can use it.
    pub fn applies_in(&self, currency: Currency) -> bool {
        matches!(self.amount, CouponAmount::Percent(_)) || self.fixed_amount(currency).is_some()
    }
}

/// A coupon redeemed by a subscription, with the coupon as it was then
/// (later edits of the coupon do not change what was promised).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redemption {
    /// The coupon, as redeemed.
    pub coupon: Coupon,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// The billing period whose invoice it first applies to.
    pub start_period: i64,
    /// When.
    pub redeemed_at: DateTime<Utc>,
}

impl Redemption {
    /// Whether it applies to the invoice of `period`.
    pub fn active_in(&self, period: i64) -> bool {
        let since = period.saturating_sub(self.start_period);
        since >= 0
            && match self.coupon.duration {
                CouponDuration::Once => since == 0,
                CouponDuration::Repeating { periods } => since < i64::from(periods),
                CouponDuration::Forever => true,
            }
    }
}

/// A discount taken off one invoice line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineDiscount {
    /// The coupon.
    pub coupon: CouponId,
    /// Its name.
    pub name: String,
    /// The amount taken off (positive; the line's `amount` is already
    /// reduced by it).
    pub amount: Money,
}
