//! Tier tables for graduated and volume pricing.

use rust_decimal::Decimal;

use crate::error::BillingError;

/// One row of a [`TierTable`]: a unit price (and optional flat fee) for
/// quantities above the previous tier's bound up to and including this
/// tier's bound.
///
/// Bounds are inclusive upper bounds, as in Stripe's `up_to`: with tiers
/// up to 100 and up to 1000, the first covers `[0, 100]`, the second
/// `(100, 1000]`, so quantity 100 is priced in the first and 101 in the
/// second. Quantities may be fractional (gigabytes, hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tier {
    up_to: Option<Decimal>,
    unit_price: Decimal,
    flat_fee: Decimal,
}

impl Tier {
    /// A tier for quantities up to and including `bound`.
    pub fn up_to(bound: Decimal, unit_price: Decimal) -> Tier {
        Tier {
            up_to: Some(bound),
            unit_price,
            flat_fee: Decimal::ZERO,
        }
    }

    /// The last tier, for every quantity above the previous bound.
    pub fn unbounded(unit_price: Decimal) -> Tier {
        Tier {
            up_to: None,
            unit_price,
            flat_fee: Decimal::ZERO,
        }
    }

    /// Adds a fixed fee charged once when the quantity reaches this tier
    /// (graduated: any unit falls in it; volume: the quantity falls in it).
    pub fn with_flat_fee(mut self, flat_fee: Decimal) -> Tier {
        self.flat_fee = flat_fee;
        self
    }

    /// The inclusive upper bound; `None` for the last tier.
    pub fn upper_bound(&self) -> Option<Decimal> {
        self.up_to
    }

    /// The price of one unit in this tier, in the charge's currency.
    pub fn unit_price(&self) -> Decimal {
        self.unit_price
    }

    /// The fixed fee of this tier (zero unless set).
    pub fn flat_fee(&self) -> Decimal {
        self.flat_fee
    }
}

/// A validated list of [`Tier`]s: at least one, upper bounds strictly
/// ascending from above zero, only the last unbounded, no negative price or
/// fee. Built with [`TierTable::builder`].
///
/// ```
/// use saas_billing::{BillingError, TierTable};
/// use saas_billing::dec;
///
/// let tiers = TierTable::builder()
///     .up_to(dec!(100), dec!(0.10))
///     .up_to(dec!(1000), dec!(0.08))
///     .unbounded(dec!(0.05))
///     .build()?;
/// assert_eq!(tiers.tiers().len(), 3);
///
/// let err = TierTable::builder().up_to(dec!(100), dec!(0.10)).build().unwrap_err();
/// assert!(matches!(err, BillingError::InvalidTierTable { tier: 1, .. }));
/// # Ok::<(), BillingError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TierTable {
    tiers: Vec<Tier>,
}

impl TierTable {
    /// Starts an empty table.
    pub fn builder() -> TierTableBuilder {
        TierTableBuilder { tiers: Vec::new() }
    }

    /// The tiers, in ascending order; the last is unbounded.
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// Each tier with its exclusive lower bound (0 for the first).
    pub(crate) fn with_lower_bounds(&self) -> impl Iterator<Item = (usize, Decimal, &Tier)> {
        let lowers =
            std::iter::once(Decimal::ZERO).chain(self.tiers.iter().filter_map(|t| t.up_to));
        self.tiers
            .iter()
            .zip(lowers)
            .enumerate()
            .map(|(index, (tier, lower))| (index, lower, tier))
    }
}

/// Collects tiers and checks them in [`build`](TierTableBuilder::build).
#[derive(Debug, Clone, Default)]
pub struct TierTableBuilder {
    tiers: Vec<Tier>,
}

impl TierTableBuilder {
    /// Appends a tier.
    pub fn tier(mut self, tier: Tier) -> Self {
        self.tiers.push(tier);
        self
    }

    /// Appends a tier for quantities up to and including `bound`.
    pub fn up_to(self, bound: Decimal, unit_price: Decimal) -> Self {
        self.tier(Tier::up_to(bound, unit_price))
    }

