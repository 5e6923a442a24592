//! Applying redeemed coupons to an invoice's lines (order: module docs).

use rust_decimal::Decimal;

use super::{CouponAmount, CouponScope, LineDiscount, Redemption};
use crate::currency::Currency;
use crate::error::BillingError;
use crate::invoice::InvoiceLine;
use crate::money::Money;
use crate::rounding::RoundingMode;

/// Applies the redemptions active in `period` to `lines`, in the order
/// of the [module docs](crate::discount): first undoing any discount the
/// lines carry (so re-rating a draft never discounts twice), then
/// percentage coupons, then fixed amounts allocated by largest remainder.
/// Each line's `amount` is reduced and the discount recorded in its
/// `discounts`; no line goes below zero.
///
/// ```
/// use saas_billing::{
///     Coupon, CouponId, Currency, InvoiceLine, LineKind, Money, Redemption, RoundingMode,
///     SubscriptionId, TenantId, TimeZone, Utc, apply_discounts, dec,
/// };
/// # let at = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
/// # let line = |amount| InvoiceLine {
/// #     kind: LineKind::Licensed, description: "Seat".into(), price: None,
/// #     quantity: dec!(1), full_period_amount: None, components: Vec::new(),
/// #     proration: None, service_start: at, service_end: at,
/// #     amount: Money::new(amount, Currency::USD), taxes: Vec::new(), discounts: Vec::new(),
/// # };
/// let usd = |a| Money::new(a, Currency::USD);
/// let ten_off = Coupon::fixed(CouponId::new("ten").unwrap(), "10 off", [usd(dec!(10.00))]).unwrap();
/// let redemption = Redemption {
///     coupon: ten_off, tenant_id: TenantId::new(), subscription_id: SubscriptionId::new(),
///     start_period: 0, redeemed_at: at,
/// };
/// // 10.00 shared over 10.00, 10.00 and 10.00: 3.34, 3.33, 3.33.
/// let mut lines = vec![line(dec!(10.00)), line(dec!(10.00)), line(dec!(10.00))];
/// apply_discounts(&mut lines, &[redemption], 0, Currency::USD, RoundingMode::HalfEven).unwrap();
/// let left: Vec<_> = lines.iter().map(|l| l.amount.amount()).collect();
/// assert_eq!(left, [dec!(6.66), dec!(6.67), dec!(6.67)]);
/// ```
///
/// # Errors
/// `CurrencyMismatch` or `Overflow`.
pub fn apply_discounts(
    lines: &mut [InvoiceLine],
    redemptions: &[Redemption],
    period: i64,
    currency: Currency,
    rounding: RoundingMode,
) -> Result<(), BillingError> {
    for line in lines.iter_mut() {
        for discount in std::mem::take(&mut line.discounts) {
            line.amount = line.amount.checked_add(discount.amount)?;
        }
    }
    let original: Vec<Money> = lines.iter().map(|l| l.amount).collect();
    let active: Vec<&Redemption> = redemptions
        .iter()
        .filter(|r| r.active_in(period) && r.coupon.applies_in(currency))
        .collect();
    let eligible = |line: &InvoiceLine, before: Money, scope: &CouponScope| {
        before.amount() > Decimal::ZERO
            && match scope {
                CouponScope::Invoice => true,
                CouponScope::Prices(keys) => line.price.as_ref().is_some_and(|p| keys.contains(p)),
            }
    };
    for redemption in &active {
        let coupon = &redemption.coupon;
        let CouponAmount::Percent(percent) = coupon.amount else {
            continue;
        };
        let share = percent
            .checked_div(Decimal::ONE_HUNDRED)
            .ok_or_else(|| BillingError::overflow("a percentage discount"))?;
        for (line, before) in lines.iter_mut().zip(&original) {
            if !eligible(line, *before, &coupon.scope) {
                continue;
            }
            let wanted = before.checked_mul(share)?.round(rounding);
            take(line, wanted, coupon)?;
        }
    }
    for redemption in &active {
        let coupon = &redemption.coupon;
        let Some(amount) = coupon.fixed_amount(currency) else {
            continue;
        };
        let targets: Vec<usize> = (0..lines.len())
            .filter(|&i| {
                eligible(&lines[i], original[i], &coupon.scope)
                    && lines[i].amount.amount() > Decimal::ZERO
            })
            .collect();
        if targets.is_empty() {
            continue;
        }
        let remaining: Vec<Decimal> = targets.iter().map(|&i| lines[i].amount.amount()).collect();
        let left = remaining
            .iter()
            .try_fold(Decimal::ZERO, |sum, r| sum.checked_add(*r))
            .ok_or_else(|| BillingError::overflow("a fixed discount"))?;
        let parts = if amount.amount() >= left {
            targets.iter().map(|&i| lines[i].amount).collect()
        } else {
            amount.allocate(&remaining)?
        };
        for (&i, part) in targets.iter().zip(parts) {
            take(&mut lines[i], part, coupon)?;
        }
    }
    Ok(())
}

/// Takes `wanted` (at most what remains of the line) off the line.
fn take(line: &mut InvoiceLine, wanted: Money, coupon: &super::Coupon) -> Result<(), BillingError> {
    let taken = if wanted.amount() > line.amount.amount() {
        line.amount
    } else {
        wanted
    };
    if taken.amount() <= Decimal::ZERO {
        return Ok(());
    }
    line.amount = line.amount.checked_sub(taken)?;
    line.discounts.push(LineDiscount {
        coupon: coupon.id.clone(),
        name: coupon.name.clone(),
        amount: taken,
    });
    Ok(())
}
