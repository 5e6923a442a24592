//! The tax computation: per line, rounded per line.

use rust_decimal::Decimal;
use saas_core::TenantId;
use serde::{Deserialize, Serialize};

use super::{LineTax, TaxBehavior, TaxQuery, TaxRate, TaxResolver};
use crate::currency::Currency;
use crate::error::BillingError;
use crate::ids::SubscriptionId;
use crate::invoice::InvoiceLine;
use crate::money::Money;
use crate::rounding::RoundingMode;

/// Sets the taxes of every line from `resolver`'s rates (replacing any
/// computed before, so re-rating a draft never taxes twice).
///
/// On a line of rounded amount `A` with inclusive rates `p₁…` (summing to
/// `P`) and exclusive rates `q₁…`: each inclusive tax is
/// `round(A × pᵢ / (100 + P))`; the net is `A` less those taxes; each
/// exclusive tax is `round(net × qⱼ / 100)`. Rates are never compounded.
///
/// ```
/// use saas_billing::{
///     Currency, InvoiceLine, LineKind, Money, RoundingMode, StaticTaxRates, SubscriptionId,
///     TaxBehavior, TaxRate, TenantId, TimeZone, Utc, apply_taxes, dec,
/// };
/// # let at = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
/// # let line = |amount| InvoiceLine {
/// #     kind: LineKind::Licensed, description: "Seat".into(), price: None,
/// #     quantity: dec!(1), full_period_amount: None, components: Vec::new(),
/// #     proration: None, service_start: at, service_end: at,
/// #     amount: Money::new(amount, Currency::USD), taxes: Vec::new(),
/// #     discounts: Vec::new(),
/// # };
///
/// let vat = TaxRate::new("DE", "VAT", dec!(19), TaxBehavior::Exclusive).unwrap();
/// let table = StaticTaxRates::new().default_rates([vat]);
/// let mut lines = vec![line(dec!(0.13)), line(dec!(0.13)), line(dec!(0.13))];
/// apply_taxes(&mut lines, &table, TenantId::new(), SubscriptionId::new(), Currency::USD,
///     RoundingMode::HalfEven).unwrap();
/// // 0.0247 rounds to 0.02 on each line: 0.06, where the sum would give 0.07.
/// assert!(lines.iter().all(|l| l.taxes[0].amount.amount() == dec!(0.02)));
/// ```
///
/// # Errors
/// The resolver's; `Overflow`.
pub fn apply_taxes(
    lines: &mut [InvoiceLine],
    resolver: &dyn TaxResolver,
    tenant: TenantId,
    subscription: SubscriptionId,
    currency: Currency,
    rounding: RoundingMode,
) -> Result<(), BillingError> {
    for line in lines.iter_mut() {
        let rates = resolver.rates(&TaxQuery {
            tenant,
            subscription,
            currency,
            line,
        })?;
        line.taxes = line_taxes(line.amount, &rates, rounding)?;
    }
    Ok(())
}

fn line_taxes(
    amount: Money,
    rates: &[TaxRate],
    rounding: RoundingMode,
) -> Result<Vec<LineTax>, BillingError> {
    let inclusive_sum = rates
        .iter()
        .filter(|r| r.behavior() == TaxBehavior::Inclusive)
        .try_fold(Decimal::ZERO, |sum, r| sum.checked_add(r.percentage()))
        .ok_or_else(|| BillingError::overflow("the inclusive tax rates"))?;
    let divisor = Decimal::ONE_HUNDRED
        .checked_add(inclusive_sum)
        .ok_or_else(|| BillingError::overflow("the inclusive tax rates"))?;
    let mut inclusive = Vec::new();
    let mut net = amount;
    for rate in rates
        .iter()
        .filter(|r| r.behavior() == TaxBehavior::Inclusive)
    {
        let share = rate
            .percentage()
            .checked_div(divisor)
            .ok_or_else(|| BillingError::overflow("an inclusive tax"))?;
        let tax = amount.checked_mul(share)?.round(rounding);
        net = net.checked_sub(tax)?;
        inclusive.push((rate, tax));
    }
    let mut taxes: Vec<LineTax> = inclusive
        .into_iter()
        .map(|(rate, tax)| LineTax {
            rate: rate.clone(),
            taxable: net,
            amount: tax,
        })
        .collect();
    for rate in rates
        .iter()
        .filter(|r| r.behavior() == TaxBehavior::Exclusive)
    {
        let share = rate
            .percentage()
            .checked_div(Decimal::ONE_HUNDRED)
            .ok_or_else(|| BillingError::overflow("an exclusive tax"))?;
        taxes.push(LineTax {
            rate: rate.clone(),
            taxable: net,
            amount: net.checked_mul(share)?.round(rounding),
        });
    }
    Ok(taxes)
}

/// One rate's total on an invoice: the sums of its line taxes and of the
/// amounts they were computed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxSummary {
    /// The rate.
    pub rate: TaxRate,
    /// The sum of the taxed amounts.
    pub taxable: Money,
    /// The sum of the (per line rounded) taxes.
    pub amount: Money,
}

/// Per rate, in order of first appearance: the sums over `lines`.
pub(crate) fn summarize(
    currency: Currency,
    lines: &[InvoiceLine],
) -> Result<Vec<TaxSummary>, BillingError> {
    let mut summary: Vec<TaxSummary> = Vec::new();
    for tax in lines.iter().flat_map(|l| &l.taxes) {
        match summary.iter_mut().find(|s| s.rate == tax.rate) {
            Some(s) => {
                s.taxable = s.taxable.checked_add(tax.taxable)?;
                s.amount = s.amount.checked_add(tax.amount)?;
            }
            None => summary.push(TaxSummary {
                rate: tax.rate.clone(),
                taxable: Money::zero(currency).checked_add(tax.taxable)?,
                amount: Money::zero(currency).checked_add(tax.amount)?,
            }),
        }
    }
    Ok(summary)
}
