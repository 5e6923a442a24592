//! Subscriptions: a customer on a plan version, its status and billing
//! calendar, and the pure operations that change it.
//!
//! Every operation takes the current instant (read by the caller from an
//! injected [`saas_core::Clock`]) and either changes the subscription or
//! returns a typed error and leaves it untouched.
//!
//! Billing model: a period's invoice is created at the period's end. It
//! bills the licensed prices (recurring, per seat) the period *started*
//! on for the whole period, the proration credits and debits of changes
//! made during it, and the period's metered usage (in arrears). A
//! mid-period upgrade therefore shows the old plan's full price, a credit
//! for its unused time and a debit for the new plan's remaining time, as
//! Stripe's invoices do. A metered add-on bills the usage of the time it
//! was attached ([`MeteredAddOnSpan`]).
//!
//! An operation acts on the current period (the oldest not yet invoiced),
//! so it must not run once that period has ended: the time-dependent
//! operations refuse it, and [`crate::BillingEngine`] invoices the ended
//! periods before every operation, whatever the billing cycle's lag.

mod addons;
mod metered_addons;
mod ops;
mod proration;
mod requests;
mod status;

pub(crate) use addons::addon_period_lines;
pub use addons::{AddOn, MAX_ADDON_QUANTITY, MAX_ADDONS};
pub use metered_addons::{MAX_METERED_ADDON_SPANS, MeteredAddOnSpan};
pub(crate) use proration::proration_lines;
pub use proration::{ChangeDirection, ChangeTiming, ProrationPolicy, proration_fraction};
pub use requests::{CancelMode, NewSubscription, PlanChange, PlanChangeOutcome, Trial};
pub use status::{SubscriptionEvent, SubscriptionStatus, TRANSITIONS};

use chrono::{DateTime, Utc};
use saas_core::TenantId;
use serde::{Deserialize, Serialize};

use crate::calendar::{BillingCalendar, Period};
use crate::currency::Currency;
use crate::error::BillingError;
use crate::ids::SubscriptionId;
use crate::invoice::InvoiceLine;
use crate::plan::PlanRef;

/// How far back a start may be backdated
/// ([`NewSubscription::backdate_start`]): 366 days, one year even across
/// a leap day. The bound keeps the catch-up of the first billing cycle
/// small (a year of daily periods is 366 invoices).
pub const MAX_BACKDATE_DAYS: u32 = 366;

/// What the licensed line of the current period bills: the plan and seats
/// the period started on, and whether it is billed at all (not when the
/// subscription was paused at the period's start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodBasis {
    /// The plan version.
    pub plan: PlanRef,
    /// Seats.
    pub seats: u32,
    /// Whether the licensed prices are billed for this period.
    pub billable: bool,
}

/// A change scheduled for the end of the current period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledChange {
    /// The plan version to switch to.
    pub plan: PlanRef,
    /// The seats to switch to.
    pub seats: u32,
}

/// One subscription. Stores persist it whole and compare
/// [`version`](Self::version) on update (optimistic concurrency).
///
/// Its serde form is the storage format stores keep it in;
/// deserializing does not re-validate it, so only read back what a store
/// wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub(crate) id: SubscriptionId,
    pub(crate) tenant_id: TenantId,
    pub(crate) plan: PlanRef,
    pub(crate) currency: Currency,
    pub(crate) seats: u32,
    pub(crate) status: SubscriptionStatus,
    pub(crate) calendar: BillingCalendar,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) trial_end: Option<DateTime<Utc>>,
    /// A backdated start; `None` when service started at `created_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) current_period: i64,
    pub(crate) basis: PeriodBasis,
    pub(crate) accruing: bool,
    pub(crate) pending_lines: Vec<InvoiceLine>,
    pub(crate) scheduled_change: Option<ScheduledChange>,
    pub(crate) cancel_at_period_end: bool,
    pub(crate) canceled_at: Option<DateTime<Utc>>,
    pub(crate) ended_at: Option<DateTime<Utc>>,
    pub(crate) closed: bool,
    pub(crate) version: u64,
    /// The add-ons now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) addons: Vec<AddOn>,
    /// The add-ons the current period started on (billed in whole), the
    /// add-on half of `basis`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) basis_addons: Vec<AddOn>,
    /// Add-on changes for the period's end (quantity 0: detach).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) scheduled_addons: Vec<AddOn>,
    /// When the current period bills each metered add-on's usage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) metered_spans: Vec<MeteredAddOnSpan>,
}

