//! The billing cycle: trial ends, period drafts, finalization.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use saas_core::TenantId;

use super::BillingEngine;
use super::addon_usage::{Span, SpanRating, billed_spans, open_spans};
use crate::calendar::Period;
use crate::error::BillingError;
use crate::events::BillingEvent;
use crate::ids::{InvoiceId, MeterKey, SubscriptionId};
use crate::invoice::{Finalization, LineKind, total_of};
use crate::invoice::{
    Invoice, InvoiceLine, InvoiceStatus, LicensedBasis, RatingInput, UsageCorrection, rate,
};
use crate::metering::{Aggregate, UsageEvent, Window, aggregate};
use crate::plan::{PlanVersion, PriceKind};
use crate::subscription::{Subscription, SubscriptionStatus, addon_period_lines, proration_lines};

const BATCH: usize = 100;

/// The most steps (a period drafted and closed, a trial ended…) one run of
/// [`BillingEngine::run_billing_cycle`] takes for one subscription: 10,000.
///
/// It bounds one run's work and memory for a subscription far behind (a
/// daily cadence after years without runs, a restored backup); what is
/// left is listed in [`CycleReport::periods_left`] and the next run
/// continues from there.
pub const MAX_STEPS_PER_SUBSCRIPTION: usize = 10_000;

/// What one run of the billing cycle did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Drafts this run created (a draft another run created is not listed).
    pub drafts_created: Vec<InvoiceId>,
    /// Invoices this run finalized.
    pub finalized: Vec<InvoiceId>,
    /// Subscriptions whose trial ended.
    pub trials_ended: Vec<SubscriptionId>,
    /// Subscriptions this run left work for — ended periods not drafted
    /// yet, because the run stopped after [`MAX_STEPS_PER_SUBSCRIPTION`]
    /// steps for each (or lost that many races with other runs). Empty when
    /// the run caught up; otherwise run the cycle again (at once, it is not
    /// an error) until it is: see [`CycleReport::is_complete`]. (A
    /// subscription whose last allowed step happened to catch it up is
    /// listed too; the next run finds nothing left for it.)
    pub periods_left: Vec<(TenantId, SubscriptionId)>,
}

impl CycleReport {
    /// Whether everything due at the run's time was done: no subscription
    /// has [`periods_left`](Self::periods_left). When `false`, call
    /// `run_billing_cycle` again.
    pub fn is_complete(&self) -> bool {
        self.periods_left.is_empty()
    }
}

impl BillingEngine {
    /// Does everything due at the clock's current time, for every tenant:
    /// ends trials; for each period that has ended (or the end of service)
    /// creates its draft invoice and moves the subscription to the next
    /// period, applying scheduled changes and cancellations; finalizes
    /// drafts whose grace for late usage is over, after sealing their
    /// period and re-rating their usage.
    ///
    /// Safe to run concurrently with itself: the invoice store lets one
    /// draft per subscription and period through and subscription updates
    /// are optimistic, so racing runs produce one invoice, not two.
    ///
    /// One run takes at most [`MAX_STEPS_PER_SUBSCRIPTION`] steps per
    /// subscription: a subscription further behind is listed in
    /// [`CycleReport::periods_left`] and the run still returns `Ok` — run
    /// the cycle again until [`CycleReport::is_complete`]:
    ///
    /// ```no_run
    /// # async fn catch_up(engine: &saas_billing::BillingEngine) -> Result<(), saas_billing::BillingError> {
    /// while !engine.run_billing_cycle().await?.is_complete() {}
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// The first store or rating failure; work done before it stays done
    /// and a later run continues from there.
    #[tracing::instrument(name = "billing.cycle", skip_all)]
    pub async fn run_billing_cycle(&self) -> Result<CycleReport, BillingError> {
        // Wall time of the run for the metric; the run's own time is the
        // injected clock's.
        let started = std::time::Instant::now();
        let run = self.billing_cycle().await;
        let done = run
            .as_ref()
            .ok()
            .map(|r| (r.drafts_created.len(), r.finalized.len()));
        crate::observe::cycle(started.elapsed(), done);
        run
    }

