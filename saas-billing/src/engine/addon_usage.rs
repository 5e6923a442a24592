//! Metered add-ons on invoices: the usage of each span a metered add-on
//! was attached, rated at its price, and late usage in those spans.
//!
//! Each span is rated on its own, like a price of its own: a detach and a
//! re-attach in one period give two spans, each with its own tiers and
//! minimum. The spans a period billed are its invoice's `AddOnUsage`
//! lines (one per span and group, a zero line when there was no usage),
//! so finalization and late usage re-rate what the invoice billed,
//! whatever is attached later. An add-on rates its meter's usage besides
//! whatever else rates it: the plan's metered price on the same meter, or
//! another add-on, bills the same usage again.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::calendar::Period;
use crate::charge::Charge;
use crate::currency::Currency;
use crate::error::BillingError;
use crate::ids::{MeterKey, PriceKey};
use crate::invoice::{InvoiceLine, LineKind, group_label};
use crate::metering::{Aggregate, UsageEvent, Window, aggregate};
use crate::plan::{Catalog, PlanRef, PlanVersion, Price, PriceKind};
use crate::rounding::RoundingMode;
use crate::subscription::Subscription;

/// A metered add-on billed over `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Span {
    plan: PlanRef,
    price: PriceKey,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl Span {
    fn covers(&self, event: &UsageEvent, meter: &MeterKey) -> bool {
        event.meter == *meter && self.start <= event.timestamp && event.timestamp < self.end
    }
}

/// How spans are rated: the catalog, the window usage aggregates over,
/// the invoice's currency and rounding.
#[derive(Debug, Clone, Copy)]
pub(super) struct SpanRating<'a> {
    pub(super) catalog: &'a Catalog,
    pub(super) window: Window,
    pub(super) currency: Currency,
    pub(super) rounding: RoundingMode,
}

/// The spans `sub`'s open period `period` bills, served until `end`.
pub(super) fn open_spans(sub: &Subscription, period: &Period, end: DateTime<Utc>) -> Vec<Span> {
    sub.metered_addon_spans()
        .iter()
        .filter_map(|s| {
            let (start, end) = s.within(period.start(), end)?;
            Some(Span {
                plan: s.plan.clone(),
                price: s.price.clone(),
                start,
                end,
            })
        })
        .collect()
}

/// The spans an invoice's lines billed.
pub(super) fn billed_spans(lines: &[InvoiceLine]) -> Vec<Span> {
    let mut spans = Vec::new();
    for line in lines {
        let (LineKind::AddOnUsage { plan, .. }, Some(price)) = (&line.kind, &line.price) else {
            continue;
        };
        let span = Span {
            plan: plan.clone(),
            price: price.clone(),
            start: line.service_start,
            end: line.service_end,
        };
        if !spans.contains(&span) {
            spans.push(span);
        }
    }
    spans
}

#[derive(Debug)]
struct Resolved<'c> {
    version: &'c PlanVersion,
    price: &'c Price,
    meter: &'c MeterKey,
    charge: &'c Charge,
}

