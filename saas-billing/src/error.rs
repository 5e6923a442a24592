//! The crate's one error type.

use saas_core::ErrorKind;

use crate::currency::Currency;
use crate::ids::InvoiceId;
use crate::invoice::PaymentStatus;
use crate::subscription::{SubscriptionEvent, SubscriptionStatus};

/// Everything that can go wrong in `saas-billing`.
///
/// Variants are named by meaning; [`BillingError::kind`] maps each to the
/// workspace-wide [`ErrorKind`] so hosts can turn any of them into an HTTP
/// status or a retry decision without matching every variant.
///
/// ```
/// use saas_billing::{BillingError, Currency, Money};
/// use saas_core::ErrorKind;
/// use saas_billing::dec;
///
/// let err = Money::new(dec!(1), Currency::USD)
///     .checked_add(Money::new(dec!(1), Currency::EUR))
///     .unwrap_err();
/// assert!(matches!(err, BillingError::CurrencyMismatch { .. }));
/// assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BillingError {
    /// Two amounts in different currencies were combined.
    #[error("currency mismatch: {expected} and {found} cannot be combined")]
    CurrencyMismatch {
        /// The currency the operation works in.
        expected: Currency,
        /// The other currency that was given.
        found: Currency,
    },

    /// A result does not fit in a [`rust_decimal::Decimal`] (about ±7.9 × 10²⁸)
    /// or in the integer used for minor units.
    #[error("arithmetic overflow while computing {operation}")]
    Overflow {
        /// What was being computed.
        operation: &'static str,
    },

    /// An argument breaks a documented rule (a negative quantity, an
    /// unrounded total to allocate, a minimum above the maximum…).
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The argument or field at fault.
        field: &'static str,
        /// Which rule it breaks.
        reason: String,
    },

    /// A tier table broke a rule: bounds must ascend, only the last tier is
    /// unbounded and it must be present, and no price may be negative.
    #[error("invalid tier table at tier {tier}: {reason}")]
    InvalidTierTable {
        /// Zero-based index of the offending tier (the tier count when a
        /// tier is missing).
        tier: usize,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The code is not an ISO 4217 currency code.
    #[error("unknown currency code {code:?}")]
    UnknownCurrency {
        /// The code as given.
        code: String,
    },

    /// The ISO 4217 code exists but has no minor unit (gold `XAU`, special
    /// drawing rights `XDR`, `XXX`…), so it cannot be billed in.
    #[error("currency {code} has no minor unit and cannot be billed in")]
    UnsupportedCurrency {
        /// The ISO 4217 code.
        code: String,
    },

    /// A date or instant falls outside the range chrono can represent.
    #[error("date out of range while computing {what}")]
    DateOutOfRange {
        /// What was being computed.
        what: &'static str,
    },

    /// A catalog entry (product, plan version, price, entitlement) breaks
    /// a rule; found by a builder's `build()`.
    #[error("invalid catalog entry {item}: {reason}")]
    InvalidCatalog {
        /// The entry at fault (`"plan pro v2"`, `"price seats"`…).
        item: String,
        /// Which rule it breaks.
        reason: String,
    },

    /// The subscription's status does not allow this event (see
    /// [`SubscriptionStatus::apply`] for the table).
    #[error("illegal subscription transition: {event} in status {from}")]
    IllegalTransition {
        /// The status the subscription was in (and stays in).
        from: SubscriptionStatus,
        /// The refused event.
        event: SubscriptionEvent,
    },

    /// An idempotency key was reused with a different payload. The first
    /// payload stays recorded; nothing of the second was applied.
    #[error("idempotency key {key:?} was already used with a different payload")]
    IdempotencyConflict {
        /// The reused key.
        key: String,
    },

    /// A finalized invoice cannot change.
    #[error("invoice {invoice} is finalized and cannot be changed")]
    InvoiceFinalized {
        /// The invoice.
        invoice: InvoiceId,
    },

    /// The invoice is still a draft; payments and credit notes apply to
    /// finalized invoices only. Finalize it first (the billing cycle does
    /// once its grace period is over).
    #[error("invoice {invoice} is a draft; finalize it first")]
    InvoiceNotFinalized {
        /// The invoice.
        invoice: InvoiceId,
    },

    /// The invoice's payment status does not allow this change (a paid or
    /// void invoice is settled; a partly paid one cannot be voided —
    /// issue a credit note instead).
    #[error("{change} is not allowed on {} invoice{}", .from, .invoice.map(|i| format!(" {i}")).unwrap_or_default())]
    IllegalPaymentTransition {
        /// The invoice, when known.
        invoice: Option<InvoiceId>,
        /// Its payment status (unchanged).
        from: PaymentStatus,
        /// The refused change ([`PaymentChange::name`](crate::PaymentChange::name)).
        change: &'static str,
    },

    /// The coupon cannot be redeemed any more: its `redeem_by` has passed
    /// or it reached its `max_redemptions`. Nothing was recorded.
    #[error("coupon {coupon} cannot be redeemed: {reason}")]
    CouponNotRedeemable {
        /// The coupon.
        coupon: String,
        /// Why (`"expired"`, `"fully redeemed"`).
        reason: &'static str,
    },

    /// A record was changed by someone else since it was read (optimistic
    /// concurrency); read it again and retry.
    #[error("{what} {id} changed concurrently: expected version {expected}, found {found}")]
    StaleVersion {
        /// The kind of record.
        what: &'static str,
        /// Its id.
        id: String,
        /// The version the caller read.
        expected: u64,
        /// The version stored.
        found: u64,
    },

    /// The record asked for does not exist (for this tenant).
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of record (`"subscription"`, `"invoice"`, `"plan version"`…).
        what: &'static str,
        /// Its id.
        id: String,
    },

    /// The record to create exists already.
    #[error("{what} {id} already exists")]
    AlreadyExists {
        /// The kind of record.
        what: &'static str,
        /// Its id (for an invoice: subscription and period).
        id: String,
    },

    /// A storage backend failed. Stores keep their own error types and
    /// convert them to this variant, classified by kind (never by message).
    #[error("{backend} store failed: {message}")]
    Backend {
        /// The backend (`"postgres"`, `"sqlite"`…).
        backend: &'static str,
        /// Whether the same call may succeed later (connection lost,
        /// serialization failure).
        retryable: bool,
        /// What failed, without secrets.
        message: String,
    },
}