    async fn billing_cycle(&self) -> Result<CycleReport, BillingError> {
        let now = self.clock.now();
        let mut report = CycleReport::default();
        loop {
            let due = self.stores.subscriptions.due(now, BATCH).await?;
            let full = due.len() == BATCH;
            for sub in due {
                let key = (sub.tenant_id, sub.id);
                // A subscription still behind comes back in the next batch
                // (it is still due) and is listed once, while it is behind.
                report.periods_left.retain(|left| *left != key);
                let caught_up = self
                    .advance(sub.tenant_id, sub.id, now, &mut report)
                    .await?;
                if !caught_up {
                    report.periods_left.push(key);
                }
            }
            if !full {
                break;
            }
        }
        loop {
            let drafts = self.stores.invoices.drafts_due(now, BATCH).await?;
            let full = drafts.len() == BATCH;
            for draft in drafts {
                self.finalize_draft(draft, now, &mut report).await?;
            }
            if !full {
                break;
            }
        }
        Ok(report)
    }

    /// Steps `id` through what is due at `now`; `false` when it stopped
    /// after [`MAX_STEPS_PER_SUBSCRIPTION`] steps with work left.
    pub(super) async fn advance(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        now: DateTime<Utc>,
        report: &mut CycleReport,
    ) -> Result<bool, BillingError> {
        // Bounded: each pass either saves progress or stops.
        for _ in 0..MAX_STEPS_PER_SUBSCRIPTION {
            let mut sub = self.stores.subscriptions.get(tenant, id).await?;
            let before = sub.status;
            let mut changed = sub.end_trial_if_due(now)?;
            if !sub.closed {
                let period = sub.current_period()?;
                let end = sub.ended_at.map_or(period.end(), |e| e.min(period.end()));
                if sub.ended_at.is_some_and(|e| e <= period.start()) {
                    sub.closed = true;
                    changed = true;
                } else if now >= end {
                    // Reported as soon as it is stored: the draft is this
                    // run's even if another run closes the period first and
                    // this run's update below turns out stale.
                    let created = self.create_draft(&sub, period, end, now).await?;
                    report.drafts_created.extend(created);
                    sub.close_period()?;
                    changed = true;
                }
            }
            if !changed {
                return Ok(true);
            }
            let saved = match self.stores.subscriptions.update(sub).await {
                Ok(saved) => saved,
                Err(BillingError::StaleVersion { .. }) => continue,
                Err(e) => return Err(e),
            };
            if before == SubscriptionStatus::Trialing && saved.status == SubscriptionStatus::Active
            {
                report.trials_ended.push(id);
            }
            if before != saved.status {
                self.events
                    .publish(BillingEvent::SubscriptionStatusChanged {
                        tenant_id: tenant,
                        subscription_id: id,
                        from: before,
                        to: saved.status,
                        at: now,
                    })
                    .await;
            }
            self.sync_entitlements(&saved)?;
        }
        Ok(false)
    }

