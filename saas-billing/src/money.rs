//! An exact amount in one currency.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::currency::Currency;
use crate::error::BillingError;
use crate::rounding::RoundingMode;

/// The most parts [`Money::split`] accepts: 10,000.
///
/// A split is for sharing one charge between payers, cost centres, seats or
/// instalments, where ten thousand is already far beyond real use, and it
/// needs about 150 bytes of working memory per part (weights, remainders
/// and the result), so 10,000 parts stay near 1.5 MB. Without a limit,
/// `split(usize::MAX)` panicked on capacity overflow and `split(2^34)`
/// aborted the process when the allocation failed.
pub const MAX_SPLIT_PARTS: usize = 10_000;

/// An exact decimal amount in one [`Currency`].
///
/// A `Money` may hold more decimal places than its currency has — unit
/// prices such as 0.0042 USD and intermediate results must stay exact — and
/// becomes payable by [`Money::round`], once per line. Arithmetic is checked:
/// mixing currencies returns [`BillingError::CurrencyMismatch`] and a result
/// too large for a [`Decimal`] returns [`BillingError::Overflow`]; nothing
/// panics. Equality compares values, not scales (`1.0 USD == 1.00 USD`).
///
/// Serialized as `{"amount": "12.50", "currency": "EUR"}`, the amount as a
/// string so it never passes through a binary floating-point number.
///
/// ```
/// use saas_billing::{Currency, Money, RoundingMode};
/// use saas_billing::dec;
///
/// let price = Money::new(dec!(0.0042), Currency::USD);
/// let line = price.checked_mul(dec!(1234))?.round(RoundingMode::HalfUp);
/// assert_eq!(line.to_string(), "5.18 USD");
/// # Ok::<(), saas_billing::BillingError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    #[serde(with = "rust_decimal::serde::str")]
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// An amount in a currency, kept exactly as given.
    pub fn new(amount: Decimal, currency: Currency) -> Money {
        Money { amount, currency }
    }

    /// Zero in `currency`, written with the currency's minor digits like
    /// any rounded amount: `0.00 USD`, `0 JPY`, `0.000 KWD`. It is also what
    /// [`Money::checked_sum`] starts from, so an invoice with no lines
    /// totals `0.00 USD`, not `0 USD`.
    pub fn zero(currency: Currency) -> Money {
        Money::new(Decimal::new(0, currency.exponent()), currency)
    }

    /// An amount given in minor units: `from_minor(1999, USD)` is 19.99 USD,
    /// `from_minor(500, JPY)` is 500 JPY.
    ///
    /// # Errors
    /// [`BillingError::Overflow`] if the amount does not fit a [`Decimal`].
    pub fn from_minor(minor: i128, currency: Currency) -> Result<Money, BillingError> {
        Decimal::try_from_i128_with_scale(minor, currency.exponent())
            .map(|amount| Money::new(amount, currency))
            .map_err(|_| BillingError::overflow("an amount from minor units"))
    }

    /// The exact amount.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    /// Whether the amount is below zero (a credit).
    pub fn is_negative(&self) -> bool {
        self.amount.is_sign_negative() && !self.amount.is_zero()
    }

    /// Whether the amount has no digits beyond its currency's minor unit.
    pub fn is_rounded(&self) -> bool {
        self.amount.normalize().scale() <= self.currency.exponent()
    }

    /// Rounds to the currency's minor unit with `mode`, padding to exactly
    /// that many decimal places (`10` USD becomes `10.00` USD).
    pub fn round(self, mode: RoundingMode) -> Money {
        Money::new(
            mode.round(self.amount, self.currency.exponent()),
            self.currency,
        )
    }

    /// The amount as an integer count of minor units (cents, yen…), the
    /// form payment providers take.
    ///
    /// # Errors
    /// [`BillingError::InvalidInput`] if the amount is not rounded to the
    /// minor unit — round it first, with the mode you mean.
    pub fn to_minor(&self) -> Result<i128, BillingError> {
        if !self.is_rounded() {
            return Err(BillingError::invalid(
                "amount",
                format!(
                    "{self} has more decimal places than {} allows; round it first",
                    self.currency
                ),
            ));
        }
        let normal = self.amount.normalize();
        // scale <= exponent (checked above) and a mantissa below 2^96 times
        // at most 10^4 (the largest ISO exponent) fits an i128.
        10_i128
            .checked_pow(self.currency.exponent() - normal.scale())
            .and_then(|factor| normal.mantissa().checked_mul(factor))
            .ok_or_else(|| BillingError::overflow("an amount in minor units"))
    }

    /// Adds two amounts of one currency.
    ///
    /// # Errors
    /// [`BillingError::CurrencyMismatch`] or [`BillingError::Overflow`].
    pub fn checked_add(self, other: Money) -> Result<Money, BillingError> {
        self.same_currency(other)?;
        self.amount
            .checked_add(other.amount)
            .map(|amount| Money::new(amount, self.currency))
            .ok_or_else(|| BillingError::overflow("a sum of amounts"))
    }

    /// Subtracts `other` from `self`; the result may be negative.
    ///
    /// # Errors
    /// [`BillingError::CurrencyMismatch`] or [`BillingError::Overflow`].
    pub fn checked_sub(self, other: Money) -> Result<Money, BillingError> {
        self.same_currency(other)?;
        self.amount
            .checked_sub(other.amount)
            .map(|amount| Money::new(amount, self.currency))
            .ok_or_else(|| BillingError::overflow("a difference of amounts"))
    }

    /// Multiplies by a plain number (a quantity, a rate).
    ///
    /// Exact whenever the product fits in a [`Decimal`]'s 96-bit mantissa;
    /// a product with more than 28 significant digits has its last
    /// fractional digits rounded by `rust_decimal`, far below any minor unit.
    ///
    /// # Errors
    /// [`BillingError::Overflow`] if the product is too large.
    pub fn checked_mul(self, factor: Decimal) -> Result<Money, BillingError> {
        self.amount
            .checked_mul(factor)
            .map(|amount| Money::new(amount, self.currency))
            .ok_or_else(|| BillingError::overflow("a product of an amount"))
    }

    /// The amount with its sign flipped (never overflows).
    pub fn negate(self) -> Money {
        Money::new(-self.amount, self.currency)
    }

    /// The sum of `amounts`, all of which must be in `currency`; zero when
    /// empty.
    ///
    /// # Errors
    /// [`BillingError::CurrencyMismatch`] or [`BillingError::Overflow`].
    pub fn checked_sum(
        currency: Currency,
        amounts: impl IntoIterator<Item = Money>,
    ) -> Result<Money, BillingError> {
        amounts
            .into_iter()
            .try_fold(Money::zero(currency), Money::checked_add)
    }

    /// Splits the amount into `parts` nearly equal amounts that sum exactly
    /// to it, by largest remainder: 100.00 USD in three is 33.34 + 33.33 +
    /// 33.33, the extra minor units going to the earliest parts.
    ///
    /// See [`Money::allocate`] for the rules. At most [`MAX_SPLIT_PARTS`]
    /// parts.
    ///
    /// # Errors
    /// As [`Money::allocate`]; also `InvalidInput` (field `parts`) when
    /// `parts` is zero or above [`MAX_SPLIT_PARTS`] — nothing is allocated
    /// then, so a huge count is an error, not a panic or an abort.
    pub fn split(self, parts: usize) -> Result<Vec<Money>, BillingError> {
        if parts == 0 {
            return Err(BillingError::invalid(
                "parts",
                "cannot split into zero parts",
            ));
        }
        if parts > MAX_SPLIT_PARTS {
            return Err(BillingError::invalid(
                "parts",
                format!(
                    "cannot split into {parts} parts: at most {MAX_SPLIT_PARTS}; \
                     split into fewer parts, or split a part again"
                ),
            ));
        }
        self.allocate(&vec![Decimal::ONE; parts])
    }

    /// Splits the amount in proportion to `weights`, in whole minor units,
    /// so that the parts sum exactly to the amount (largest-remainder
    /// method).
    ///
    /// Each part first gets the floor of its exact share, in minor units;
    /// the minor units left over go one each to the parts with the largest
    /// remainders, ties to the earlier part. A zero weight gets nothing. A
    /// negative amount is split as its absolute value and every part
    /// negated, so −100.00 in three is −33.34, −33.33, −33.33.
    ///
    /// ```
    /// use saas_billing::{Currency, Money};
    /// use saas_billing::dec;
    ///
    /// let parts = Money::new(dec!(10), Currency::JPY).allocate(&[dec!(1), dec!(2)])?;
    /// let amounts: Vec<_> = parts.iter().map(Money::amount).collect();
    /// assert_eq!(amounts, [dec!(3), dec!(7)]);
    /// # Ok::<(), saas_billing::BillingError>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` if the amount is not rounded to the minor unit, if
    /// `weights` is empty, has a negative weight or sums to zero;
    /// `Overflow` if amount × weight does not fit in an `i128` (amounts and
    /// weights beyond about 10¹⁹ each).
    pub fn allocate(self, weights: &[Decimal]) -> Result<Vec<Money>, BillingError> {
        let total = self.to_minor()?;
        let shares = crate::allocate::largest_remainder(total, weights)?;
        shares
            .into_iter()
            .map(|minor| Money::from_minor(minor, self.currency))
            .collect()
    }

    fn same_currency(self, other: Money) -> Result<(), BillingError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(BillingError::CurrencyMismatch {
                expected: self.currency,
                found: other.currency,
            })
        }
    }
}

