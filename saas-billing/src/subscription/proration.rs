//! Plan-change policies and proration by the exact fraction of a period.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::calendar::Period;
use crate::currency::Currency;
use crate::error::BillingError;
use crate::invoice::{InvoiceLine, LineKind};
use crate::plan::{PlanVersion, Price, price_quantity};
use crate::rounding::RoundingMode;

/// When a plan change takes effect and whether it is prorated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChangeTiming {
    /// Now, crediting the unused time of the old plan and debiting the
    /// remaining time of the new one on the period's invoice.
    ImmediateWithProration,
    /// At the end of the current period; nothing to prorate.
    AtPeriodEnd,
    /// Now, without proration: the period is billed on the plan it started
    /// on, the new plan from the next period.
    ImmediateWithoutProration,
}

/// Whether a change raises or lowers the licensed (recurring and per-seat)
/// amount per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeDirection {
    /// The new plan and quantity cost more per period.
    Upgrade,
    /// They cost the same or less.
    Downgrade,
}

/// The [`ChangeTiming`] for upgrades and for downgrades, chosen separately.
///
/// The default is Stripe-like for upgrades (immediate, prorated) and
/// conservative for downgrades (at period end, so nobody is refunded for
/// a period already started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProrationPolicy {
    /// Timing of upgrades.
    pub upgrade: ChangeTiming,
    /// Timing of downgrades.
    pub downgrade: ChangeTiming,
}

impl Default for ProrationPolicy {
    fn default() -> Self {
        ProrationPolicy {
            upgrade: ChangeTiming::ImmediateWithProration,
            downgrade: ChangeTiming::AtPeriodEnd,
        }
    }
}

impl ProrationPolicy {
    /// A policy with the given timings.
    pub fn new(upgrade: ChangeTiming, downgrade: ChangeTiming) -> Self {
        ProrationPolicy { upgrade, downgrade }
    }

    /// The timing for `direction`.
    pub fn timing(&self, direction: ChangeDirection) -> ChangeTiming {
        match direction {
            ChangeDirection::Upgrade => self.upgrade,
            ChangeDirection::Downgrade => self.downgrade,
        }
    }
}

/// The unused part of `period` at `at`, exactly: whole seconds from `at` to
/// the end over seconds in the period, clamped to `[0, 1]`.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use saas_billing::{dec, proration_fraction, BillingCalendar, Cadence};
///
/// let april = BillingCalendar::new(Utc.with_ymd_and_hms(2024, 4, 1, 0, 0, 0).unwrap(),
///     chrono_tz::UTC, Cadence::monthly()).period(0)?;
/// let mid = Utc.with_ymd_and_hms(2024, 4, 16, 0, 0, 0).unwrap();
/// assert_eq!(proration_fraction(&april, mid), dec!(0.5));
/// # Ok::<(), saas_billing::BillingError>(())
/// ```
pub fn proration_fraction(period: &Period, at: DateTime<Utc>) -> Decimal {
    let (remaining, total) = remaining_seconds(period, at);
    if total.is_zero() {
        return Decimal::ZERO;
    }
    remaining / total
}

fn remaining_seconds(period: &Period, at: DateTime<Utc>) -> (Decimal, Decimal) {
    let total = period.duration().num_seconds().max(0);
    let remaining = (period.end() - at).num_seconds().clamp(0, total);
    (Decimal::from(remaining), Decimal::from(total))
}

/// Proration lines for the licensed prices of `plan` at `seats` over the
/// rest of `period` from `at`: credits (negative) when `credit`, debits
/// otherwise. Each line is the full-period amount × remaining seconds /
/// period seconds, rounded once.
pub(crate) fn proration_lines(
    plan: &PlanVersion,
    currency: Currency,
    seats: u32,
    period: &Period,
    at: DateTime<Utc>,
    credit: bool,
    rounding: RoundingMode,
) -> Result<Vec<InvoiceLine>, BillingError> {
    plan.prices()
        .iter()
        .filter(|p| p.is_licensed())
        .filter_map(|price| {
            let quantity = price_quantity(price, seats);
            let what = Prorated {
                plan,
                price,
                quantity,
                label: "",
            };
            prorated_line(&what, currency, period, at, credit, rounding).transpose()
        })
        .collect()
}

/// One licensed price to prorate: `quantity` of `price` of `plan`;
/// `label` ends its description (`" add-on"`).
pub(crate) struct Prorated<'a> {
    pub(crate) plan: &'a PlanVersion,
    pub(crate) price: &'a Price,
    pub(crate) quantity: Decimal,
    pub(crate) label: &'a str,
}

/// The proration line of one licensed price over the rest of `period`
/// from `at` (see [`proration_lines`]); `None` when no time is left.
pub(crate) fn prorated_line(
    what: &Prorated<'_>,
    currency: Currency,
    period: &Period,
    at: DateTime<Utc>,
    credit: bool,
    rounding: RoundingMode,
) -> Result<Option<InvoiceLine>, BillingError> {
    let Prorated {
        plan,
        price,
        quantity,
        label,
    } = *what;
    let (remaining, total) = remaining_seconds(period, at);
    if remaining.is_zero() || total.is_zero() {
        return Ok(None);
    }
    let fraction = remaining / total;
    let charge = price.charge(currency).ok_or_else(|| {
        BillingError::invalid(
            "currency",
            format!("{} is not sold in {currency}", plan.reference()),
        )
    })?;
    let full = charge.compute(quantity, rounding)?;
    let exact = full
        .limited_subtotal()
        .checked_mul(remaining)?
        .amount()
        .checked_div(total)
        .ok_or_else(|| BillingError::overflow("a prorated amount"))?;
    let prorated = crate::money::Money::new(exact, currency).round(rounding);
    let (amount, verb) = if credit {
        (prorated.negate(), "Unused time on")
    } else {
        (prorated, "Remaining time on")
    };
    Ok(Some(InvoiceLine {
        kind: if credit {
            LineKind::ProrationCredit
        } else {
            LineKind::ProrationDebit
        },
        description: format!(
            "{verb} {} ({}){label} after {}",
            price.description(),
            plan.reference(),
            at.to_rfc3339()
        ),
        price: Some(price.key().clone()),
        quantity,
        full_period_amount: Some(full.limited_subtotal()),
        components: full.components().to_vec(),
        proration: Some(fraction),
        service_start: at,
        service_end: period.end(),
        amount,
        taxes: Vec::new(),
        discounts: Vec::new(),
    }))
}
