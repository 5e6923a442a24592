//! The pure operations on a subscription.

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::MAX_BACKDATE_DAYS;
use super::proration::proration_lines;
use super::requests::{CancelMode, NewSubscription, PlanChange, PlanChangeOutcome, Trial};
use super::{
    ChangeDirection, ChangeTiming, PeriodBasis, ProrationPolicy, ScheduledChange, Subscription,
    SubscriptionEvent, SubscriptionStatus,
};
use crate::calendar::{BillingCalendar, Cadence, resolve_local, to_local};
use crate::currency::Currency;
use crate::error::BillingError;
use crate::plan::{Catalog, PlanRef, PlanVersion, check_trial_days};
use crate::rounding::RoundingMode;

impl Subscription {
    /// Creates a subscription at `now`. With a trial of N days, it is
    /// `trialing` and its calendar is anchored at the trial's end — N
    /// calendar days later in the customer's time zone, at the same local
    /// time (so a trial across a DST change is 23 or 25 hours shorter or
    /// longer than N × 24 h; the calendar's rules for gaps and overlaps
    /// apply): the first paid period starts then, and usage during the
    /// trial is recorded but not billed.
    ///
    /// A [backdated start](NewSubscription::backdate_start) replaces `now`
    /// as the start (the trial, if any, counts from it). A
    /// [billing cycle anchor](NewSubscription::billing_cycle_anchor) after
    /// the paid start (the trial's end, or the start) anchors the calendar
    /// there instead, and the time before it is a prorated first period
    /// (index −1).
    ///
    /// ```
    /// use saas_billing::{
    ///     dec, Catalog, Charge, Currency, Money, NewSubscription, PlanId, PlanRef, PlanVersion,
    ///     Product, ProductId, Subscription, TenantId, TimeZone, Utc,
    /// };
    ///
    /// let app = ProductId::new("app")?;
    /// let catalog = Catalog::builder()
    ///     .product(Product::new(app.clone(), "App"))
    ///     .plan(PlanVersion::builder(PlanId::new("basic")?, 1, app)
    ///         .recurring("base", "Basic", [Charge::flat(Money::new(dec!(30), Currency::USD))?])
    ///         .build()?)
    ///     .build()?;
    /// let basic = PlanRef::new(PlanId::new("basic")?, 1);
    /// let now = Utc.with_ymd_and_hms(2024, 4, 10, 0, 0, 0).unwrap();
    /// let may_1 = Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap();
    ///
    /// // First full period from May 1; Apr 10 – May 1 is a prorated stub.
    /// let new = NewSubscription::new(TenantId::new(), basic.clone(), Currency::USD)
    ///     .billing_cycle_anchor(may_1);
    /// let sub = Subscription::create(new, &catalog, now)?;
    /// assert_eq!(sub.calendar().anchor(), may_1);
    /// let stub = sub.current_period()?;
    /// assert_eq!((stub.index(), stub.start(), stub.end()), (-1, now, may_1));
    ///
    /// // Backdated to March 1: periods count from it.
    /// let march_1 = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
    /// let new = NewSubscription::new(TenantId::new(), basic, Currency::USD)
    ///     .backdate_start(march_1);
    /// let sub = Subscription::create(new, &catalog, now)?;
    /// assert_eq!(sub.started_at(), march_1);
    /// assert_eq!(sub.current_period()?.start(), march_1);
    /// # Ok::<(), saas_billing::BillingError>(())
    /// ```
    ///
    /// # Errors
    /// `NotFound` for an unknown plan version; `InvalidInput` if the plan
    /// is not sold in the currency or seats is 0, or (field `trial`) if
    /// `Trial::Days` exceeds [`MAX_TRIAL_DAYS`](crate::MAX_TRIAL_DAYS), the
    /// limit plan versions have too; `InvalidInput` (field `start`) for a
    /// start after `now` or more than
    /// [`MAX_BACKDATE_DAYS`](crate::MAX_BACKDATE_DAYS) days before it;
    /// `InvalidInput` (field `billing_cycle_anchor`) for an anchor before
    /// the paid start or more than one billing interval after it;
    /// `DateOutOfRange`.
    pub fn create(
        new: NewSubscription,
        catalog: &Catalog,
        now: DateTime<Utc>,
    ) -> Result<Subscription, BillingError> {
        let plan = catalog.plan(&new.plan)?;
        check_sellable(plan, new.currency, new.seats)?;
        let trial_days = match new.trial {
            Trial::PlanDefault => plan.trial_days(),
            Trial::Days(days) => days,
            Trial::None => 0,
        };
        check_trial_days(trial_days).map_err(|reason| BillingError::InvalidInput {
            field: "trial",
            reason: format!("{reason}; ask for a shorter trial"),
        })?;
        let start = match new.start {
            Some(start) => check_backdated_start(start, now)?,
            None => now,
        };
        let trial_end = if trial_days == 0 {
            None
        } else {
            Some(trial_end(start, new.time_zone, trial_days)?)
        };
        let paid_start = trial_end.unwrap_or(start);
        let cadence = plan.cadence();
        let anchor = match new.billing_cycle_anchor {
            Some(anchor) => check_anchor(anchor, paid_start, new.time_zone, cadence)?,
            None => paid_start,
        };
        let status = match (trial_end, new.require_payment) {
            (Some(_), _) => SubscriptionStatus::Trialing,
            (None, true) => SubscriptionStatus::Incomplete,
            (None, false) => SubscriptionStatus::Active,
        };
        Ok(Subscription {
            id: new.id,
            tenant_id: new.tenant_id,
            plan: new.plan.clone(),
            currency: new.currency,
            seats: new.seats,
            status,
            calendar: BillingCalendar::new(anchor, new.time_zone, cadence),
            created_at: now,
            trial_end,
            started_at: new.start.map(|_| start),
            // A stub before the anchor is the calendar's period −1.
            current_period: if anchor > paid_start { -1 } else { 0 },
            basis: PeriodBasis {
                plan: new.plan,
                seats: new.seats,
                billable: true,
            },
            accruing: true,
            pending_lines: Vec::new(),
            scheduled_change: None,
            cancel_at_period_end: false,
            canceled_at: None,
            ended_at: None,
            closed: false,
            version: 0,
            addons: Vec::new(),
            basis_addons: Vec::new(),
            scheduled_addons: Vec::new(),
            metered_spans: Vec::new(),
        })
    }

