//! Credit notes: corrections, refunds and goodwill credits against a
//! finalized invoice, which itself never changes.
//!
//! What remains creditable: on a line, what it charged (its amount with
//! exclusive tax, when positive) less what earlier credit notes credited
//! on it; on the invoice, its total (when positive) less every earlier
//! credit note. A credit note first reduces what remains to be paid
//! (`applied_to_balance`; the invoice becomes paid when nothing remains);
//! any part beyond that — the invoice was already paid — is money the
//! host owes back (`refund`).

use chrono::{DateTime, Utc};
use saas_core::TenantId;
use serde::{Deserialize, Serialize};

use super::{Invoice, InvoiceNumber, InvoicePayment, PaymentStatus};
use crate::error::BillingError;
use crate::ids::{CreditNoteId, InvoiceId, SubscriptionId};
use crate::money::Money;

/// Why a credit note was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CreditReason {
    /// The invoice billed something wrong.
    Correction,
    /// Money is given back for something billed right.
    Refund,
    /// A gesture of goodwill.
    Goodwill,
    /// The invoice billed something twice.
    Duplicate,
}

/// One amount to credit: on a line of the invoice (its index in
/// `Invoice::lines`) or on the invoice as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditAmount {
    /// The line credited, or `None` for the invoice as a whole.
    pub line: Option<usize>,
    /// The amount (positive, in the invoice's currency), or `None` for
    /// all that remains creditable there.
    pub amount: Option<Money>,
}

/// What to credit, and why.
///
/// ```
/// use saas_billing::{CreditNoteRequest, CreditReason, Currency, Money, dec};
///
/// // 5.00 back on the invoice's second line.
/// let request = CreditNoteRequest::line(CreditReason::Goodwill, 1, Money::new(dec!(5.00), Currency::EUR));
/// // Everything that remains creditable.
/// let all = CreditNoteRequest::whole(CreditReason::Duplicate);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreditNoteRequest {
    /// Why.
    pub reason: CreditReason,
    /// A note printed on the credit note.
    pub memo: Option<String>,
    /// The amounts.
    pub amounts: Vec<CreditAmount>,
}

impl CreditNoteRequest {
    /// `amount` on line `line`.
    pub fn line(reason: CreditReason, line: usize, amount: Money) -> CreditNoteRequest {
        CreditNoteRequest::of(reason, Some(line), Some(amount))
    }

    /// All that remains creditable on line `line`.
    pub fn whole_line(reason: CreditReason, line: usize) -> CreditNoteRequest {
        CreditNoteRequest::of(reason, Some(line), None)
    }

    /// `amount` on the invoice as a whole.
    pub fn amount(reason: CreditReason, amount: Money) -> CreditNoteRequest {
        CreditNoteRequest::of(reason, None, Some(amount))
    }

    /// Everything that remains creditable on the invoice.
    pub fn whole(reason: CreditReason) -> CreditNoteRequest {
        CreditNoteRequest::of(reason, None, None)
    }

    /// Adds another amount (on line `line`, or the whole invoice).
    pub fn and(mut self, line: Option<usize>, amount: Option<Money>) -> CreditNoteRequest {
        self.amounts.push(CreditAmount { line, amount });
        self
    }

    /// Sets the memo.
    pub fn with_memo(mut self, memo: impl Into<String>) -> CreditNoteRequest {
        self.memo = Some(memo.into());
        self
    }

    fn of(reason: CreditReason, line: Option<usize>, amount: Option<Money>) -> CreditNoteRequest {
        CreditNoteRequest {
            reason,
            memo: None,
            amounts: vec![CreditAmount { line, amount }],
        }
    }
}

/// One line of a credit note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNoteLine {
    /// The invoice line credited, or `None` for the invoice as a whole.
    pub invoice_line: Option<usize>,
    /// What it credits (the invoice line's description, or "Credit").
    pub description: String,
    /// The amount credited (positive).
    pub amount: Money,
}

/// A credit note: numbered in its issuer's credit-note sequence
/// (separate from the invoices', gapless too), immutable once issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNote {
    /// Its id.
    pub id: CreditNoteId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The invoice credited.
    pub invoice_id: InvoiceId,
    /// The invoice's subscription.
    pub subscription_id: SubscriptionId,
    /// Its number (the invoice's issuer; its own sequence).
    pub number: InvoiceNumber,
    /// Why.
    pub reason: CreditReason,
    /// Its memo.
    pub memo: Option<String>,
    /// The amounts.
    pub lines: Vec<CreditNoteLine>,
    /// Their sum.
    pub total: Money,
    /// The part that reduced what remained to be paid on the invoice.
    pub applied_to_balance: Money,
    /// The part beyond that, owed back to the customer (the invoice had
    /// been paid): refund it through your payment provider.
    pub refund: Money,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
}

