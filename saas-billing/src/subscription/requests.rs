//! What callers ask of subscriptions.

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