    /// Applies an event with no other effect (payments, dunning, trial
    /// end, incomplete expiry) by the transition table.
    ///
    /// # Errors
    /// `IllegalTransition`; `InvalidInput` for an event that has its own
    /// operation (pause, resume, cancel, change plan).
    pub fn apply(&mut self, event: SubscriptionEvent) -> Result<SubscriptionStatus, BillingError> {
        use SubscriptionEvent as E;
        if matches!(
            event,
            E::Pause | E::Resume | E::Cancel | E::ScheduleCancel | E::ChangePlan
        ) {
            return Err(BillingError::invalid(
                "event",
                format!("{event} has its own operation"),
            ));
        }
        self.status = self.status.apply(event)?;
        Ok(self.status)
    }

    /// Cancels now or at period end.
    ///
    /// # Errors
    /// `IllegalTransition` from a terminal or otherwise excluded status;
    /// `InvalidInput` (field `now`) while the current period has
    /// ended and is not invoiced yet.
    pub fn cancel(
        &mut self,
        mode: CancelMode,
        catalog: &Catalog,
        now: DateTime<Utc>,
        rounding: RoundingMode,
    ) -> Result<(), BillingError> {
        match mode {
            CancelMode::AtPeriodEnd => {
                self.status.apply(SubscriptionEvent::ScheduleCancel)?;
                self.check_period_open(now)?;
                self.cancel_at_period_end = true;
            }
            CancelMode::Immediately { prorate } => {
                let next = self.status.apply(SubscriptionEvent::Cancel)?;
                self.check_period_open(now)?;
                if prorate {
                    self.prorate(catalog, now, true, true, rounding)?;
                }
                self.status = next;
                self.accruing = false;
                self.ended_at = Some(now);
            }
        }
        self.canceled_at = Some(now);
        Ok(())
    }

    /// Undoes a cancellation scheduled at period end.
    ///
    /// # Errors
    /// `IllegalTransition` if the status forbids it; `InvalidInput` if no
    /// cancellation is scheduled.
    pub fn keep(&mut self) -> Result<(), BillingError> {
        self.status.apply(SubscriptionEvent::ScheduleCancel)?;
        if !self.cancel_at_period_end {
            return Err(BillingError::invalid(
                "subscription",
                "no cancellation is scheduled",
            ));
        }
        self.cancel_at_period_end = false;
        self.canceled_at = None;
        Ok(())
    }

    /// Pauses now: the unused rest of the period is credited, and periods
    /// starting while paused are not billed.
    ///
    /// # Errors
    /// `IllegalTransition`; `InvalidInput` (field `now`) while the current period has
    /// ended and is not invoiced yet.
    pub fn pause(
        &mut self,
        catalog: &Catalog,
        now: DateTime<Utc>,
        rounding: RoundingMode,
    ) -> Result<(), BillingError> {
        let next = self.status.apply(SubscriptionEvent::Pause)?;
        self.check_period_open(now)?;
        self.prorate(catalog, now, true, true, rounding)?;
        self.accruing = false;
        self.status = next;
        Ok(())
    }

