//! Payment state of a finalized invoice: what is due, what was paid, and
//! the status Stripe calls open / paid / void / uncollectible.
//!
//! The lines and totals of a finalized invoice never change; its payment
//! state is the one part that does, through [`InvoicePayment::apply`] — a
//! pure transition the stores run inside their own critical section.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::BillingError;
use crate::ids::InvoiceId;
use crate::money::Money;

/// Where a finalized invoice stands with its payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PaymentStatus {
    /// Awaiting payment (possibly partly paid, possibly after failed
    /// attempts).
    Open,
    /// Nothing remains due. Terminal.
    Paid,
    /// Cancelled by the issuer: never to be collected; its number stays
    /// taken. Terminal.
    Void,
    /// Given up on (dunning exhausted), still payable later.
    Uncollectible,
}

impl PaymentStatus {
    /// The snake-case name used in storage and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Open => "open",
            PaymentStatus::Paid => "paid",
            PaymentStatus::Void => "void",
            PaymentStatus::Uncollectible => "uncollectible",
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change to an invoice's payment state (see [`InvoicePayment::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PaymentChange {
    /// Money received: more than zero, at most what remains. The invoice
    /// is paid when nothing remains. Allowed when open or uncollectible.
    Payment {
        /// The amount received, in the invoice's currency.
        amount: Money,
    },
    /// A collection attempt failed. Allowed when open; the invoice stays
    /// open and counts the failure.
    PaymentFailed,
    /// Cancel the invoice. Allowed when open or uncollectible and nothing
    /// was paid yet (money received is returned with a credit note, not
    /// by voiding).
    Void,
    /// Stop collecting. Allowed when open.
    MarkUncollectible,
}

impl PaymentChange {
    /// The change's name in messages.
    pub fn name(&self) -> &'static str {
        match self {
            PaymentChange::Payment { .. } => "payment",
            PaymentChange::PaymentFailed => "payment_failed",
            PaymentChange::Void => "void",
            PaymentChange::MarkUncollectible => "mark_uncollectible",
        }
    }
}

/// The payment state of a finalized invoice.
///
/// ```
/// use saas_billing::{Currency, InvoicePayment, Money, PaymentChange, PaymentStatus, TimeZone, Utc, dec};
///
/// let usd = |a| Money::new(a, Currency::USD);
/// let at = Utc.with_ymd_and_hms(2025, 2, 1, 0, 0, 0).unwrap();
/// let open = InvoicePayment::issued(usd(dec!(30.00)), at);
/// assert_eq!(open.status, PaymentStatus::Open);
/// let part = open.apply(&PaymentChange::Payment { amount: usd(dec!(10.00)) }, at).unwrap();
/// assert_eq!(part.amount_remaining().unwrap(), usd(dec!(20.00)));
/// let paid = part.apply(&PaymentChange::Payment { amount: usd(dec!(20.00)) }, at).unwrap();
/// assert_eq!(paid.status, PaymentStatus::Paid);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoicePayment {
    /// Open, paid, void or uncollectible.
    pub status: PaymentStatus,
    /// What the customer owes for this invoice: its total, never below
    /// zero (an invoice whose credits exceed its charges is due nothing).
    pub amount_due: Money,
    /// What was received so far.
    pub amount_paid: Money,
    /// What credit notes took off what was due (`None`: nothing yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_credited: Option<Money>,
    /// What prepaid credits covered at finalization (`None`: nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits_applied: Option<Money>,
    /// Failed collection attempts so far.
    pub failed_attempts: u32,
    /// When the state last changed (the finalization, at first).
    pub changed_at: DateTime<Utc>,
}

impl InvoicePayment {
    /// The state of an invoice issued at `at` with this `total`: open for
    /// the total, or paid at once when nothing is due.
    pub fn issued(total: Money, at: DateTime<Utc>) -> InvoicePayment {
        let zero = Money::zero(total.currency());
        let amount_due = if total.is_negative() { zero } else { total };
        InvoicePayment {
            status: if amount_due.is_zero() {
                PaymentStatus::Paid
            } else {
                PaymentStatus::Open
            },
            amount_due,
            amount_paid: zero,
            amount_credited: None,
            credits_applied: None,
            failed_attempts: 0,
            changed_at: at,
        }
    }

