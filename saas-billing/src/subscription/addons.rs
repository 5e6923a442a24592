//! Add-ons: extra licensed prices on a subscription, each with a
//! quantity, billed with the plan on the subscription's invoices
//! (issue 20).
//!
//! An add-on is a recurring or per-seat price of any plan version in the
//! catalog (an "add-ons" plan, say), rated at the add-on's quantity. It
//! follows the plan's billing model: the add-ons a period *started* with
//! are billed for the whole period, and attaching, detaching or changing
//! a quantity mid-period is timed and prorated by the subscription's
//! [`ProrationPolicy`] — more per period is an upgrade, less a downgrade.
//! Its lines are ordinary invoice lines, so discounts and taxes apply to
//! them as to any line (a coupon scoped to prices can name the add-on's
//! price key).
//!
//! A metered price attached as an add-on (quantity 1; 0 detaches it)
//! costs nothing per period: it bills its meter's usage of the time it is
//! attached, from the instant the policy gives the change (see
//! `metered_addons`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::proration::{Prorated, prorated_line};
use super::{
    ChangeDirection, ChangeTiming, PlanChangeOutcome, ProrationPolicy, Subscription,
    SubscriptionEvent,
};
use crate::calendar::Period;
use crate::currency::Currency;
use crate::error::BillingError;
use crate::ids::PriceKey;
use crate::invoice::{InvoiceLine, LineKind};
use crate::money::Money;
use crate::plan::{Catalog, PlanRef, PlanVersion, Price};
use crate::rounding::RoundingMode;

/// The most units of one add-on.
pub const MAX_ADDON_QUANTITY: u32 = 1_000_000;

/// The most add-ons on one subscription.
pub const MAX_ADDONS: usize = 50;

/// A licensed price of a catalog plan version attached to a subscription
/// with a quantity (what [`Subscription::set_addon`] sets; quantity 0
/// detaches it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AddOn {
    /// The plan version the price belongs to.
    pub plan: PlanRef,
    /// The price.
    pub price: PriceKey,
    /// How many: the price is rated at this quantity.
    pub quantity: u32,
}

impl AddOn {
    /// `quantity` of `price` of `plan`.
    pub fn new(plan: PlanRef, price: PriceKey, quantity: u32) -> AddOn {
        AddOn {
            plan,
            price,
            quantity,
        }
    }

    fn same_price(&self, other: &AddOn) -> bool {
        self.plan == other.plan && self.price == other.price
    }

    /// The add-on's plan version and price, checked to be billable with a
    /// subscription in `currency` on a plan of `plan`'s cadence.
    pub(crate) fn resolve<'c>(
        &self,
        catalog: &'c Catalog,
        currency: Currency,
        plan: &PlanVersion,
    ) -> Result<(&'c PlanVersion, &'c Price), BillingError> {
        let version = catalog.plan(&self.plan)?;
        let price = version
            .prices()
            .iter()
            .find(|p| p.key() == &self.price)
            .ok_or_else(|| BillingError::NotFound {
                what: "add-on price",
                id: format!("{} in {}", self.price, self.plan),
            })?;
        if !price.is_licensed() && self.quantity > 1 {
            return Err(BillingError::invalid(
                "add-on quantity",
                format!(
                    "{} is metered: a metered add-on is attached (1) or detached (0), its \
                     usage sets what it bills",
                    self.price
                ),
            ));
        }
        if price.charge(currency).is_none() {
            return Err(BillingError::invalid(
                "add-on price",
                format!("{} of {} is not sold in {currency}", self.price, self.plan),
            ));
        }
        if version.cadence() != plan.cadence() {
            return Err(BillingError::invalid(
                "add-on price",
                format!(
                    "{} is billed on another cadence than the subscription's plan",
                    self.plan
                ),
            ));
        }
        Ok((version, price))
    }

    /// What the add-on costs per period (half-even, as
    /// `PlanVersion::licensed_amount` compares plans): what tells an
    /// upgrade from a downgrade.
    fn amount(
        &self,
        catalog: &Catalog,
        currency: Currency,
        plan: &PlanVersion,
    ) -> Result<Money, BillingError> {
        if self.quantity == 0 {
            return Ok(Money::zero(currency));
        }
        let (_, price) = self.resolve(catalog, currency, plan)?;
        let charge = price.charge(currency).ok_or_else(|| {
            BillingError::invalid("add-on price", format!("not sold in {currency}"))
        })?;
        Ok(charge
            .compute(Decimal::from(self.quantity), RoundingMode::HalfEven)?
            .limited_subtotal())
    }
}

