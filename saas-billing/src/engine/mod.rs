//! The billing engine: subscriptions, usage and the billing cycle over the
//! stores, with time from an injected clock.

mod addon_usage;
mod addons;
mod coupons;
mod credits;
mod credits_ledger;
mod cycle;
mod entitlements;
mod payments;
mod preview;
mod usage;

pub use cycle::{CycleReport, MAX_STEPS_PER_SUBSCRIPTION};
pub use usage::UncommittedUsage;

use std::sync::Arc;

use chrono::TimeDelta;
use rust_decimal::Decimal;
use saas_core::{SharedClock, TenantId};

use crate::entitlement::{Decision, EntitlementChecker};
use crate::error::BillingError;
use crate::events::{BillingEvent, BillingEventSink, NoopEventSink};
use crate::ids::SubscriptionId;
use crate::invoice::{Invoice, InvoiceIssuer};
use crate::plan::Catalog;
use crate::rounding::RoundingMode;
use crate::store::{
    CouponStore, InMemoryCouponStore, InMemoryInvoiceStore, InMemorySubscriptionStore,
    InMemoryUsageStore, InvoiceStore, SubscriptionStore, UsageStore,
};
use crate::subscription::{
    CancelMode, NewSubscription, PlanChange, PlanChangeOutcome, ProrationPolicy, Subscription,
    SubscriptionEvent,
};
use crate::tax::{StaticTaxRates, TaxResolver};

/// Engine settings.
///
/// The default rounds every invoice line **half-even** (banker's
/// rounding: a tie goes to the even cent), not half-up. It matters on
/// ties: a volume tier of 1001 units at 0.005 USD is exactly 5.005 USD,
/// billed **5.00 USD** by default and 5.01 USD with
/// [`RoundingMode::HalfUp`]. Choose the mode your invoices must follow
/// with [`with_rounding`](Self::with_rounding):
///
/// ```
/// use saas_billing::{dec, BillingConfig, Charge, Currency, Money, RoundingMode, TierTable};
///
/// let tiers = TierTable::builder()
///     .up_to(dec!(1000), dec!(0.006))
///     .unbounded(dec!(0.005))
///     .build()?;
/// let charge = Charge::volume(Currency::USD, tiers);
/// let default = BillingConfig::default();
/// assert_eq!(default.rounding, RoundingMode::HalfEven);
/// let line = charge.compute(dec!(1001), default.rounding)?;
/// assert_eq!(line.amount(), Money::new(dec!(5.00), Currency::USD));
///
/// let half_up = BillingConfig::default().with_rounding(RoundingMode::HalfUp);
/// let line = charge.compute(dec!(1001), half_up.rounding)?;
/// assert_eq!(line.amount(), Money::new(dec!(5.01), Currency::USD));
/// # Ok::<(), saas_billing::BillingError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BillingConfig {
    /// Timing of upgrades and downgrades.
    pub proration: ProrationPolicy,
    /// How every invoice line (and proration line) is rounded to the minor
    /// unit, once per line. Default [`RoundingMode::HalfEven`] — 5.005 USD
    /// bills 5.00; set [`RoundingMode::HalfUp`] for 5.01.
    pub rounding: RoundingMode,
    /// How long after a period ends its draft waits for late usage before
    /// it is finalized. Usage arriving later is billed as a correction on
    /// the next invoice.
    pub late_usage_grace: TimeDelta,
    /// How far in the future (by the clock) a usage timestamp may be.
    pub max_clock_skew: TimeDelta,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            proration: ProrationPolicy::default(),
            rounding: RoundingMode::HalfEven,
            late_usage_grace: TimeDelta::hours(24),
            max_clock_skew: TimeDelta::minutes(5),
        }
    }
}

impl BillingConfig {
    /// Sets the proration policy.
    pub fn with_proration(mut self, policy: ProrationPolicy) -> Self {
        self.proration = policy;
        self
    }

    /// Sets the rounding mode of every line (default half-even; see
    /// [`BillingConfig`]).
    pub fn with_rounding(mut self, rounding: RoundingMode) -> Self {
        self.rounding = rounding;
        self
    }

    /// Sets the grace for late usage.
    pub fn with_late_usage_grace(mut self, grace: TimeDelta) -> Self {
        self.late_usage_grace = grace;
        self
    }
}

/// The stores the engine uses.
#[derive(Debug, Clone)]
pub struct BillingStores {
    /// Subscriptions.
    pub subscriptions: Arc<dyn SubscriptionStore>,
    /// Usage events.
    pub usage: Arc<dyn UsageStore>,
    /// Invoices.
    pub invoices: Arc<dyn InvoiceStore>,
    /// Coupons and their redemptions.
    pub coupons: Arc<dyn CouponStore>,
}

impl BillingStores {
    /// Fresh in-memory stores.
    pub fn in_memory() -> BillingStores {
        BillingStores {
            subscriptions: Arc::new(InMemorySubscriptionStore::new()),
            usage: Arc::new(InMemoryUsageStore::new()),
            invoices: Arc::new(InMemoryInvoiceStore::new()),
            coupons: Arc::new(InMemoryCouponStore::new()),
        }
    }
}

