//! Subscription statuses and the explicit table of legal transitions.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::BillingError;

/// Where a subscription is in its life, with Stripe's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SubscriptionStatus {
    /// In its free trial; served, not billed.
    Trialing,
    /// Served and billed.
    Active,
    /// The latest payment failed and is being retried; still served.
    PastDue,
    /// Payment retries are exhausted; invoices are still created.
    Unpaid,
    /// Ended; terminal.
    Canceled,
    /// Not served and not billed until resumed.
    Paused,
    /// Created, but its first payment has not succeeded yet.
    Incomplete,
    /// The first payment never succeeded in time; terminal.
    IncompleteExpired,
}

impl SubscriptionStatus {
    /// Every status, for exhaustive tests.
    pub const ALL: [SubscriptionStatus; 8] = [
        SubscriptionStatus::Trialing,
        SubscriptionStatus::Active,
        SubscriptionStatus::PastDue,
        SubscriptionStatus::Unpaid,
        SubscriptionStatus::Canceled,
        SubscriptionStatus::Paused,
        SubscriptionStatus::Incomplete,
        SubscriptionStatus::IncompleteExpired,
    ];

    /// The snake-case name used in storage and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Trialing => "trialing",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::PastDue => "past_due",
            SubscriptionStatus::Unpaid => "unpaid",
            SubscriptionStatus::Canceled => "canceled",
            SubscriptionStatus::Paused => "paused",
            SubscriptionStatus::Incomplete => "incomplete",
            SubscriptionStatus::IncompleteExpired => "incomplete_expired",
        }
    }

    /// Whether no event leaves this status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired
        )
    }

    /// The status after `event`, by [`TRANSITIONS`].
    ///
    /// # Errors
    /// [`BillingError::IllegalTransition`] (kind `Conflict`) when the table
    /// has no row for this status and event.
    pub fn apply(self, event: SubscriptionEvent) -> Result<SubscriptionStatus, BillingError> {
        TRANSITIONS
            .iter()
            .find(|(from, on, _)| *from == self && *on == event)
            .map(|(_, _, to)| *to)
            .ok_or(BillingError::IllegalTransition { from: self, event })
    }
}

impl fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SubscriptionEvent {
    /// The trial's end was reached.
    TrialEnded,
    /// A payment succeeded.
    PaymentSucceeded,
    /// A payment failed.
    PaymentFailed,
    /// Dunning gave up retrying.
    RetriesExhausted,
    /// The first payment window closed unpaid.
    IncompleteExpired,
    /// Pause now.
    Pause,
    /// Resume a paused subscription now.
    Resume,
    /// Cancel now.
    Cancel,
    /// Schedule cancellation at period end, or undo that schedule.
    ScheduleCancel,
    /// Change the plan or quantity.
    ChangePlan,
}

impl SubscriptionEvent {
    /// Every event, for exhaustive tests.
    pub const ALL: [SubscriptionEvent; 10] = [
        SubscriptionEvent::TrialEnded,
        SubscriptionEvent::PaymentSucceeded,
        SubscriptionEvent::PaymentFailed,
        SubscriptionEvent::RetriesExhausted,
        SubscriptionEvent::IncompleteExpired,
        SubscriptionEvent::Pause,
        SubscriptionEvent::Resume,
        SubscriptionEvent::Cancel,
        SubscriptionEvent::ScheduleCancel,
        SubscriptionEvent::ChangePlan,
    ];
}

impl fmt::Display for SubscriptionEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            SubscriptionEvent::TrialEnded => "trial_ended",
            SubscriptionEvent::PaymentSucceeded => "payment_succeeded",
            SubscriptionEvent::PaymentFailed => "payment_failed",
            SubscriptionEvent::RetriesExhausted => "retries_exhausted",
            SubscriptionEvent::IncompleteExpired => "incomplete_expired",
            SubscriptionEvent::Pause => "pause",
            SubscriptionEvent::Resume => "resume",
            SubscriptionEvent::Cancel => "cancel",
            SubscriptionEvent::ScheduleCancel => "schedule_cancel",
            SubscriptionEvent::ChangePlan => "change_plan",
        };
        f.write_str(name)
    }
}

use SubscriptionEvent as E;
use SubscriptionStatus as S;

/// Every legal transition: `(from, event, to)`. Anything else is an
/// [`BillingError::IllegalTransition`]. Terminal statuses have no rows.
pub const TRANSITIONS: &[(SubscriptionStatus, SubscriptionEvent, SubscriptionStatus)] = &[
    (S::Trialing, E::TrialEnded, S::Active),
    (S::Trialing, E::Pause, S::Paused),
    (S::Trialing, E::Cancel, S::Canceled),
    (S::Trialing, E::ScheduleCancel, S::Trialing),
    (S::Trialing, E::ChangePlan, S::Trialing),
    (S::Active, E::PaymentSucceeded, S::Active),
    (S::Active, E::PaymentFailed, S::PastDue),
    (S::Active, E::Pause, S::Paused),
    (S::Active, E::Cancel, S::Canceled),
    (S::Active, E::ScheduleCancel, S::Active),
    (S::Active, E::ChangePlan, S::Active),
    (S::PastDue, E::PaymentSucceeded, S::Active),
    (S::PastDue, E::PaymentFailed, S::PastDue),
    (S::PastDue, E::RetriesExhausted, S::Unpaid),
    (S::PastDue, E::Cancel, S::Canceled),
    (S::PastDue, E::ScheduleCancel, S::PastDue),
    (S::PastDue, E::ChangePlan, S::PastDue),
    (S::Unpaid, E::PaymentSucceeded, S::Active),
    (S::Unpaid, E::Cancel, S::Canceled),
    (S::Paused, E::Resume, S::Active),
    (S::Paused, E::Cancel, S::Canceled),
    (S::Incomplete, E::PaymentSucceeded, S::Active),
    (S::Incomplete, E::PaymentFailed, S::Incomplete),
    (S::Incomplete, E::IncompleteExpired, S::IncompleteExpired),
    (S::Incomplete, E::Cancel, S::Canceled),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_no_duplicate_rows_and_no_exit_from_terminal() {
        for (i, (from, on, _)) in TRANSITIONS.iter().enumerate() {
            assert!(!from.is_terminal());
            assert!(
                !TRANSITIONS[i + 1..]
                    .iter()
                    .any(|(f, o, _)| f == from && o == on)
            );
        }
    }
}
