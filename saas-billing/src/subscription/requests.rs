//! What callers ask of subscriptions.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use saas_core::TenantId;

use super::{ChangeDirection, ChangeTiming};
use crate::currency::Currency;
use crate::ids::SubscriptionId;
use crate::plan::PlanRef;

/// Whether a new subscription starts with a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Trial {
    /// The plan version's trial (none if it has 0 days).
    #[default]
    PlanDefault,
    /// A trial of this many days (0 for none), overriding the plan's; at
    /// most [`MAX_TRIAL_DAYS`](crate::MAX_TRIAL_DAYS), like a plan's trial
    /// (more is `InvalidInput` when the subscription is created).
    Days(u32),
    /// No trial.
    None,
}

/// What to create.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NewSubscription {
    /// The tenant subscribing.
    pub tenant_id: TenantId,
    /// The plan version.
    pub plan: PlanRef,
    /// The billing currency; the plan must be sold in it.
    pub currency: Currency,
    /// Seats (1 or more).
    pub seats: u32,
    /// The customer's IANA time zone: periods and usage windows follow it.
    pub time_zone: Tz,
    /// Trial choice.
    pub trial: Trial,
    /// Start `incomplete` (awaiting a first payment) instead of active
    /// when there is no trial.
    pub require_payment: bool,
    /// Id to use (a fresh one by default).
    pub id: SubscriptionId,
    /// Stripe's `billing_cycle_anchor`: the instant the first *full*
    /// period starts (`None`: the start, or the trial's end). Time from the
    /// start (or trial end) to the anchor is a prorated first period,
    /// billed when it ends at the anchor. See
    /// [`billing_cycle_anchor`](Self::billing_cycle_anchor).
    pub billing_cycle_anchor: Option<DateTime<Utc>>,
    /// A backdated start (`None`: the creation instant). See
    /// [`backdate_start`](Self::backdate_start).
    pub start: Option<DateTime<Utc>>,
}

impl NewSubscription {
    /// One seat of `plan` in `currency`, UTC, the plan's trial, active.
    pub fn new(tenant_id: TenantId, plan: PlanRef, currency: Currency) -> NewSubscription {
        NewSubscription {
            tenant_id,
            plan,
            currency,
            seats: 1,
            time_zone: chrono_tz::UTC,
            trial: Trial::PlanDefault,
            require_payment: false,
            id: SubscriptionId::new(),
            billing_cycle_anchor: None,
            start: None,
        }
    }

    /// Sets the seats.
    pub fn seats(mut self, seats: u32) -> Self {
        self.seats = seats;
        self
    }

    /// Sets the customer's time zone.
    pub fn time_zone(mut self, tz: Tz) -> Self {
        self.time_zone = tz;
        self
    }

    /// Sets the trial.
    pub fn trial(mut self, trial: Trial) -> Self {
        self.trial = trial;
        self
    }

    /// Starts `incomplete` until a payment succeeds.
    pub fn require_payment(mut self) -> Self {
        self.require_payment = true;
        self
    }

    /// Sets the id.
    pub fn id(mut self, id: SubscriptionId) -> Self {
        self.id = id;
        self
    }

    /// Anchors the billing cycle at `anchor` (Stripe's
    /// `billing_cycle_anchor`): full periods start at `anchor` and repeat
    /// by the plan's cadence from it in the customer's time zone (a
    /// month-end anchor clamps like every calendar: Jan 31 → Feb 29 →
    /// Mar 31). The time from the paid start — the start, or the trial's
    /// end — to `anchor` is a first, shorter period whose licensed prices
    /// are prorated by the crate's rule, `amount × stub seconds / seconds
    /// of the full period ending at the anchor` (a monthly 30.00 plan
    /// started Apr 10 with anchor May 1 bills 21/30 × 30.00 = 21.00 on
    /// May 1, then 30.00 per month). Cancelling, pausing or changing plan
    /// inside that first period prorates against the same full period.
    ///
    /// [`Subscription::create`](crate::Subscription::create) refuses (`InvalidInput`, field
    /// `billing_cycle_anchor`) an anchor before the paid start or more
    /// than one billing interval after it.
    pub fn billing_cycle_anchor(mut self, anchor: DateTime<Utc>) -> Self {
        self.billing_cycle_anchor = Some(anchor);
        self
    }

    /// Backdates the start to `start`, an instant before the creation
    /// (Stripe's `backdate_start_date`): periods (and any trial) are counted
    /// from it, usage from it is accepted, and the engine's next billing
    /// cycle drafts every period that has already ended, as it does for a
    /// lagging cycle. The subscription's
    /// [`created_at`](crate::Subscription::created_at) stays the creation
    /// instant; [`started_at`](crate::Subscription::started_at) is `start`.
    ///
    /// [`Subscription::create`](crate::Subscription::create) refuses (`InvalidInput`, field `start`) a
    /// start after the creation instant or more than
    /// [`MAX_BACKDATE_DAYS`](crate::MAX_BACKDATE_DAYS) days before it.
    pub fn backdate_start(mut self, start: DateTime<Utc>) -> Self {
        self.start = Some(start);
        self
    }
}

/// How to cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelMode {
    /// End service now; with `prorate`, credit the unused rest of the
    /// period on its invoice.
    Immediately {
        /// Whether to credit unused time.
        prorate: bool,
    },
    /// Keep serving until the current period ends, then cancel.
    AtPeriodEnd,
}

/// A change of plan version and/or seats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanChange {
    /// The plan version to switch to (may be the current one for a seat change).
    pub plan: PlanRef,
    /// The new seats.
    pub seats: u32,
}

/// What a plan change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanChangeOutcome {
    /// Upgrade or downgrade, by licensed amount per period.
    pub direction: ChangeDirection,
    /// The timing the policy chose.
    pub timing: ChangeTiming,
}