    /// What is still to be paid: due minus paid, credited and covered by
    /// prepaid credits, never
    /// below zero (zero once void).
    ///
    /// # Errors
    /// `CurrencyMismatch` if the stored amounts disagree (corrupt data).
    pub fn amount_remaining(&self) -> Result<Money, BillingError> {
        let zero = Money::zero(self.amount_due.currency());
        if self.status == PaymentStatus::Void {
            return Ok(zero);
        }
        let left = self
            .amount_due
            .checked_sub(self.amount_paid)?
            .checked_sub(self.credited())?
            .checked_sub(self.prepaid())?;
        Ok(if left.is_negative() { zero } else { left })
    }

    /// What prepaid credits covered (zero when none).
    pub fn prepaid(&self) -> Money {
        self.credits_applied
            .unwrap_or_else(|| Money::zero(self.amount_due.currency()))
    }

    /// What credit notes took off what was due (zero when none).
    pub fn credited(&self) -> Money {
        self.amount_credited
            .unwrap_or_else(|| Money::zero(self.amount_due.currency()))
    }

    /// Whether the invoice is in arrears: uncollectible, or open after a
    /// failed attempt. A subscription with such an invoice is `past_due`
    /// or `unpaid`.
    pub fn is_delinquent(&self) -> bool {
        match self.status {
            PaymentStatus::Uncollectible => true,
            PaymentStatus::Open => self.failed_attempts > 0,
            PaymentStatus::Paid | PaymentStatus::Void => false,
        }
    }

    /// The state after `change` at `at`, for invoice `invoice` (named in
    /// errors).
    ///
    /// # Errors
    /// - [`BillingError::IllegalPaymentTransition`] (kind `Conflict`) when
    ///   the status does not allow the change (see [`PaymentChange`]).
    /// - `CurrencyMismatch` for a payment in another currency;
    ///   `InvalidInput` for a payment of zero or less, or of more than
    ///   remains.
    pub fn apply(
        &self,
        change: &PaymentChange,
        at: DateTime<Utc>,
    ) -> Result<InvoicePayment, BillingError> {
        self.apply_to(None, change, at)
    }

    pub(crate) fn apply_to(
        &self,
        invoice: Option<InvoiceId>,
        change: &PaymentChange,
        at: DateTime<Utc>,
    ) -> Result<InvoicePayment, BillingError> {
        use PaymentStatus as S;
        let illegal = || BillingError::IllegalPaymentTransition {
            invoice,
            from: self.status,
            change: change.name(),
        };
        let mut next = self.clone();
        next.changed_at = at;
        match (change, self.status) {
            (PaymentChange::Payment { amount }, S::Open | S::Uncollectible) => {
                let remaining = self.amount_remaining()?;
                if amount.currency() != remaining.currency() {
                    return Err(BillingError::CurrencyMismatch {
                        expected: remaining.currency(),
                        found: amount.currency(),
                    });
                }
                if amount.is_negative() || amount.is_zero() {
                    return Err(BillingError::invalid("payment", "must be more than zero"));
                }
                if amount.amount() > remaining.amount() {
                    return Err(BillingError::invalid(
                        "payment",
                        format!("{amount} is more than the {remaining} that remains due"),
                    ));
                }
                next.amount_paid = self.amount_paid.checked_add(*amount)?;
                if next.amount_remaining()?.is_zero() {
                    next.status = S::Paid;
                }
            }
            (PaymentChange::PaymentFailed, S::Open) => {
                next.failed_attempts = self.failed_attempts.saturating_add(1);
            }
            (PaymentChange::Void, S::Open | S::Uncollectible) if self.amount_paid.is_zero() => {
                next.status = S::Void;
            }
            (PaymentChange::MarkUncollectible, S::Open) => next.status = S::Uncollectible,
            _ => return Err(illegal()),
        }
        Ok(next)
    }
}