impl Subscription {
    /// Its id.
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// The tenant (customer) subscribed.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// The plan version it is on now.
    pub fn plan(&self) -> &PlanRef {
        &self.plan
    }

    /// The currency it is billed in.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Seats (the quantity of per-seat prices).
    pub fn seats(&self) -> u32 {
        self.seats
    }

    /// Its status.
    pub fn status(&self) -> SubscriptionStatus {
        self.status
    }

    /// Its billing calendar (anchor, customer time zone, cadence).
    pub fn calendar(&self) -> &BillingCalendar {
        &self.calendar
    }

    /// When it was created.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// When service started: the creation instant, or the backdated start
    /// ([`NewSubscription::backdate_start`]).
    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at.unwrap_or(self.created_at)
    }

    /// When its trial ends, if it had one: the calendar's anchor, unless a
    /// later [billing cycle anchor](NewSubscription::billing_cycle_anchor)
    /// was chosen.
    pub fn trial_end(&self) -> Option<DateTime<Utc>> {
        self.trial_end
    }

    /// When paid service starts: the trial's end, or the start.
    pub fn paid_start(&self) -> DateTime<Utc> {
        self.trial_end.unwrap_or_else(|| self.started_at())
    }

    /// The index of the oldest period not yet invoiced.
    pub fn current_period_index(&self) -> i64 {
        self.current_period
    }

    /// The oldest period not yet invoiced.
    ///
    /// With a [billing cycle anchor](NewSubscription::billing_cycle_anchor)
    /// after the paid start, the first period (index −1) is the stub from
    /// the paid start to the anchor; its licensed prices are prorated over
    /// the calendar's full period −1.
    ///
    /// # Errors
    /// `DateOutOfRange` at the edges of chrono's range.
    pub fn current_period(&self) -> Result<Period, BillingError> {
        self.period(self.current_period)
    }

    /// Period `n` of the calendar, starting no earlier than the paid start
    /// (only a stub period starts later than the calendar says).
    pub(crate) fn period(&self, n: i64) -> Result<Period, BillingError> {
        let period = self.calendar.period(n)?;
        Ok(period.starting_no_earlier_than(self.paid_start()))
    }

    /// Whether period `n` is a stub: shorter than the calendar's period
    /// because the billing cycle anchor lies after the paid start.
    pub(crate) fn is_stub(&self, period: &Period) -> Result<bool, BillingError> {
        Ok(period.start() > self.calendar.period(period.index())?.start())
    }

    /// What the current period's licensed line bills.
    pub fn basis(&self) -> &PeriodBasis {
        &self.basis
    }

    /// Proration lines waiting for the current period's invoice.
    pub fn pending_lines(&self) -> &[InvoiceLine] {
        &self.pending_lines
    }

    /// The change scheduled for the end of the current period.
    pub fn scheduled_change(&self) -> Option<&ScheduledChange> {
        self.scheduled_change.as_ref()
    }

    /// Whether it cancels at the end of the current period.
    pub fn cancel_at_period_end(&self) -> bool {
        self.cancel_at_period_end
    }

    /// When cancellation was requested.
    pub fn canceled_at(&self) -> Option<DateTime<Utc>> {
        self.canceled_at
    }

    /// When service ended (cancellation time, or the period end for a
    /// cancellation at period end).
    pub fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.ended_at
    }

    /// Whether its final invoice has been created: nothing is due anymore.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The store's version, bumped by every successful update.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the billing cycle next has work for it (trial end, period end,
    /// end of service); `None` once closed. Stores index on this.
    pub fn next_due_at(&self) -> Option<DateTime<Utc>> {
        if self.closed {
            return None;
        }
        if self.status == SubscriptionStatus::Trialing {
            return self.trial_end;
        }
        let end = self.current_period().ok()?.end();
        Some(self.ended_at.map_or(end, |ended| ended.min(end)))
    }

    /// Whether the customer is served at `at` (trialing, active, past due;
    /// not paused, unpaid, ended or incomplete).
    pub fn is_served(&self, at: DateTime<Utc>) -> bool {
        matches!(
            self.status,
            SubscriptionStatus::Trialing | SubscriptionStatus::Active | SubscriptionStatus::PastDue
        ) && self.ended_at.is_none_or(|end| at < end)
    }
}