/// Runs billing: every operation reads the time from the injected clock,
/// changes a subscription through its pure operations and saves it with
/// optimistic concurrency (retrying a few times on `StaleVersion`), then
/// publishes domain events. Before an operation it drafts the
/// subscription's periods that ended before now, as
/// [`run_billing_cycle`](Self::run_billing_cycle) would, so the invoices
/// are the same however late the cycle runs.
#[derive(Debug, Clone)]
pub struct BillingEngine {
    catalog: Arc<Catalog>,
    stores: BillingStores,
    clock: SharedClock,
    events: Arc<dyn BillingEventSink>,
    entitlements: Arc<EntitlementChecker>,
    config: BillingConfig,
    issuer: InvoiceIssuer,
    taxes: Arc<dyn TaxResolver>,
    credit_thresholds: Vec<crate::money::Money>,
}

const RETRIES: usize = 5;

impl BillingEngine {
    /// An engine with the default config and no event sink.
    ///
    /// Its entitlement checker starts empty. On stores that already hold
    /// subscriptions (a restart, a second server) call
    /// [`restore_entitlements`](Self::restore_entitlements) once before
    /// serving checks, or every existing tenant is denied.
    pub fn new(catalog: Arc<Catalog>, stores: BillingStores, clock: SharedClock) -> BillingEngine {
        BillingEngine {
            entitlements: Arc::new(EntitlementChecker::new(clock.clone())),
            catalog,
            stores,
            clock,
            events: Arc::new(NoopEventSink),
            config: BillingConfig::default(),
            issuer: InvoiceIssuer::default(),
            taxes: Arc::new(StaticTaxRates::new()),
            credit_thresholds: Vec::new(),
        }
    }

    /// Sets where invoice lines' tax rates come from (default: an empty
    /// [`StaticTaxRates`], no tax). Taxes are computed on every draft and
    /// again at finalization, per line, rounded per line with the
    /// config's rounding mode.
    pub fn with_tax_resolver(mut self, taxes: Arc<dyn TaxResolver>) -> Self {
        self.taxes = taxes;
        self
    }

    /// Sets whose sequence numbers the invoices at finalization (default:
    /// one sequence, issuer `default`). Changing it later starts or
    /// continues the new issuer's sequence; numbers already given stay.
    pub fn with_invoice_issuer(mut self, issuer: InvoiceIssuer) -> Self {
        self.issuer = issuer;
        self
    }

    /// Sets the event sink.
    pub fn with_event_sink(mut self, sink: Arc<dyn BillingEventSink>) -> Self {
        self.events = sink;
        self
    }

