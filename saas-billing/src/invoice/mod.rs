//! Invoices: lines that explain themselves, one invoice per subscription
//! and period, draft until finalized and immutable after.

mod credit;
mod number;
mod payment;
mod rating;

pub use credit::{CreditAmount, CreditNote, CreditNoteLine, CreditNoteRequest, CreditReason};
pub use number::{InvoiceIssuer, InvoiceNumber};
pub use payment::{InvoicePayment, PaymentChange, PaymentStatus};
pub(crate) use rating::group_label;
pub use rating::{InvoiceDraft, LicensedBasis, RatingInput, UsageCorrection, rate};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use saas_core::TenantId;
use serde::{Deserialize, Serialize};

use crate::charge::ChargeComponent;
use crate::credit::CreditConsumption;
use crate::currency::Currency;
use crate::discount::LineDiscount;
use crate::error::BillingError;
use crate::ids::{InvoiceId, IssuerId, MeterKey, PriceKey, SubscriptionId};
use crate::money::Money;
use crate::plan::PlanRef;
use crate::tax::{LineTax, TaxBehavior, TaxSummary};

/// What an invoice line bills.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LineKind {
    /// A recurring or per-seat price for the period.
    Licensed,
    /// Credit for the unused rest of the period on a plan left early.
    ProrationCredit,
    /// Charge for the rest of the period on a plan joined mid-period.
    ProrationDebit,
    /// Usage of a meter in this invoice's period.
    Usage {
        /// The meter.
        meter: MeterKey,
    },
    /// Usage of an earlier, already finalized period that arrived late:
    /// the difference its rating makes to that period.
    UsageCorrection {
        /// The meter.
        meter: MeterKey,
        /// The index of the period the usage belongs to.
        period: i64,
    },
    /// Usage of a meter while a metered add-on was attached: the line's
    /// service span is the time billed, and the record finalization and
    /// late usage re-rate it from.
    AddOnUsage {
        /// The meter.
        meter: MeterKey,
        /// The plan version of the add-on's price (the line's `price`).
        plan: PlanRef,
    },
    /// Late usage of an earlier, already finalized period in the span a
    /// metered add-on billed there (the line's service span): the
    /// difference its rating makes to that period.
    AddOnUsageCorrection {
        /// The meter.
        meter: MeterKey,
        /// The plan version of the add-on's price (the line's `price`).
        plan: PlanRef,
        /// The index of the period the usage belongs to.
        period: i64,
    },
}

impl LineKind {
    /// Whether the line is rated from usage (re-rated at finalization).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            LineKind::Usage { .. }
                | LineKind::UsageCorrection { .. }
                | LineKind::AddOnUsage { .. }
                | LineKind::AddOnUsageCorrection { .. }
        )
    }
}

/// One line of an invoice, with everything needed to explain its amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    /// What it bills.
    pub kind: LineKind,
    /// Human-readable text.
    pub description: String,
    /// The plan price it comes from.
    pub price: Option<PriceKey>,
    /// Quantity rated (seats, units; for a correction, the added quantity).
    pub quantity: Decimal,
    /// For proration: the exact amount of a whole period.
    pub full_period_amount: Option<Money>,
    /// The charge's steps: tiers with their unit prices, packages, flat fees.
    pub components: Vec<ChargeComponent>,
    /// For proration: remaining seconds / seconds in the period.
    pub proration: Option<Decimal>,
    /// Start of the time this line pays for.
    pub service_start: DateTime<Utc>,
    /// End (exclusive) of the time this line pays for.
    pub service_end: DateTime<Utc>,
    /// The line's amount, rounded to the minor unit (negative for
    /// credits): net of tax for exclusive rates, tax included for
    /// inclusive ones.
    pub amount: Money,
    /// Its taxes, one per rate, each rounded once (see
    /// [`apply_taxes`](crate::apply_taxes)); empty when untaxed.
    #[serde(default)]
    pub taxes: Vec<LineTax>,
    /// The coupons' discounts, already taken off `amount` (see
    /// [`apply_discounts`](crate::apply_discounts)); empty when none.
    #[serde(default)]
    pub discounts: Vec<LineDiscount>,
}

impl InvoiceLine {
    /// The line's amount before its discounts.
    ///
    /// # Errors
    /// `CurrencyMismatch` or `Overflow` (corrupt data).
    pub fn amount_before_discounts(&self) -> Result<Money, BillingError> {
        self.discounts
            .iter()
            .try_fold(self.amount, |sum, d| sum.checked_add(d.amount))
    }

    /// The line's amount without tax: its amount less its inclusive
    /// taxes.
    ///
    /// # Errors
    /// `CurrencyMismatch` or `Overflow` (corrupt data).
    pub fn net_amount(&self) -> Result<Money, BillingError> {
        self.taxes
            .iter()
            .filter(|t| t.rate.behavior() == TaxBehavior::Inclusive)
            .try_fold(self.amount, |net, t| net.checked_sub(t.amount))
    }