impl fmt::Display for Money {
    /// `12.50 EUR`: the amount as stored (round first for invoice display),
    /// then the code.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dec;

    fn usd(amount: Decimal) -> Money {
        Money::new(amount, Currency::USD)
    }

    #[test]
    fn arithmetic_in_one_currency() {
        assert_eq!(
            usd(dec!(1.10)).checked_add(usd(dec!(2.205))).unwrap(),
            usd(dec!(3.305))
        );
        assert_eq!(
            usd(dec!(1)).checked_sub(usd(dec!(2.5))).unwrap(),
            usd(dec!(-1.5))
        );
        assert_eq!(
            usd(dec!(0.25)).checked_mul(dec!(3)).unwrap(),
            usd(dec!(0.75))
        );
        assert_eq!(usd(dec!(5)).negate(), usd(dec!(-5)));
    }

    #[test]
    fn mismatch_and_overflow_are_errors() {
        let eur = Money::new(dec!(1), Currency::EUR);
        assert_eq!(
            usd(dec!(1)).checked_sub(eur),
            Err(BillingError::CurrencyMismatch {
                expected: Currency::USD,
                found: Currency::EUR
            })
        );
        assert!(matches!(
            usd(Decimal::MAX).checked_add(usd(dec!(1))),
            Err(BillingError::Overflow { .. })
        ));
        assert!(matches!(
            usd(Decimal::MIN).checked_sub(usd(dec!(1))),
            Err(BillingError::Overflow { .. })
        ));
        assert!(matches!(
            usd(Decimal::MAX).checked_mul(dec!(2)),
            Err(BillingError::Overflow { .. })
        ));
        assert!(matches!(
            Money::checked_sum(Currency::USD, [usd(dec!(1)), eur]),
            Err(BillingError::CurrencyMismatch { .. })
        ));
    }