impl CreditNote {
    /// Issues a credit note against `invoice`, given the credit notes
    /// issued against it before, with this `number`; returns it and the
    /// invoice's payment state after it. Pure: stores call it inside the
    /// transaction that holds the invoice.
    ///
    /// # Errors
    /// `InvoiceNotFinalized` for a draft; `IllegalPaymentTransition` for a
    /// void invoice; `InvalidInput` for an empty request, an unknown
    /// line, an amount that is not positive or not rounded, or more than
    /// remains creditable (the message says how much does);
    /// `CurrencyMismatch`.
    pub fn issue(
        invoice: &Invoice,
        prior: &[CreditNote],
        request: &CreditNoteRequest,
        number: InvoiceNumber,
        at: DateTime<Utc>,
    ) -> Result<(CreditNote, InvoicePayment), BillingError> {
        let payment = invoice.payment_state()?;
        if payment.status == PaymentStatus::Void {
            return Err(BillingError::IllegalPaymentTransition {
                invoice: Some(invoice.id),
                from: PaymentStatus::Void,
                change: "credit_note",
            });
        }
        if request.amounts.is_empty() {
            return Err(BillingError::invalid("credit", "name at least one amount"));
        }
        let credited_before = Money::checked_sum(invoice.currency, prior.iter().map(|n| n.total))?;
        let mut left_on_invoice = positive(invoice.total).checked_sub(credited_before)?;
        let mut lines: Vec<CreditNoteLine> = Vec::new();
        for wanted in &request.amounts {
            let (cap, description) = match wanted.line {
                Some(index) => {
                    let line = invoice.lines.get(index).ok_or_else(|| {
                        BillingError::invalid(
                            "credit",
                            format!("invoice {} has no line {index}", invoice.id),
                        )
                    })?;
                    let on_line = prior
                        .iter()
                        .flat_map(|n| &n.lines)
                        .chain(&lines)
                        .filter(|l| l.invoice_line == Some(index))
                        .map(|l| l.amount);
                    let credited = Money::checked_sum(invoice.currency, on_line)?;
                    let left = positive(line.amount_with_tax()?).checked_sub(credited)?;
                    (min(left, left_on_invoice), line.description.clone())
                }
                None => (left_on_invoice, "Credit".to_owned()),
            };
            let amount = match wanted.amount {
                None => cap,
                Some(amount) => {
                    if amount.currency() != invoice.currency {
                        return Err(BillingError::CurrencyMismatch {
                            expected: invoice.currency,
                            found: amount.currency(),
                        });
                    }
                    if amount.is_negative() || amount.is_zero() || !amount.is_rounded() {
                        return Err(BillingError::invalid(
                            "credit",
                            format!("{amount} must be positive and rounded to the minor unit"),
                        ));
                    }
                    if amount.amount() > cap.amount() {
                        return Err(BillingError::invalid(
                            "credit",
                            format!("{amount} is more than the {cap} that remains creditable"),
                        ));
                    }
                    amount
                }
            };
            if amount.is_zero() {
                return Err(BillingError::invalid(
                    "credit",
                    format!("nothing remains creditable on invoice {}", invoice.id),
                ));
            }
            left_on_invoice = left_on_invoice.checked_sub(amount)?;
            lines.push(CreditNoteLine {
                invoice_line: wanted.line,
                description,
                amount,
            });
        }
        let total = Money::checked_sum(invoice.currency, lines.iter().map(|l| l.amount))?;
        let outstanding = payment.amount_remaining()?;
        let applied_to_balance = min(total, outstanding);
        let refund = total.checked_sub(applied_to_balance)?;
        let mut after = payment.clone();
        after.amount_credited = Some(payment.credited().checked_add(applied_to_balance)?);
        after.changed_at = at;
        if matches!(
            after.status,
            PaymentStatus::Open | PaymentStatus::Uncollectible
        ) && after.amount_remaining()?.is_zero()
        {
            after.status = PaymentStatus::Paid;
        }
        let note = CreditNote {
            id: CreditNoteId::new(),
            tenant_id: invoice.tenant_id,
            invoice_id: invoice.id,
            subscription_id: invoice.subscription_id,
            number,
            reason: request.reason,
            memo: request.memo.clone(),
            lines,
            total,
            applied_to_balance,
            refund,
            issued_at: at,
        };
        Ok((note, after))
    }
}

fn positive(amount: Money) -> Money {
    if amount.is_negative() {
        Money::zero(amount.currency())
    } else {
        amount
    }
}

fn min(a: Money, b: Money) -> Money {
    if a.amount() <= b.amount() { a } else { b }
}