    /// Sets the config.
    pub fn with_config(mut self, config: BillingConfig) -> Self {
        self.config = config;
        self
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The stores.
    pub fn stores(&self) -> &BillingStores {
        &self.stores
    }

    /// The entitlement checker the engine keeps up to date.
    pub fn entitlements(&self) -> &EntitlementChecker {
        &self.entitlements
    }

    /// `check(tenant, feature, amount)` on the tenant's current plan.
    pub fn check(&self, tenant: TenantId, feature: &str, amount: Decimal) -> Decision {
        self.entitlements.check(tenant, feature, amount)
    }

    /// Creates and stores a subscription.
    ///
    /// # Errors
    /// As [`Subscription::create`]; `AlreadyExists` for a used id.
    pub async fn create_subscription(
        &self,
        new: NewSubscription,
    ) -> Result<Subscription, BillingError> {
        let now = self.clock.now();
        let sub = Subscription::create(new, &self.catalog, now)?;
        let sub = self.stores.subscriptions.insert(sub).await?;
        self.sync_entitlements(&sub)?;
        self.events
            .publish(BillingEvent::SubscriptionCreated {
                tenant_id: sub.tenant_id,
                subscription_id: sub.id,
                plan: sub.plan.clone(),
                status: sub.status,
                at: now,
            })
            .await;
        Ok(sub)
    }

    /// A subscription. `NotFound` if absent or another tenant's.
    ///
    /// # Errors
    /// From the store.
    pub async fn subscription(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
    ) -> Result<Subscription, BillingError> {
        self.stores.subscriptions.get(tenant, id).await
    }

    /// A subscription's invoices by period.
    ///
    /// # Errors
    /// From the store.
    pub async fn invoices(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
    ) -> Result<Vec<Invoice>, BillingError> {
        self.stores.invoices.list(tenant, id).await
    }

    /// Changes plan and/or seats by the configured [`ProrationPolicy`].
    ///
    /// # Errors
    /// As [`Subscription::change_plan`]; `StaleVersion` after repeated races.
    pub async fn change_plan(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        change: PlanChange,
    ) -> Result<(Subscription, PlanChangeOutcome), BillingError> {
        let (policy, rounding) = (self.config.proration, self.config.rounding);
        let to = change.plan.clone();
        let mut from = None;
        let (sub, outcome) = self
            .mutate(tenant, id, |sub, catalog, now| {
                from = Some(sub.plan.clone());
                sub.change_plan(change.clone(), catalog, policy, now, rounding)
            })
            .await?;
        self.sync_entitlements(&sub)?;
        if let Some(from) = from {
            self.events
                .publish(BillingEvent::SubscriptionChanged {
                    tenant_id: tenant,
                    subscription_id: id,
                    from,
                    to,
                    direction: outcome.direction,
                    timing: outcome.timing,
                    at: self.clock.now(),
                })
                .await;
        }
        Ok((sub, outcome))
    }

    /// Cancels now or at period end.
    ///
    /// # Errors
    /// As [`Subscription::cancel`].
    pub async fn cancel(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        mode: CancelMode,
    ) -> Result<Subscription, BillingError> {
        let rounding = self.config.rounding;
        let (sub, ()) = self
            .mutate(tenant, id, |sub, catalog, now| {
                sub.cancel(mode, catalog, now, rounding)
            })
            .await?;
        self.sync_entitlements(&sub)?;
        self.events
            .publish(BillingEvent::SubscriptionCanceled {
                tenant_id: tenant,
                subscription_id: id,
                at_period_end: mode == CancelMode::AtPeriodEnd,
                at: self.clock.now(),
            })
            .await;
        Ok(sub)
    }

    /// Undoes a cancellation at period end.
    ///
    /// # Errors
    /// As [`Subscription::keep`].
    pub async fn keep(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
    ) -> Result<Subscription, BillingError> {
        let (sub, ()) = self.mutate(tenant, id, |sub, _, _| sub.keep()).await?;
        self.sync_entitlements(&sub)?;
        Ok(sub)
    }

    /// Pauses now (crediting the unused rest of the period).
    ///
    /// # Errors
    /// As [`Subscription::pause`].
    pub async fn pause(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
    ) -> Result<Subscription, BillingError> {
        let rounding = self.config.rounding;
        self.with_status_event(tenant, id, |sub, catalog, now| {
            sub.pause(catalog, now, rounding)
        })
        .await
    }

    /// Resumes now (debiting the rest of the period).
    ///
    /// # Errors
    /// As [`Subscription::resume`].
    pub async fn resume(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
    ) -> Result<Subscription, BillingError> {
        let rounding = self.config.rounding;
        self.with_status_event(tenant, id, |sub, catalog, now| {
            sub.resume(catalog, now, rounding)
        })
        .await
    }

    /// Applies a payment or dunning event (see [`Subscription::apply`]).
    ///
    /// # Errors
    /// As [`Subscription::apply`].
    pub async fn apply_event(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        event: SubscriptionEvent,
    ) -> Result<Subscription, BillingError> {
        self.with_status_event(tenant, id, |sub, _, _| sub.apply(event).map(|_| ()))
            .await
    }

    async fn with_status_event(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        mut f: impl FnMut(
            &mut Subscription,
            &Catalog,
            chrono::DateTime<chrono::Utc>,
        ) -> Result<(), BillingError>,
    ) -> Result<Subscription, BillingError> {
        let mut before = None;
        let (sub, ()) = self
            .mutate(tenant, id, |sub, catalog, now| {
                before = Some(sub.status);
                f(sub, catalog, now)
            })
            .await?;
        self.sync_entitlements(&sub)?;
        if let Some(from) = before.filter(|s| *s != sub.status) {
            self.events
                .publish(BillingEvent::SubscriptionStatusChanged {
                    tenant_id: tenant,
                    subscription_id: id,
                    from,
                    to: sub.status,
                    at: self.clock.now(),
                })
                .await;
        }
        Ok(sub)
    }

    /// Drafts the subscription's periods that ended before now (as the
    /// billing cycle would), then reads, changes (on a copy) and saves it,
    /// retrying on `StaleVersion`.
    async fn mutate<T>(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        mut f: impl FnMut(
            &mut Subscription,
            &Catalog,
            chrono::DateTime<chrono::Utc>,
        ) -> Result<T, BillingError>,
    ) -> Result<(Subscription, T), BillingError> {
        let mut last = None;
        for _ in 0..RETRIES {
            let now = self.clock.now();
            // The cycle may lag behind the clock. Invoicing the periods
            // that ended before `now` first (as the cycle would) makes the
            // operation act on the period containing `now`: it prorates
            // against that period, and the ended periods keep the basis
            // they were served on. The drafts are the cycle's, so they are
            // not reported here.
            self.advance(tenant, id, now, &mut cycle::CycleReport::default())
                .await?;
            let mut sub = self.stores.subscriptions.get(tenant, id).await?;
            let out = f(&mut sub, &self.catalog, now)?;
            match self.stores.subscriptions.update(sub).await {
                Ok(saved) => return Ok((saved, out)),
                Err(e @ BillingError::StaleVersion { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| BillingError::not_found("subscription", id)))
    }
}
