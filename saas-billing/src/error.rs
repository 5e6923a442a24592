//! The crate's one error type.

use saas_core::ErrorKind;

use crate::currency::Currency;

/// Everything that can go wrong in `saas-billing`.
///
/// Variants are named by meaning; [`BillingError::kind`] maps each to the
/// workspace-wide [`ErrorKind`] so hosts can turn any of them into an HTTP
/// status or a retry decision without matching every variant.
///
/// ```
/// use saas_billing::{BillingError, Currency, Money};
/// use saas_core::ErrorKind;
/// use rust_decimal::dec;
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
}

impl BillingError {
    /// The workspace-wide kind of this error.
    ///
    /// Everything here is caused by the caller's input, so all variants map
    /// to [`ErrorKind::InvalidInput`] except [`BillingError::UnsupportedCurrency`]
    /// ([`ErrorKind::Unsupported`]). None is worth retrying unchanged.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BillingError::UnsupportedCurrency { .. } => ErrorKind::Unsupported,
            BillingError::CurrencyMismatch { .. }
            | BillingError::Overflow { .. }
            | BillingError::InvalidInput { .. }
            | BillingError::InvalidTierTable { .. }
            | BillingError::UnknownCurrency { .. }
            | BillingError::DateOutOfRange { .. } => ErrorKind::InvalidInput,
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