    /// Resumes now: the rest of the period is debited.
    ///
    /// # Errors
    /// `IllegalTransition`; `InvalidInput` (field `now`) while the current period has
    /// ended and is not invoiced yet.
    pub fn resume(
        &mut self,
        catalog: &Catalog,
        now: DateTime<Utc>,
        rounding: RoundingMode,
    ) -> Result<(), BillingError> {
        let next = self.status.apply(SubscriptionEvent::Resume)?;
        self.check_period_open(now)?;
        self.accruing = true;
        self.prorate(catalog, now, false, true, rounding)?;
        self.status = next;
        Ok(())
    }

    /// Changes plan version and/or seats, by `policy`. The change is an
    /// upgrade when the new licensed amount per period is higher.
    ///
    /// # Errors
    /// `IllegalTransition`; `NotFound` for an unknown plan version;
    /// `InvalidInput` for another currency or cadence, or zero seats, and
    /// (field `now`) while the current period has ended and is not
    /// invoiced yet.
    pub fn change_plan(
        &mut self,
        change: PlanChange,
        catalog: &Catalog,
        policy: ProrationPolicy,
        now: DateTime<Utc>,
        rounding: RoundingMode,
    ) -> Result<PlanChangeOutcome, BillingError> {
        self.status.apply(SubscriptionEvent::ChangePlan)?;
        self.check_period_open(now)?;
        let old = catalog.plan(&self.plan)?;
        let new = catalog.plan(&change.plan)?;
        check_sellable(new, self.currency, change.seats)?;
        if new.cadence() != old.cadence() {
            return Err(BillingError::invalid(
                "plan",
                "changing the billing cadence is not supported",
            ));
        }
        let before = old.licensed_amount(self.currency, self.seats)?;
        let after = new.licensed_amount(self.currency, change.seats)?;
        let direction = if after.amount() > before.amount() {
            ChangeDirection::Upgrade
        } else {
            ChangeDirection::Downgrade
        };
        let timing = policy.timing(direction);
        match timing {
            ChangeTiming::AtPeriodEnd => {
                self.scheduled_change = Some(ScheduledChange {
                    plan: change.plan,
                    seats: change.seats,
                });
            }
            ChangeTiming::ImmediateWithProration => {
                self.prorate(catalog, now, true, false, rounding)?;
                self.switch(change.plan, change.seats, now)?;
                self.prorate(catalog, now, false, false, rounding)?;
            }
            ChangeTiming::ImmediateWithoutProration => {
                self.switch(change.plan, change.seats, now)?
            }
        }
        Ok(PlanChangeOutcome { direction, timing })
    }

    /// Refuses an operation at `now` while the current period (the oldest
    /// not yet invoiced) has already ended. Such an operation would
    /// prorate against a period with no time left and change the plan the
    /// ended period is billed on (issue 15 §1); the engine invoices the
    /// ended periods before every operation, so only direct callers of the
    /// pure operations meet this.
    pub(super) fn check_period_open(&self, now: DateTime<Utc>) -> Result<(), BillingError> {
        if self.closed {
            return Ok(());
        }
        let period = self.current_period()?;
        if now >= period.end() {
            return Err(BillingError::invalid(
                "now",
                format!(
                    "period {} ended at {} and is not invoiced yet; run the billing cycle first",
                    period.index(),
                    period.end().to_rfc3339()
                ),
            ));
        }
        Ok(())
    }

    /// Switches plan now; before the period started (a trial), the
    /// period's basis follows.
    fn switch(
        &mut self,
        plan: PlanRef,
        seats: u32,
        now: DateTime<Utc>,
    ) -> Result<(), BillingError> {
        if now <= self.current_period()?.start() {
            self.basis.plan = plan.clone();
            self.basis.seats = seats;
        }
        self.plan = plan;
        self.seats = seats;
        self.scheduled_change = None;
        Ok(())
    }

    /// Adds credit (or debit) lines for the current plan (and, when
    /// `with_addons`, its add-ons) over the rest of the current period, if
    /// it is accruing and the period has started.
    fn prorate(
        &mut self,
        catalog: &Catalog,
        now: DateTime<Utc>,
        credit: bool,
        with_addons: bool,
        rounding: RoundingMode,
    ) -> Result<(), BillingError> {
        let period = self.current_period()?;
        if now <= period.start() {
            // Nothing billed yet: the period's basis simply follows.
            self.basis.billable = !credit;
            return Ok(());
        }
        if !self.accruing {
            return Ok(());
        }
        // A stub period is prorated against the calendar's full period, as
        // its licensed line is.
        let full = self.calendar.period(period.index())?;
        let plan = catalog.plan(&self.plan)?;
        let lines = proration_lines(
            plan,
            self.currency,
            self.seats,
            &full,
            now,
            credit,
            rounding,
        )?;
        let addons = if with_addons {
            self.addons_proration(catalog, now, credit, rounding)?
        } else {
            Vec::new()
        };
        self.pending_lines.extend(lines);
        self.pending_lines.extend(addons);
        Ok(())
    }