    /// Rates and stores the draft of the current period; `None` when
    /// another run stored it first.
    async fn create_draft(
        &self,
        sub: &Subscription,
        period: Period,
        end: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<InvoiceId>, BillingError> {
        let invoice = self.rate_open_period(sub, period, end, now).await?;
        match self.stores.invoices.create(invoice).await {
            Ok(invoice) => Ok(Some(invoice.id)),
            Err(BillingError::AlreadyExists { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Rates `sub`'s period `period` as served until `end`, as a draft
    /// that is not stored.
    pub(super) async fn rate_open_period(
        &self,
        sub: &Subscription,
        period: Period,
        end: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Invoice, BillingError> {
        let basis_plan = self.catalog.plan(&sub.basis.plan)?;
        let usage_plan = self.catalog.plan(&sub.plan)?;
        let spans = open_spans(sub, &period, end);
        let (usage, corrections, addon_lines) = self
            .usage_inputs(sub, period.index(), usage_plan, &spans)
            .await?;
        let stub = sub.is_stub(&period)?;
        // A stub period bills its licensed prices prorated over the
        // calendar's full period, by the same rule as any proration.
        let mut adjustments = Vec::new();
        if stub && sub.basis.billable {
            let full = sub.calendar.period(period.index())?;
            let lines = proration_lines(
                basis_plan,
                sub.currency,
                sub.basis.seats,
                &full,
                period.start(),
                false,
                self.config.rounding,
            )?;
            adjustments.extend(lines.into_iter().map(|mut line| {
                let price = basis_plan
                    .prices()
                    .iter()
                    .find(|p| Some(p.key()) == line.price.as_ref());
                line.kind = LineKind::Licensed;
                line.description = format!(
                    "{} ({}), first period from {}",
                    price.map_or("", |p| p.description()),
                    basis_plan.reference(),
                    period.start().to_rfc3339()
                );
                line
            }));
        }
        if sub.basis.billable {
            adjustments.extend(addon_period_lines(
                sub,
                &self.catalog,
                &period,
                stub,
                self.config.rounding,
            )?);
        }
        adjustments.extend(sub.pending_lines.iter().cloned());
        let input = RatingInput {
            period,
            currency: sub.currency,
            rounding: self.config.rounding,
            licensed: (sub.basis.billable && !stub).then_some(LicensedBasis {
                plan: basis_plan,
                seats: sub.basis.seats,
            }),
            adjustments: &adjustments,
            usage_plan,
            usage: &usage,
            corrections: &corrections,
        };
        let mut draft = rate(&input, &*self.clock)?;
        draft.lines.extend(addon_lines);
        self.discount_and_tax(
            &mut draft.lines,
            sub.tenant_id,
            sub.id,
            sub.currency,
            period.index(),
        )
        .await?;
        let total = total_of(sub.currency, &draft.lines)?;
        Ok(Invoice {
            id: InvoiceId::new(),
            tenant_id: sub.tenant_id,
            subscription_id: sub.id,
            period_index: period.index(),
            period_start: period.start(),
            period_end: end,
            plan: sub.plan.clone(),
            currency: sub.currency,
            status: InvoiceStatus::Draft,
            lines: draft.lines,
            total,
            created_at: now,
            finalize_after: end.checked_add_signed(self.config.late_usage_grace).ok_or(
                BillingError::DateOutOfRange {
                    what: "a finalization time",
                },
            )?,
            finalized_at: None,
            number: None,
            payment: None,
        })
    }

    async fn finalize_draft(
        &self,
        draft: Invoice,
        now: DateTime<Utc>,
        report: &mut CycleReport,
    ) -> Result<(), BillingError> {
        let (tenant, id) = (draft.tenant_id, draft.subscription_id);
        let sub = self.stores.subscriptions.get(tenant, id).await?;
        self.stores
            .usage
            .seal(tenant, id, draft.period_index)
            .await?;
        let usage_plan = self.catalog.plan(&draft.plan)?;
        // The spans the draft billed, whatever is attached now.
        let spans = billed_spans(&draft.lines);
        let (usage, corrections, addon_lines) = self
            .usage_inputs(&sub, draft.period_index, usage_plan, &spans)
            .await?;
        let kept: Vec<InvoiceLine> = draft
            .lines
            .iter()
            .filter(|l| !l.kind.is_usage())
            .cloned()
            .collect();
        let period = sub.period(draft.period_index)?;
        let input = RatingInput {
            period,
            currency: draft.currency,
            rounding: self.config.rounding,
            licensed: None,
            adjustments: &kept,
            usage_plan,
            usage: &usage,
            corrections: &corrections,
        };
        let mut rated = rate(&input, &*self.clock)?;
        rated.lines.extend(addon_lines);
        self.discount_and_tax(
            &mut rated.lines,
            tenant,
            id,
            draft.currency,
            draft.period_index,
        )
        .await?;
        match self
            .stores
            .invoices
            .finalize(
                tenant,
                draft.id,
                Finalization::new(rated.lines, now, self.issuer.issuer_for(tenant))
                    .with_credits_at(draft.finalize_after.min(now)),
            )
            .await
        {
            Ok(invoice) => {
                report.finalized.push(invoice.id);
                self.check_credit_threshold(&invoice).await?;
                self.events
                    .publish(BillingEvent::InvoiceFinalized {
                        tenant_id: tenant,
                        subscription_id: id,
                        invoice_id: invoice.id,
                        period_index: invoice.period_index,
                        number: invoice.number.clone(),
                        total: invoice.total,
                        at: now,
                    })
                    .await;
                Ok(())
            }
            Err(BillingError::InvoiceFinalized { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The usage billed in period `n`'s invoice: aggregates of period `n`
    /// and corrections for late usage of earlier periods; and the lines of
    /// metered add-ons: the usage of `spans` in period `n`, and late usage
    /// in the spans earlier invoices billed.
    async fn usage_inputs(
        &self,
        sub: &Subscription,
        n: i64,
        plan: &PlanVersion,
        spans: &[Span],
    ) -> Result<UsageInputs, BillingError> {
        let stored = self
            .stores
            .usage
            .billed_in(sub.tenant_id, sub.id, n)
            .await?;
        let window = Window::BillingPeriod(sub.calendar);
        let addons = SpanRating {
            catalog: &self.catalog,
            window,
            currency: sub.currency,
            rounding: self.config.rounding,
        };
        let meters = metered(plan);
        let mut usage = BTreeMap::new();
        // Trial usage is recorded, not billed, even when it falls in the
        // calendar period of a prorated first period.
        let paid_start = sub.paid_start();
        let current: Vec<&UsageEvent> = stored
            .iter()
            .filter(|u| u.period == n && u.event.timestamp >= paid_start)
            .map(|u| &u.event)
            .collect();
        for key in &meters {
            let meter = self.catalog.meter(key)?;
            usage.insert(
                (*key).clone(),
                aggregate(meter, current.iter().copied(), window)?,
            );
        }
        let mut addon_lines = addons.usage_lines(spans, &current)?;
        let mut late: BTreeMap<i64, Vec<&UsageEvent>> = BTreeMap::new();
        for u in stored
            .iter()
            .filter(|u| u.period < n && u.period >= 0 && u.event.timestamp >= paid_start)
        {
            late.entry(u.period).or_default().push(&u.event);
        }
        let mut corrections = Vec::new();
        for (period, events) in late {
            let prior = self
                .stores
                .usage
                .for_period(sub.tenant_id, sub.id, period, n)
                .await?;
            // Late usage is priced on the plan version its own period was
            // rated on (its invoice's plan), even after a plan change.
            let billed = self
                .stores
                .invoices
                .find(sub.tenant_id, sub.id, period)
                .await?;
            let late_plan = match &billed {
                Some(invoice) => self.catalog.plan(&invoice.plan)?,
                None => plan,
            };
            if let Some(invoice) = &billed {
                let prior: Vec<&UsageEvent> = prior.iter().map(|u| &u.event).collect();
                addon_lines.extend(addons.correction_lines(
                    period,
                    &billed_spans(&invoice.lines),
                    &prior,
                    &events,
                )?);
            }
            for key in metered(late_plan) {
                let meter = self.catalog.meter(key)?;
                let before = aggregate(meter, prior.iter().map(|u| &u.event), window)?;
                let after = aggregate(
                    meter,
                    prior.iter().map(|u| &u.event).chain(events.iter().copied()),
                    window,
                )?;
                if before != after {
                    corrections.push(UsageCorrection {
                        meter: key.clone(),
                        period,
                        before,
                        after,
                        plan: late_plan.clone(),
                    });
                }
            }
        }
        Ok((usage, corrections, addon_lines))
    }
}

/// What [`BillingEngine::usage_inputs`] returns: the plan's usage and
/// corrections, and the metered add-ons' lines.
type UsageInputs = (
    BTreeMap<MeterKey, Vec<Aggregate>>,
    Vec<UsageCorrection>,
    Vec<InvoiceLine>,
);

/// The meters `plan` has metered prices on.
fn metered(plan: &PlanVersion) -> Vec<&MeterKey> {
    plan.prices()
        .iter()
        .filter_map(|p| match p.kind() {
            PriceKind::Metered { meter } => Some(meter),
            _ => None,
        })
        .collect()
}

impl BillingEngine {
    /// Applies the subscription's coupons active in `period` (see
    /// [`apply_discounts`](crate::apply_discounts)), then sets the lines'
    /// taxes from the engine's resolver on the discounted amounts (see
    /// [`apply_taxes`](crate::apply_taxes)).
    async fn discount_and_tax(
        &self,
        lines: &mut [InvoiceLine],
        tenant: TenantId,
        subscription: SubscriptionId,
        currency: crate::currency::Currency,
        period: i64,
    ) -> Result<(), BillingError> {
        let redemptions = self
            .stores
            .coupons
            .redemptions(tenant, subscription)
            .await?;
        crate::discount::apply_discounts(
            lines,
            &redemptions,
            period,
            currency,
            self.config.rounding,
        )?;
        crate::tax::apply_taxes(
            lines,
            &*self.taxes,
            tenant,
            subscription,
            currency,
            self.config.rounding,
        )
    }
}