    /// What the customer pays for the line: its amount plus its exclusive
    /// taxes.
    ///
    /// # Errors
    /// `CurrencyMismatch` or `Overflow` (corrupt data).
    pub fn amount_with_tax(&self) -> Result<Money, BillingError> {
        self.taxes
            .iter()
            .filter(|t| t.rate.behavior() == TaxBehavior::Exclusive)
            .try_fold(self.amount, |sum, t| sum.checked_add(t.amount))
    }
}

/// Draft or finalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InvoiceStatus {
    /// Still changing: usage arriving within the grace period re-rates it.
    Draft,
    /// Issued; immutable.
    Finalized,
}

/// The invoice of one subscription for one billing period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// Its id.
    pub id: InvoiceId,
    /// The tenant billed.
    pub tenant_id: TenantId,
    /// The subscription billed.
    pub subscription_id: SubscriptionId,
    /// The billing period's index; unique per subscription.
    pub period_index: i64,
    /// The period's start.
    pub period_start: DateTime<Utc>,
    /// The period's end (exclusive), or the subscription's end if earlier.
    pub period_end: DateTime<Utc>,
    /// The plan version usage is rated on.
    pub plan: PlanRef,
    /// The currency of every line.
    pub currency: Currency,
    /// Draft or finalized.
    pub status: InvoiceStatus,
    /// The lines.
    pub lines: Vec<InvoiceLine>,
    /// What the invoice charges: the sum of the (rounded) line amounts
    /// plus their exclusive taxes.
    pub total: Money,
    /// When the draft was created.
    pub created_at: DateTime<Utc>,
    /// The earliest time it may be finalized (period end plus the grace
    /// for late usage).
    pub finalize_after: DateTime<Utc>,
    /// When it was finalized.
    pub finalized_at: Option<DateTime<Utc>>,
    /// Its number, assigned at finalization (gapless per issuer).
    /// `None` for a draft (and for an invoice finalized before numbering
    /// existed).
    #[serde(default)]
    pub number: Option<InvoiceNumber>,
    /// What is due and paid, from finalization on; `None` for a draft.
    /// The only part of a finalized invoice that changes.
    #[serde(default)]
    pub payment: Option<InvoicePayment>,
}

/// What finalizing a draft takes: its final lines, the instant, and the
/// issuer whose next number it gets (see
/// [`InvoiceStore::finalize`](crate::InvoiceStore::finalize)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finalization {
    /// The final lines (the total is recomputed from them).
    pub lines: Vec<InvoiceLine>,
    /// When it is finalized.
    pub at: DateTime<Utc>,
    /// The issuer whose sequence numbers it.
    pub issuer: IssuerId,
    /// Whether the tenant's prepaid credits cover what it leaves due
    /// (default `true`).
    pub consume_credits: bool,
    /// The instant at which grants must be available to be consumed
    /// (default `at`). The engine passes the invoice's `finalize_after`,
    /// so a lagging billing cycle consumes the same grants as a punctual
    /// one (a grant expiring in between is still drawn).
    pub credits_at: DateTime<Utc>,
}

impl Finalization {
    /// Finalize with `lines` at `at`, numbered in `issuer`'s sequence.
    pub fn new(lines: Vec<InvoiceLine>, at: DateTime<Utc>, issuer: IssuerId) -> Finalization {
        Finalization {
            lines,
            at,
            issuer,
            consume_credits: true,
            credits_at: at,
        }
    }

    /// Sets the instant at which grants must be available.
    pub fn with_credits_at(mut self, at: DateTime<Utc>) -> Finalization {
        self.credits_at = at;
        self
    }

    /// The same, leaving prepaid credits untouched.
    pub fn without_credits(mut self) -> Finalization {
        self.consume_credits = false;
        self
    }
}

impl Invoice {
    /// Replaces the lines of a draft and recomputes the total.
    ///
    /// # Errors
    /// [`BillingError::InvoiceFinalized`] if finalized; `CurrencyMismatch`
    /// or `Overflow` from the total.
    pub fn set_lines(&mut self, lines: Vec<InvoiceLine>) -> Result<(), BillingError> {
        self.ensure_draft()?;
        self.total = total_of(self.currency, &lines)?;
        self.lines = lines;
        Ok(())
    }

    /// Marks the draft finalized at `at` with `number`, its payment state
    /// open for the total (paid at once when nothing is due). Stores call
    /// this with the next number of the issuer's sequence, taken in the
    /// same transaction.
    ///
    /// # Errors
    /// [`BillingError::InvoiceFinalized`] if already finalized.
    pub fn finalize(
        &mut self,
        at: DateTime<Utc>,
        number: InvoiceNumber,
    ) -> Result<(), BillingError> {
        self.ensure_draft()?;
        self.status = InvoiceStatus::Finalized;
        self.finalized_at = Some(at);
        self.number = Some(number);
        self.payment = Some(InvoicePayment::issued(self.total, at));
        Ok(())
    }