    /// Ends the trial if `now` has reached it. Returns whether it did.
    pub(crate) fn end_trial_if_due(&mut self, now: DateTime<Utc>) -> Result<bool, BillingError> {
        match self.trial_end {
            Some(end) if self.status == SubscriptionStatus::Trialing && now >= end => {
                self.status = self.status.apply(SubscriptionEvent::TrialEnded)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// After the current period's invoice exists: moves to the next
    /// period, applying a scheduled change or cancellation.
    pub(crate) fn close_period(&mut self) -> Result<(), BillingError> {
        let period = self.current_period()?;
        if self.ended_at.is_some_and(|end| end <= period.end()) {
            self.closed = true;
            self.pending_lines.clear();
            return Ok(());
        }
        if let Some(change) = self.scheduled_change.take() {
            self.plan = change.plan;
            self.seats = change.seats;
        }
        if self.cancel_at_period_end {
            self.status = self.status.apply(SubscriptionEvent::Cancel)?;
            self.ended_at = Some(period.end());
            self.closed = true;
            self.pending_lines.clear();
            return Ok(());
        }
        self.current_period =
            self.current_period
                .checked_add(1)
                .ok_or(BillingError::DateOutOfRange {
                    what: "a period index",
                })?;
        self.accruing = self.status != SubscriptionStatus::Paused;
        self.basis = PeriodBasis {
            plan: self.plan.clone(),
            seats: self.seats,
            billable: self.accruing,
        };
        self.roll_addons();
        self.pending_lines.clear();
        Ok(())
    }
}

fn check_sellable(plan: &PlanVersion, currency: Currency, seats: u32) -> Result<(), BillingError> {
    if !plan.sells_in(currency) {
        return Err(BillingError::invalid(
            "currency",
            format!("{} is not sold in {currency}", plan.reference()),
        ));
    }
    if seats == 0 {
        return Err(BillingError::invalid("seats", "at least one seat"));
    }
    Ok(())
}

/// Refuses a backdated start after `now` or more than
/// [`MAX_BACKDATE_DAYS`] days before it.
fn check_backdated_start(
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, BillingError> {
    if start > now {
        return Err(BillingError::invalid(
            "start",
            format!(
                "{} is after now ({}); a start can only be backdated, create the subscription at its start",
                start.to_rfc3339(),
                now.to_rfc3339()
            ),
        ));
    }
    let limit = TimeDelta::try_days(i64::from(MAX_BACKDATE_DAYS))
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or(BillingError::DateOutOfRange {
            what: "a backdated start",
        })?;
    if start < limit {
        return Err(BillingError::invalid(
            "start",
            format!(
                "{} is more than {MAX_BACKDATE_DAYS} days before now ({}); backdate to {} or later",
                start.to_rfc3339(),
                now.to_rfc3339(),
                limit.to_rfc3339()
            ),
        ));
    }
    Ok(start)
}

/// Refuses an anchor before `paid_start` or more than one billing interval
/// (the calendar's, month-end clamping included) after it.
fn check_anchor(
    anchor: DateTime<Utc>,
    paid_start: DateTime<Utc>,
    tz: Tz,
    cadence: Cadence,
) -> Result<DateTime<Utc>, BillingError> {
    if anchor < paid_start {
        return Err(BillingError::invalid(
            "billing_cycle_anchor",
            format!(
                "{} is before the paid service starts ({}, the start or the trial's end); \
                 choose an anchor at or after it",
                anchor.to_rfc3339(),
                paid_start.to_rfc3339()
            ),
        ));
    }
    let latest = BillingCalendar::new(paid_start, tz, cadence)
        .period(0)?
        .end();
    if anchor > latest {
        return Err(BillingError::invalid(
            "billing_cycle_anchor",
            format!(
                "{} is more than one billing interval after the paid start ({}); \
                 choose an anchor at or before {}",
                anchor.to_rfc3339(),
                paid_start.to_rfc3339(),
                latest.to_rfc3339()
            ),
        ));
    }
    Ok(anchor)
}

/// `days` calendar days after `now` in `tz`, at the same local time.
fn trial_end(now: DateTime<Utc>, tz: Tz, days: u32) -> Result<DateTime<Utc>, BillingError> {
    const OUT_OF_RANGE: BillingError = BillingError::DateOutOfRange {
        what: "a trial end",
    };
    let local = to_local(tz, now).map_err(|_| OUT_OF_RANGE)?;
    let end = TimeDelta::try_days(i64::from(days))
        .and_then(|d| local.checked_add_signed(d))
        .ok_or(OUT_OF_RANGE)?;
    resolve_local(tz, end).map_err(|_| OUT_OF_RANGE)
}