    /// Appends the last, unbounded tier.
    pub fn unbounded(self, unit_price: Decimal) -> Self {
        self.tier(Tier::unbounded(unit_price))
    }

    /// Checks the rules and returns the table.
    ///
    /// # Errors
    /// [`BillingError::InvalidTierTable`] naming the first offending tier
    /// (zero-based; the tier count when the unbounded last tier is
    /// missing).
    pub fn build(self) -> Result<TierTable, BillingError> {
        let invalid = |tier, reason| Err(BillingError::InvalidTierTable { tier, reason });
        if self.tiers.is_empty() {
            return invalid(0, "a tier table needs at least one tier");
        }
        let last = self.tiers.len() - 1;
        let mut previous = Decimal::ZERO;
        for (index, tier) in self.tiers.iter().enumerate() {
            if tier.unit_price.is_sign_negative() && !tier.unit_price.is_zero() {
                return invalid(index, "unit price is negative");
            }
            if tier.flat_fee.is_sign_negative() && !tier.flat_fee.is_zero() {
                return invalid(index, "flat fee is negative");
            }
            match tier.up_to {
                Some(bound) if bound <= previous => {
                    return invalid(
                        index,
                        "upper bounds must ascend strictly, starting above zero",
                    );
                }
                Some(bound) => previous = bound,
                None if index != last => {
                    return invalid(index, "only the last tier may be unbounded");
                }
                None => {}
            }
        }
        if self.tiers[last].up_to.is_some() {
            return invalid(self.tiers.len(), "the last tier must be unbounded");
        }
        Ok(TierTable { tiers: self.tiers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dec;

    fn reason(builder: TierTableBuilder) -> (usize, &'static str) {
        match builder.build() {
            Err(BillingError::InvalidTierTable { tier, reason }) => (tier, reason),
            other => panic!("expected an invalid tier table, got {other:?}"),
        }
    }

    #[test]
    fn every_rule_is_checked() {
        assert_eq!(reason(TierTable::builder()).0, 0);
        let (tier, why) = reason(
            TierTable::builder()
                .up_to(dec!(100), dec!(1))
                .up_to(dec!(100), dec!(1))
                .unbounded(dec!(1)),
        );
        assert_eq!(
            (tier, why),
            (1, "upper bounds must ascend strictly, starting above zero")
        );
        assert_eq!(
            reason(
                TierTable::builder()
                    .up_to(dec!(0), dec!(1))
                    .unbounded(dec!(1))
            )
            .0,
            0
        );
        assert_eq!(
            reason(
                TierTable::builder()
                    .up_to(dec!(-5), dec!(1))
                    .unbounded(dec!(1))
            )
            .0,
            0
        );
        assert_eq!(
            reason(TierTable::builder().unbounded(dec!(1)).unbounded(dec!(1))),
            (0, "only the last tier may be unbounded")
        );
        assert_eq!(
            reason(
                TierTable::builder()
                    .up_to(dec!(10), dec!(1))
                    .up_to(dec!(20), dec!(1))
            ),
            (2, "the last tier must be unbounded")
        );
        assert_eq!(
            reason(
                TierTable::builder()
                    .up_to(dec!(10), dec!(1))
                    .unbounded(dec!(-0.01))
            ),
            (1, "unit price is negative")
        );
        assert_eq!(
            reason(TierTable::builder().tier(Tier::unbounded(dec!(1)).with_flat_fee(dec!(-1)))),
            (0, "flat fee is negative")
        );
    }

    #[test]
    fn lower_bounds_follow_the_previous_tier() {
        let table = TierTable::builder()
            .up_to(dec!(10), dec!(3))
            .up_to(dec!(20.5), dec!(2))
            .unbounded(dec!(0))
            .build()
            .unwrap();
        let lowers: Vec<_> = table.with_lower_bounds().map(|(i, l, _)| (i, l)).collect();
        assert_eq!(lowers, [(0, dec!(0)), (1, dec!(10)), (2, dec!(20.5))]);
    }
}