    /// The issuer whose credit-note sequence numbers this invoice's
    /// credit notes: its own issuer.
    ///
    /// # Errors
    /// `InvoiceNotFinalized` for a draft; `InvalidInput` for an invoice
    /// finalized before numbering existed (no issuer known).
    pub fn credit_note_issuer(&self) -> Result<IssuerId, BillingError> {
        if !self.is_finalized() {
            return Err(BillingError::InvoiceNotFinalized { invoice: self.id });
        }
        self.number
            .as_ref()
            .map(|n| n.issuer.clone())
            .ok_or_else(|| {
                BillingError::invalid(
                    "invoice",
                    format!(
                        "{} has no number (finalized before numbering); it takes no credit note",
                        self.id
                    ),
                )
            })
    }

    /// Records prepaid credits consumed at finalization (from
    /// [`credit::consume`](crate::credit::consume)): they reduce what
    /// remains due; the invoice is paid when nothing remains.
    ///
    /// # Errors
    /// `InvoiceNotFinalized` for a draft; `CurrencyMismatch`, `Overflow`.
    pub fn apply_credits(&mut self, consumed: &[CreditConsumption]) -> Result<(), BillingError> {
        if consumed.is_empty() {
            return Ok(());
        }
        let mut payment = self.payment_state()?;
        let total = Money::checked_sum(self.currency, consumed.iter().map(|c| c.amount))?;
        payment.credits_applied = Some(payment.prepaid().checked_add(total)?);
        if payment.status == PaymentStatus::Open && payment.amount_remaining()?.is_zero() {
            payment.status = PaymentStatus::Paid;
        }
        self.payment = Some(payment);
        Ok(())
    }

    /// Applies a payment change (see [`InvoicePayment::apply`]).
    ///
    /// # Errors
    /// [`BillingError::InvoiceNotFinalized`] for a draft; otherwise as
    /// [`InvoicePayment::apply`].
    pub fn apply_payment(
        &mut self,
        change: &PaymentChange,
        at: DateTime<Utc>,
    ) -> Result<(), BillingError> {
        let payment = self.payment_state()?;
        self.payment = Some(payment.apply_to(Some(self.id), change, at)?);
        Ok(())
    }

    /// The payment state: the stored one, or for an invoice finalized
    /// before payment state existed, open for its total.
    ///
    /// # Errors
    /// [`BillingError::InvoiceNotFinalized`] for a draft.
    pub fn payment_state(&self) -> Result<InvoicePayment, BillingError> {
        match (&self.payment, self.finalized_at) {
            (Some(payment), _) => Ok(payment.clone()),
            (None, Some(at)) if self.is_finalized() => Ok(InvoicePayment::issued(self.total, at)),
            _ => Err(BillingError::InvoiceNotFinalized { invoice: self.id }),
        }
    }

    /// The sum of the lines' net amounts (before tax).
    ///
    /// # Errors
    /// `CurrencyMismatch` or `Overflow` (corrupt data).
    pub fn subtotal(&self) -> Result<Money, BillingError> {
        let nets = self
            .lines
            .iter()
            .map(InvoiceLine::net_amount)
            .collect::<Result<Vec<_>, _>>()?;
        Money::checked_sum(self.currency, nets)
    }

    /// The sum of every line's taxes (inclusive and exclusive):
    /// `total = subtotal + tax_total`.
    ///
    /// # Errors
    /// `CurrencyMismatch` or `Overflow` (corrupt data).
    pub fn tax_total(&self) -> Result<Money, BillingError> {
        Money::checked_sum(
            self.currency,
            self.lines
                .iter()
                .flat_map(|l| l.taxes.iter().map(|t| t.amount)),
        )
    }

    /// The taxes per rate, in order of first appearance.
    ///
    /// # Errors
    /// `CurrencyMismatch` or `Overflow` (corrupt data).
    pub fn tax_summary(&self) -> Result<Vec<TaxSummary>, BillingError> {
        crate::tax::summarize(self.currency, &self.lines)
    }

    /// Whether it is finalized.
    pub fn is_finalized(&self) -> bool {
        self.status == InvoiceStatus::Finalized
    }

    fn ensure_draft(&self) -> Result<(), BillingError> {
        if self.is_finalized() {
            Err(BillingError::InvoiceFinalized { invoice: self.id })
        } else {
            Ok(())
        }
    }
}

/// The sum of rounded line amounts plus their exclusive taxes.
pub(crate) fn total_of(currency: Currency, lines: &[InvoiceLine]) -> Result<Money, BillingError> {
    let with_tax = lines
        .iter()
        .map(InvoiceLine::amount_with_tax)
        .collect::<Result<Vec<_>, _>>()?;
    Money::checked_sum(currency, with_tax)
}