    #[test]
    fn minor_units() {
        assert_eq!(
            Money::from_minor(1999, Currency::USD).unwrap(),
            usd(dec!(19.99))
        );
        assert_eq!(
            Money::from_minor(500, Currency::JPY).unwrap().amount(),
            dec!(500)
        );
        assert_eq!(
            Money::new(dec!(1.234), Currency::KWD).to_minor().unwrap(),
            1234
        );
        assert_eq!(usd(dec!(-3.1)).to_minor().unwrap(), -310);
        assert_eq!(usd(dec!(2.50000)).to_minor().unwrap(), 250);
        assert!(usd(dec!(0.001)).to_minor().is_err());
        assert!(Money::from_minor(i128::MAX, Currency::USD).is_err());
    }

    #[test]
    fn rounding_pads_and_flags() {
        let m = usd(dec!(10));
        assert!(m.is_rounded());
        assert_eq!(m.round(RoundingMode::HalfUp).to_string(), "10.00 USD");
        assert!(!usd(dec!(0.005)).is_rounded());
        assert!(usd(dec!(-0.5)).is_negative());
        assert!(!usd(dec!(-0)).is_negative());
    }

    #[test]
    fn serde_keeps_amounts_as_strings() {
        let json = serde_json::to_string(&usd(dec!(12.50))).unwrap();
        assert_eq!(json, r#"{"amount":"12.50","currency":"USD"}"#);
        let back: Money = serde_json::from_str(&json).unwrap();
        assert_eq!(back, usd(dec!(12.5)));
        assert!(serde_json::from_str::<Money>(r#"{"amount":"1","currency":"XAU"}"#).is_err());
    }
}