impl BillingError {
    /// The workspace-wide kind of this error.
    ///
    /// Input errors map to [`ErrorKind::InvalidInput`];
    /// [`BillingError::UnsupportedCurrency`] to [`ErrorKind::Unsupported`];
    /// idempotency conflicts, illegal transitions, finalized invoices and
    /// stale versions to [`ErrorKind::Conflict`]; `NotFound` and
    /// `AlreadyExists` to their namesakes; a retryable backend failure to
    /// [`ErrorKind::Unavailable`], another to [`ErrorKind::Internal`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            BillingError::UnsupportedCurrency { .. } => ErrorKind::Unsupported,
            BillingError::CurrencyMismatch { .. }
            | BillingError::Overflow { .. }
            | BillingError::InvalidInput { .. }
            | BillingError::InvalidTierTable { .. }
            | BillingError::UnknownCurrency { .. }
            | BillingError::DateOutOfRange { .. }
            | BillingError::InvalidCatalog { .. } => ErrorKind::InvalidInput,
            BillingError::IllegalTransition { .. }
            | BillingError::IdempotencyConflict { .. }
            | BillingError::InvoiceFinalized { .. }
            | BillingError::InvoiceNotFinalized { .. }
            | BillingError::IllegalPaymentTransition { .. }
            | BillingError::CouponNotRedeemable { .. }
            | BillingError::StaleVersion { .. } => ErrorKind::Conflict,
            BillingError::NotFound { .. } => ErrorKind::NotFound,
            BillingError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            BillingError::Backend {
                retryable: true, ..
            } => ErrorKind::Unavailable,
            BillingError::Backend { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        BillingError::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn overflow(operation: &'static str) -> Self {
        BillingError::Overflow { operation }
    }

    pub(crate) fn catalog(item: impl Into<String>, reason: impl Into<String>) -> Self {
        BillingError::InvalidCatalog {
            item: item.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn not_found(what: &'static str, id: impl ToString) -> Self {
        BillingError::NotFound {
            what,
            id: id.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(BillingError::overflow("x").kind(), ErrorKind::InvalidInput);
        assert_eq!(
            BillingError::UnsupportedCurrency { code: "XAU".into() }.kind(),
            ErrorKind::Unsupported
        );
        assert!(
            !BillingError::DateOutOfRange { what: "x" }
                .kind()
                .is_retryable()
        );
    }

    #[test]
    fn conflicts_and_lookups() {
        let conflict = BillingError::IdempotencyConflict { key: "k".into() };
        assert_eq!(conflict.kind(), ErrorKind::Conflict);
        let illegal = BillingError::IllegalTransition {
            from: SubscriptionStatus::Canceled,
            event: SubscriptionEvent::Resume,
        };
        assert_eq!(illegal.kind(), ErrorKind::Conflict);
        assert_eq!(
            BillingError::not_found("invoice", "x").kind(),
            ErrorKind::NotFound
        );
        let down = BillingError::Backend {
            backend: "postgres",
            retryable: true,
            message: "connection reset".into(),
        };
        assert!(down.kind().is_retryable());
    }

    #[test]
    fn messages_name_the_problem() {
        let err = BillingError::InvalidTierTable {
            tier: 2,
            reason: "bounds must ascend",
        };
        assert_eq!(
            err.to_string(),
            "invalid tier table at tier 2: bounds must ascend"
        );
    }
}