impl Subscription {
    /// The add-ons now (those scheduled for the period's end not yet
    /// applied).
    pub fn addons(&self) -> &[AddOn] {
        &self.addons
    }

    /// The add-ons the current period is billed for in whole.
    pub fn period_addons(&self) -> &[AddOn] {
        &self.basis_addons
    }

    /// Add-on changes scheduled for the period's end (quantity 0:
    /// detached then).
    pub fn scheduled_addons(&self) -> &[AddOn] {
        &self.scheduled_addons
    }

    /// Attaches `addon`, changes its quantity, or (quantity 0) detaches
    /// it, at `now`. More per period is an upgrade, less a downgrade;
    /// `policy` times it as a plan change: immediately with proration (a
    /// credit for the old quantity's unused time and a debit for the new
    /// one's remaining time on this period's invoice), immediately without
    /// (the new quantity billed from the next period), or at the period's
    /// end. Before the paid period starts (a trial), the period is billed
    /// on the new add-ons, as with a plan change. Setting an add-on to the
    /// quantity it has cancels a change scheduled for it.
    ///
    /// A metered add-on (attaching is the upgrade) bills its meter's
    /// usage from the instant the change takes effect: `now` with
    /// proration, the period's end otherwise (see
    /// [`metered_addon_spans`](Self::metered_addon_spans)).
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use saas_billing::{
    ///     dec, AddOn, Catalog, Charge, Currency, Money, NewSubscription, PlanId, PlanRef,
    ///     PlanVersion, PriceKey, Product, ProductId, ProrationPolicy, RoundingMode, Subscription,
    ///     TenantId, Trial,
    /// };
    ///
    /// let app = ProductId::new("app")?;
    /// let usd = |a| Money::new(a, Currency::USD);
    /// let catalog = Catalog::builder()
    ///     .product(Product::new(app.clone(), "App"))
    ///     .plan(PlanVersion::builder(PlanId::new("basic")?, 1, app.clone())
    ///         .recurring("base", "Basic", [Charge::flat(usd(dec!(30)))?]).build()?)
    ///     .plan(PlanVersion::builder(PlanId::new("addons")?, 1, app)
    ///         .recurring("seats", "Extra seats", [Charge::per_unit(usd(dec!(6)))?]).build()?)
    ///     .build()?;
    /// let april = Utc.with_ymd_and_hms(2024, 4, 1, 0, 0, 0).unwrap();
    /// let basic = PlanRef::new(PlanId::new("basic")?, 1);
    /// let new = NewSubscription::new(TenantId::new(), basic, Currency::USD).trial(Trial::None);
    /// let mut sub = Subscription::create(new, &catalog, april)?;
    /// // 5 extra seats with 15 of April's 30 days left: 30.00 × 1/2 on April's invoice.
    /// let extra = AddOn::new(PlanRef::new(PlanId::new("addons")?, 1), PriceKey::new("seats")?, 5);
    /// let mid = Utc.with_ymd_and_hms(2024, 4, 16, 0, 0, 0).unwrap();
    /// sub.set_addon(extra, &catalog, ProrationPolicy::default(), mid, RoundingMode::HalfEven)?;
    /// assert_eq!(sub.pending_lines()[0].amount, usd(dec!(15.00)));
    /// # Ok::<(), saas_billing::BillingError>(())
    /// ```
    ///
    /// # Errors
    /// `IllegalTransition` where a plan change is not allowed (canceled,
    /// incomplete…); `NotFound` for an unknown plan version or price;
    /// `InvalidInput` for a metered price with a quantity above 1 (its
    /// usage is what it bills), another currency or cadence, a
    /// quantity above [`MAX_ADDON_QUANTITY`], more than [`MAX_ADDONS`]
    /// add-ons, or while the current period has ended and is not
    /// invoiced yet (field `now`). Nothing changes on error.
    pub fn set_addon(
        &mut self,
        addon: AddOn,
        catalog: &Catalog,
        policy: ProrationPolicy,
        now: DateTime<Utc>,
        rounding: RoundingMode,
    ) -> Result<PlanChangeOutcome, BillingError> {
        self.status.apply(SubscriptionEvent::ChangePlan)?;
        self.check_period_open(now)?;
        if addon.quantity > MAX_ADDON_QUANTITY {
            return Err(BillingError::invalid(
                "add-on quantity",
                format!("{} is above {MAX_ADDON_QUANTITY}", addon.quantity),
            ));
        }
        let plan = catalog.plan(&self.plan)?;
        let metered = !addon.resolve(catalog, self.currency, plan)?.1.is_licensed();
        let old = self
            .addons
            .iter()
            .find(|a| a.same_price(&addon))
            .map_or(0, |a| a.quantity);
        let is_new = old == 0 && addon.quantity > 0;
        if is_new && self.addons.len() >= MAX_ADDONS {
            return Err(BillingError::invalid(
                "add-ons",
                format!("a subscription has at most {MAX_ADDONS} add-ons"),
            ));
        }
        let upgrade = if metered {
            // A metered add-on costs nothing per period: attaching it is
            // the upgrade.
            addon.quantity > old
        } else {
            let before = AddOn {
                quantity: old,
                ..addon.clone()
            }
            .amount(catalog, self.currency, plan)?;
            let after = addon.amount(catalog, self.currency, plan)?;
            after.amount() > before.amount()
        };
        let direction = if upgrade {
            ChangeDirection::Upgrade
        } else {
            ChangeDirection::Downgrade
        };
        let timing = policy.timing(direction);
        let period = self.current_period()?;
        let before_start = now <= period.start();
        if metered {
            // Computed first: nothing changes on error.
            self.metered_spans = self.metered_spans_after(&addon, timing, &period, now)?;
        }
        // Whatever the timing, a later decision replaces a scheduled one.
        self.scheduled_addons.retain(|a| !a.same_price(&addon));
        if old == addon.quantity {
            return Ok(PlanChangeOutcome { direction, timing });
        }
        match timing {
            ChangeTiming::AtPeriodEnd if !before_start => {
                self.scheduled_addons.push(addon);
            }
            ChangeTiming::ImmediateWithProration if !before_start => {
                let old_addon = AddOn {
                    quantity: old,
                    ..addon.clone()
                };
                let mut lines = Vec::new();
                if self.accruing {
                    lines.extend(self.addon_proration(&old_addon, catalog, now, true, rounding)?);
                    lines.extend(self.addon_proration(&addon, catalog, now, false, rounding)?);
                }
                self.put_addon(addon);
                self.pending_lines.extend(lines);
            }
            _ => {
                // Without proration, or before the period started: the
                // period's basis follows only before it started.
                if before_start {
                    self.put_addon_in_basis(addon.clone());
                }
                self.put_addon(addon);
            }
        }
        Ok(PlanChangeOutcome { direction, timing })
    }

    fn put_addon(&mut self, addon: AddOn) {
        put(&mut self.addons, addon);
    }

    fn put_addon_in_basis(&mut self, addon: AddOn) {
        put(&mut self.basis_addons, addon);
    }

    /// The proration line of `addon` over the rest of the current period
    /// (against the calendar's full period, as the plan's).
    fn addon_proration(
        &self,
        addon: &AddOn,
        catalog: &Catalog,
        now: DateTime<Utc>,
        credit: bool,
        rounding: RoundingMode,
    ) -> Result<Option<InvoiceLine>, BillingError> {
        if addon.quantity == 0 {
            return Ok(None);
        }
        let full = self.calendar.period(self.current_period()?.index())?;
        let plan = catalog.plan(&self.plan)?;
        let (version, price) = addon.resolve(catalog, self.currency, plan)?;
        if !price.is_licensed() {
            // Usage bills it, for the time it was attached.
            return Ok(None);
        }
        let what = Prorated {
            plan: version,
            price,
            quantity: Decimal::from(addon.quantity),
            label: " add-on",
        };
        prorated_line(&what, self.currency, &full, now, credit, rounding)
    }

    /// Proration lines for every add-on now (a cancellation, pause or
    /// resumption prorates them with the plan).
    pub(crate) fn addons_proration(
        &self,
        catalog: &Catalog,
        now: DateTime<Utc>,
        credit: bool,
        rounding: RoundingMode,
    ) -> Result<Vec<InvoiceLine>, BillingError> {
        let mut lines = Vec::new();
        for addon in &self.addons {
            lines.extend(self.addon_proration(addon, catalog, now, credit, rounding)?);
        }
        Ok(lines)
    }

    /// At the period's end: scheduled add-on changes apply, and the next
    /// period is billed on the add-ons then.
    pub(crate) fn roll_addons(&mut self) {
        for addon in std::mem::take(&mut self.scheduled_addons) {
            self.put_addon(addon);
        }
        self.basis_addons = self.addons.clone();
        self.roll_metered_spans();
    }
}

/// Sets `addon`'s quantity in `addons`: replaced, added, or (quantity 0)
/// removed.
fn put(addons: &mut Vec<AddOn>, addon: AddOn) {
    addons.retain(|a| !a.same_price(&addon));
    if addon.quantity > 0 {
        addons.push(addon);
    }
}

/// The whole-period lines of a period's add-ons, or (a stub period)
/// their proration over the calendar's full period from the stub's start.
pub(crate) fn addon_period_lines(
    sub: &Subscription,
    catalog: &Catalog,
    period: &Period,
    stub: bool,
    rounding: RoundingMode,
) -> Result<Vec<InvoiceLine>, BillingError> {
    let plan = catalog.plan(&sub.basis.plan)?;
    let mut lines = Vec::new();
    for addon in &sub.basis_addons {
        let (version, price) = addon.resolve(catalog, sub.currency, plan)?;
        if !price.is_licensed() {
            // Billed from usage (see `metered_addons`).
            continue;
        }
        let quantity = Decimal::from(addon.quantity);
        if stub {
            let full = sub.calendar.period(period.index())?;
            let what = Prorated {
                plan: version,
                price,
                quantity,
                label: " add-on",
            };
            if let Some(mut line) =
                prorated_line(&what, sub.currency, &full, period.start(), false, rounding)?
            {
                line.kind = LineKind::Licensed;
                line.description = format!(
                    "{} ({}) add-on, first period from {}",
                    price.description(),
                    version.reference(),
                    period.start().to_rfc3339()
                );
                lines.push(line);
            }
            continue;
        }
        let charge = price.charge(sub.currency).ok_or_else(|| {
            BillingError::invalid("add-on price", format!("not sold in {}", sub.currency))
        })?;
        let rated = charge.compute(quantity, rounding)?;
        lines.push(InvoiceLine {
            kind: LineKind::Licensed,
            description: format!(
                "{} ({}) add-on × {}",
                price.description(),
                version.reference(),
                addon.quantity
            ),
            price: Some(price.key().clone()),
            quantity,
            full_period_amount: None,
            components: rated.components().to_vec(),
            proration: None,
            service_start: period.start(),
            service_end: period.end(),
            amount: rated.amount(),
            taxes: Vec::new(),
            discounts: Vec::new(),
        });
    }
    Ok(lines)
}
