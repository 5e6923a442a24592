//! Rating: a pure function from a plan version, usage aggregates and a
//! period to invoice lines.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use saas_core::Clock;

use super::{InvoiceLine, LineKind, total_of};
use crate::calendar::Period;
use crate::currency::Currency;
use crate::error::BillingError;
use crate::ids::MeterKey;
use crate::metering::Aggregate;
use crate::money::Money;
use crate::plan::{PlanVersion, Price, PriceKind, price_quantity};
use crate::rounding::RoundingMode;

/// The licensed prices billed for a whole period: the plan version and
/// seat count the period started on.
#[derive(Debug, Clone, Copy)]
pub struct LicensedBasis<'a> {
    /// The plan version.
    pub plan: &'a PlanVersion,
    /// Seats for per-seat prices.
    pub seats: u32,
}

/// Late usage for an already finalized period `period`: its aggregates
/// as billed (`before`) and including the late events (`after`), both over
/// the whole period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCorrection {
    /// The meter.
    pub meter: MeterKey,
    /// The finalized period's index.
    pub period: i64,
    /// Aggregates as billed.
    pub before: Vec<Aggregate>,
    /// Aggregates with the late events.
    pub after: Vec<Aggregate>,
    /// The plan version that rated the late period's usage (its
    /// invoice's plan): the correction is priced on it, not on the plan
    /// of the invoice that carries the correction.
    pub plan: PlanVersion,
}

/// Everything rating needs; nothing is read from anywhere else.
#[derive(Debug, Clone, Copy)]
pub struct RatingInput<'a> {
    /// The billing period.
    pub period: Period,
    /// The invoice currency.
    pub currency: Currency,
    /// How every line is rounded (once, per line).
    pub rounding: RoundingMode,
    /// Licensed prices for the whole period; `None` when the period is not
    /// billed (paused at its start, or already rated on the draft).
    pub licensed: Option<LicensedBasis<'a>>,
    /// Lines carried over as they are (proration credits and debits).
    pub adjustments: &'a [InvoiceLine],
    /// The plan version whose metered prices rate the usage.
    pub usage_plan: &'a PlanVersion,
    /// Aggregates of the period's usage per meter (over the whole period).
    pub usage: &'a BTreeMap<MeterKey, Vec<Aggregate>>,
    /// Late usage of earlier finalized periods.
    pub corrections: &'a [UsageCorrection],
}

/// A rated invoice, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceDraft {
    /// The lines: licensed, adjustments, usage, corrections.
    pub lines: Vec<InvoiceLine>,
    /// The sum of the rounded lines.
    pub total: Money,
    /// When it was rated (from the clock).
    pub rated_at: DateTime<Utc>,
}

/// Rates a period: licensed prices for the whole period, the adjustments
/// as given, one usage line per metered price and group (a price with no
/// usage gets a zero-quantity line, so minimums apply), and one correction
/// line per corrected group. The total is the sum of the rounded lines.
///
/// Deterministic: the same input and clock reading give the same draft.
///
/// # Errors
/// `InvalidInput` if a price is not sold in `currency`; `Overflow`;
/// `CurrencyMismatch` if an adjustment is in another currency.
pub fn rate(input: &RatingInput<'_>, clock: &dyn Clock) -> Result<InvoiceDraft, BillingError> {
    let mut lines = Vec::new();
    if let Some(basis) = input.licensed {
        for price in basis.plan.prices().iter().filter(|p| p.is_licensed()) {
            let quantity = price_quantity(price, basis.seats);
            let line =
                charge(price, input.currency, basis.plan)?.compute(quantity, input.rounding)?;
            lines.push(InvoiceLine {
                kind: LineKind::Licensed,
                description: format!("{} ({})", price.description(), basis.plan.reference()),
                price: Some(price.key().clone()),
                quantity,
                full_period_amount: None,
                components: line.components().to_vec(),
                proration: None,
                service_start: input.period.start(),
                service_end: input.period.end(),
                amount: line.amount(),
                taxes: Vec::new(),
                discounts: Vec::new(),
            });
        }
    }
    lines.extend(input.adjustments.iter().cloned());
    let plan = input.usage_plan;
    for price in plan.prices() {
        let PriceKind::Metered { meter } = price.kind() else {
            continue;
        };
        let charge = charge(price, input.currency, plan)?;
        let empty = Vec::new();
        let aggregates = input.usage.get(meter).unwrap_or(&empty);
        let zero = [Aggregate {
            window_start: input.period.start(),
            window_end: input.period.end(),
            group: BTreeMap::new(),
            value: Decimal::ZERO,
            events: 0,
        }];
        let aggregates = if aggregates.is_empty() {
            &zero[..]
        } else {
            &aggregates[..]
        };
        for aggregate in aggregates {
            let line = charge.compute(aggregate.value, input.rounding)?;
            lines.push(InvoiceLine {
                kind: LineKind::Usage {
                    meter: meter.clone(),
                },
                description: format!("{}{}", price.description(), group_label(aggregate)),
                price: Some(price.key().clone()),
                quantity: aggregate.value,
                full_period_amount: None,
                components: line.components().to_vec(),
                proration: None,
                service_start: input.period.start(),
                service_end: input.period.end(),
                amount: line.amount(),
                taxes: Vec::new(),
                discounts: Vec::new(),
            });
        }
    }
    for correction in input.corrections {
        let plan = &correction.plan;
        for price in plan.prices() {
            let PriceKind::Metered { meter } = price.kind() else {
                continue;
            };
            if *meter != correction.meter {
                continue;
            }
            let charge = charge(price, input.currency, plan)?;
            for after in &correction.after {
                let before = correction
                    .before
                    .iter()
                    .find(|b| b.group == after.group)
                    .map_or(Decimal::ZERO, |b| b.value);
                let was = charge.compute(before, input.rounding)?.amount();
                let now = charge.compute(after.value, input.rounding)?;
                let amount = now.amount().checked_sub(was)?;
                let quantity = after
                    .value
                    .checked_sub(before)
                    .ok_or_else(|| BillingError::overflow("a usage correction"))?;
                lines.push(InvoiceLine {
                    kind: LineKind::UsageCorrection {
                        meter: meter.clone(),
                        period: correction.period,
                    },
                    description: format!(
                        "Late usage for period #{}: {}{} ({before} → {})",
                        correction.period,
                        price.description(),
                        group_label(after),
                        after.value
                    ),
                    price: Some(price.key().clone()),
                    quantity,
                    full_period_amount: None,
                    components: now.components().to_vec(),
                    proration: None,
                    service_start: after.window_start,
                    service_end: after.window_end,
                    amount,
                    taxes: Vec::new(),
                    discounts: Vec::new(),
                });
            }
        }
    }
    let total = total_of(input.currency, &lines)?;
    Ok(InvoiceDraft {
        lines,
        total,
        rated_at: clock.now(),
    })
}

fn charge<'p>(
    price: &'p Price,
    currency: Currency,
    plan: &PlanVersion,
) -> Result<&'p crate::charge::Charge, BillingError> {
    price.charge(currency).ok_or_else(|| {
        BillingError::invalid(
            "currency",
            format!("{} is not sold in {currency}", plan.reference()),
        )
    })
}

pub(crate) fn group_label(aggregate: &Aggregate) -> String {
    if aggregate.group.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = aggregate
        .group
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(" [{}]", parts.join(", "))
}
