//! Metered add-ons: when a metered add-on's usage is billed.
//!
//! A metered add-on bills its meter's usage in arrears, as the plan's
//! metered prices do, but only the usage of the time it was attached. The
//! subscription keeps, for the current period, the spans of time each
//! metered add-on is attached for billing; the period's invoice rates the
//! usage of each span and records the span on its lines, so finalization
//! and late usage re-rate exactly what the invoice billed whatever is
//! attached later (as an invoice's plan prices its late usage after a
//! plan change).
//!
//! A change takes effect for billing at an instant chosen by the proration
//! policy: at once with proration, at the period's end without proration
//! or at period end, at the period's start before the paid period starts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AddOn, ChangeTiming, Subscription};
use crate::calendar::Period;
use crate::error::BillingError;
use crate::ids::PriceKey;
use crate::plan::PlanRef;

/// The most metered add-on spans one period keeps (each attachment of a
/// metered add-on during a period opens one).
pub const MAX_METERED_ADDON_SPANS: usize = 100;

/// A span of the current period whose usage of a metered add-on's meter
/// is billed at the add-on's price: from `from` (`None`: the period's
/// start) until `to` (`None`: the period's end, or the end of service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MeteredAddOnSpan {
    /// The plan version the add-on's price belongs to.
    pub plan: PlanRef,
    /// The metered price.
    pub price: PriceKey,
    /// Billed from (inclusive); `None` from the period's start.
    pub from: Option<DateTime<Utc>>,
    /// Billed until (exclusive); `None` to the period's end.
    pub to: Option<DateTime<Utc>>,
}

impl MeteredAddOnSpan {
    fn is(&self, addon: &AddOn) -> bool {
        self.plan == addon.plan && self.price == addon.price
    }

    /// The span within `[start, end)`, `None` when it is empty there.
    pub(crate) fn within(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let from = self.from.map_or(start, |f| f.max(start));
        let to = self.to.map_or(end, |t| t.min(end));
        (from < to).then_some((from, to))
    }
}

impl Subscription {
    /// The spans of the current period whose usage each metered add-on
    /// bills (see [`MeteredAddOnSpan`]).
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use saas_billing::{
    ///     dec, AddOn, Aggregation, Catalog, Charge, Currency, Meter, MeterKey, Money,
    ///     NewSubscription, PlanId, PlanRef, PlanVersion, PriceKey, Product, ProductId,
    ///     ProrationPolicy, RoundingMode, Subscription, TenantId, Trial,
    /// };
    ///
    /// let app = ProductId::new("app")?;
    /// let usd = |a| Money::new(a, Currency::USD);
    /// let catalog = Catalog::builder()
    ///     .product(Product::new(app.clone(), "App"))
    ///     .meter(Meter::new(MeterKey::new("calls")?, Aggregation::Count))
    ///     .plan(PlanVersion::builder(PlanId::new("basic")?, 1, app.clone())
    ///         .recurring("base", "Basic", [Charge::flat(usd(dec!(30)))?]).build()?)
    ///     .plan(PlanVersion::builder(PlanId::new("addons")?, 1, app)
    ///         .metered("extra_calls", "Extra calls", "calls", [Charge::per_unit(usd(dec!(0.01)))?])
    ///         .build()?)
    ///     .build()?;
    /// let april = Utc.with_ymd_and_hms(2024, 4, 1, 0, 0, 0).unwrap();
    /// let basic = PlanRef::new(PlanId::new("basic")?, 1);
    /// let new = NewSubscription::new(TenantId::new(), basic, Currency::USD).trial(Trial::None);
    /// let mut sub = Subscription::create(new, &catalog, april)?;
    /// // Attached on April 16: April bills the calls from then on.
    /// let calls = AddOn::new(PlanRef::new(PlanId::new("addons")?, 1), PriceKey::new("extra_calls")?, 1);
    /// let mid = Utc.with_ymd_and_hms(2024, 4, 16, 0, 0, 0).unwrap();
    /// sub.set_addon(calls, &catalog, ProrationPolicy::default(), mid, RoundingMode::HalfEven)?;
    /// let span = &sub.metered_addon_spans()[0];
    /// assert_eq!((span.from, span.to), (Some(mid), None));
    /// assert!(sub.pending_lines().is_empty());
    /// # Ok::<(), saas_billing::BillingError>(())
    /// ```
    pub fn metered_addon_spans(&self) -> &[MeteredAddOnSpan] {
        &self.metered_spans
    }

    /// The metered add-on spans after `addon` is set (attached when its
    /// quantity is 1, detached when 0) by a change timed `timing` at `now`
    /// in `period`. From the instant the change takes effect on, the
    /// add-on is billed or not: later spans of it are dropped, an open
    /// one is closed there, and an attach extends a span that ends there
    /// (so cancelling a scheduled detach restores the span).
    ///
    /// # Errors
    /// `InvalidInput` above [`MAX_METERED_ADDON_SPANS`].
    pub(crate) fn metered_spans_after(
        &self,
        addon: &AddOn,
        timing: ChangeTiming,
        period: &Period,
        now: DateTime<Utc>,
    ) -> Result<Vec<MeteredAddOnSpan>, BillingError> {
        // `None` stands for the period's start.
        let at = if now <= period.start() {
            None
        } else if timing == ChangeTiming::ImmediateWithProration {
            Some(now)
        } else {
            Some(period.end())
        };
        let starts_at_or_after = |from: Option<DateTime<Utc>>| match (from, at) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(f), Some(t)) => f >= t,
        };
        let mut spans: Vec<MeteredAddOnSpan> = self
            .metered_spans
            .iter()
            .filter(|s| !(s.is(addon) && starts_at_or_after(s.from)))
            .cloned()
            .collect();
        if let Some(t) = at {
            for span in spans.iter_mut().filter(|s| s.is(addon)) {
                if span.to.is_none_or(|to| to > t) {
                    span.to = Some(t);
                }
            }
        }
        if addon.quantity > 0 {
            let ending_there = spans
                .iter_mut()
                .find(|s| s.is(addon) && at.is_some() && s.to == at);
            match ending_there {
                Some(span) => span.to = None,
                None => spans.push(MeteredAddOnSpan {
                    plan: addon.plan.clone(),
                    price: addon.price.clone(),
                    from: at,
                    to: None,
                }),
            }
        }
        if spans.len() > MAX_METERED_ADDON_SPANS {
            return Err(BillingError::invalid(
                "add-ons",
                format!(
                    "a period keeps at most {MAX_METERED_ADDON_SPANS} spans of metered add-ons"
                ),
            ));
        }
        Ok(spans)
    }

    /// At the period's end: the metered add-ons attached then are billed
    /// from the next period's start.
    pub(crate) fn roll_metered_spans(&mut self) {
        self.metered_spans.retain(|s| s.to.is_none());
        for span in &mut self.metered_spans {
            span.from = None;
        }
    }
}