impl<'a> SpanRating<'a> {
    fn resolve(&self, span: &Span) -> Result<Resolved<'a>, BillingError> {
        let version = self.catalog.plan(&span.plan)?;
        let price = version
            .prices()
            .iter()
            .find(|p| p.key() == &span.price)
            .ok_or_else(|| BillingError::NotFound {
                what: "add-on price",
                id: format!("{} in {}", span.price, span.plan),
            })?;
        let PriceKind::Metered { meter } = price.kind() else {
            return Err(BillingError::invalid(
                "add-on price",
                format!("{} of {} is not metered", span.price, span.plan),
            ));
        };
        let charge = price.charge(self.currency).ok_or_else(|| {
            BillingError::invalid(
                "add-on price",
                format!(
                    "{} of {} is not sold in {}",
                    span.price, span.plan, self.currency
                ),
            )
        })?;
        Ok(Resolved {
            version,
            price,
            meter,
            charge,
        })
    }

    fn aggregates<'e>(
        &self,
        span: &Span,
        meter: &MeterKey,
        events: impl Iterator<Item = &'e UsageEvent>,
    ) -> Result<Vec<Aggregate>, BillingError> {
        let meter = self.catalog.meter(meter)?;
        aggregate(
            meter,
            events.filter(|e| span.covers(e, meter.key())),
            self.window,
        )
    }

    /// One line per span and group of `events` (a zero line for a span
    /// without usage, so minimums apply and the span is on record).
    pub(super) fn usage_lines(
        &self,
        spans: &[Span],
        events: &[&UsageEvent],
    ) -> Result<Vec<InvoiceLine>, BillingError> {
        let mut lines = Vec::new();
        for span in spans {
            let r = self.resolve(span)?;
            let mut aggregates = self.aggregates(span, r.meter, events.iter().copied())?;
            if aggregates.is_empty() {
                aggregates.push(Aggregate {
                    window_start: span.start,
                    window_end: span.end,
                    group: BTreeMap::new(),
                    value: Decimal::ZERO,
                    events: 0,
                });
            }
            for a in &aggregates {
                let rated = r.charge.compute(a.value, self.rounding)?;
                lines.push(InvoiceLine {
                    kind: LineKind::AddOnUsage {
                        meter: r.meter.clone(),
                        plan: span.plan.clone(),
                    },
                    description: format!(
                        "{} ({}) add-on{}, {} to {}",
                        r.price.description(),
                        r.version.reference(),
                        group_label(a),
                        span.start.to_rfc3339(),
                        span.end.to_rfc3339()
                    ),
                    price: Some(span.price.clone()),
                    quantity: a.value,
                    full_period_amount: None,
                    components: rated.components().to_vec(),
                    proration: None,
                    service_start: span.start,
                    service_end: span.end,
                    amount: rated.amount(),
                    taxes: Vec::new(),
                    discounts: Vec::new(),
                });
            }
        }
        Ok(lines)
    }

    /// Correction lines for `late` events of the finalized period
    /// `period`, whose invoice billed `spans` from the `prior` events.
    pub(super) fn correction_lines(
        &self,
        period: i64,
        spans: &[Span],
        prior: &[&UsageEvent],
        late: &[&UsageEvent],
    ) -> Result<Vec<InvoiceLine>, BillingError> {
        let mut lines = Vec::new();
        for span in spans {
            let r = self.resolve(span)?;
            let before = self.aggregates(span, r.meter, prior.iter().copied())?;
            let after = self.aggregates(span, r.meter, prior.iter().chain(late.iter()).copied())?;
            if before == after {
                continue;
            }
            for a in &after {
                let was_value = before
                    .iter()
                    .find(|b| b.group == a.group)
                    .map_or(Decimal::ZERO, |b| b.value);
                let was = r.charge.compute(was_value, self.rounding)?.amount();
                let now = r.charge.compute(a.value, self.rounding)?;
                let quantity = a
                    .value
                    .checked_sub(was_value)
                    .ok_or_else(|| BillingError::overflow("a usage correction"))?;
                lines.push(InvoiceLine {
                    kind: LineKind::AddOnUsageCorrection {
                        meter: r.meter.clone(),
                        plan: span.plan.clone(),
                        period,
                    },
                    description: format!(
                        "Late usage for period #{period}: {} ({}) add-on{}, {} to {} \
                         ({was_value} → {})",
                        r.price.description(),
                        r.version.reference(),
                        group_label(a),
                        span.start.to_rfc3339(),
                        span.end.to_rfc3339(),
                        a.value
                    ),
                    price: Some(span.price.clone()),
                    quantity,
                    full_period_amount: None,
                    components: now.components().to_vec(),
                    proration: None,
                    service_start: span.start,
                    service_end: span.end,
                    amount: now.amount().checked_sub(was)?,
                    taxes: Vec::new(),
                    discounts: Vec::new(),
                });
            }
        }
        Ok(lines)
    }
}
