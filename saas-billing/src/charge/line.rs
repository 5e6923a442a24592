//! The result of rating a charge, explaining itself.

use std::fmt;

use rust_decimal::Decimal;

use crate::money::Money;
use crate::rounding::RoundingMode;

/// One step of a charge's computation, with its exact (unrounded) amount.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChargeComponent {
    /// A fixed fee, whatever the quantity.
    Flat {
        /// The fee.
        amount: Money,
    },
    /// Quantity × unit price.
    PerUnit {
        /// Units charged.
        quantity: Decimal,
        /// Price of one unit.
        unit_price: Money,
        /// `quantity × unit_price`.
        amount: Money,
    },
    /// The units of a graduated table falling in one tier.
    GraduatedTier {
        /// Zero-based tier index.
        tier: usize,
        /// The tier's exclusive lower bound (0 for the first tier, inclusive).
        from: Decimal,
        /// The tier's inclusive upper bound; `None` for the last tier.
        up_to: Option<Decimal>,
        /// Units priced in this tier.
        quantity: Decimal,
        /// Price of one unit in this tier.
        unit_price: Money,
        /// The tier's flat fee (zero if none).
        flat_fee: Money,
        /// `quantity × unit_price + flat_fee`.
        amount: Money,
    },
    /// The whole quantity priced at the one tier of a volume table it falls in.
    VolumeTier {
        /// Zero-based tier index.
        tier: usize,
        /// The tier's exclusive lower bound (0 for the first tier, inclusive).
        from: Decimal,
        /// The tier's inclusive upper bound; `None` for the last tier.
        up_to: Option<Decimal>,
        /// The whole quantity.
        quantity: Decimal,
        /// Price of one unit in this tier.
        unit_price: Money,
        /// The tier's flat fee (zero if none).
        flat_fee: Money,
        /// `quantity × unit_price + flat_fee`.
        amount: Money,
    },
    /// Whole packages, a partial package counting as a whole one.
    Packages {
        /// Units used.
        quantity: Decimal,
        /// Units per package.
        package_size: Decimal,
        /// `ceil(quantity / package_size)`.
        packages: Decimal,
        /// Price of one package.
        package_price: Money,
        /// `packages × package_price`.
        amount: Money,
    },
    /// A percentage of a base amount.
    Percentage {
        /// The amount the rate applies to.
        base: Money,
        /// The rate in percent (2.9 means 2.9 %).
        rate: Decimal,
        /// `base × rate / 100`.
        amount: Money,
    },
}

impl ChargeComponent {
    /// The component's exact amount.
    pub fn amount(&self) -> Money {
        match self {
            ChargeComponent::Flat { amount }
            | ChargeComponent::PerUnit { amount, .. }
            | ChargeComponent::GraduatedTier { amount, .. }
            | ChargeComponent::VolumeTier { amount, .. }
            | ChargeComponent::Packages { amount, .. }
            | ChargeComponent::Percentage { amount, .. } => *amount,
        }
    }
}

fn write_range(
    f: &mut fmt::Formatter<'_>,
    tier: usize,
    from: Decimal,
    up_to: Option<Decimal>,
) -> fmt::Result {
    match (tier, up_to) {
        (0, Some(to)) => write!(f, "tier 0 (0 to {to})"),
        (_, Some(to)) => write!(f, "tier {tier} (over {from} up to {to})"),
        (_, None) => write!(f, "tier {tier} (over {from})"),
    }
}

impl fmt::Display for ChargeComponent {
    /// One human-readable line, e.g. `tier 1 (over 100 up to 1000): 900 × 0.08 USD = 72.00 USD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChargeComponent::Flat { amount } => write!(f, "flat fee: {amount}"),
            ChargeComponent::PerUnit {
                quantity,
                unit_price,
                amount,
            } => {
                write!(f, "{quantity} × {unit_price} = {amount}")
            }
            ChargeComponent::GraduatedTier {
                tier,
                from,
                up_to,
                quantity,
                unit_price,
                flat_fee,
                amount,
            }
            | ChargeComponent::VolumeTier {
                tier,
                from,
                up_to,
                quantity,
                unit_price,
                flat_fee,
                amount,
            } => {
                write_range(f, *tier, *from, *up_to)?;
                write!(f, ": {quantity} × {unit_price}")?;
                if !flat_fee.is_zero() {
                    write!(f, " + {flat_fee} flat")?;
                }
                write!(f, " = {amount}")
            }
            ChargeComponent::Packages {
                quantity,
                package_size,
                packages,
                package_price,
                amount,
            } => write!(
                f,
                "{quantity} in packages of {package_size} = {packages} × {package_price} = {amount}"
            ),
            ChargeComponent::Percentage { base, rate, amount } => {
                write!(f, "{rate} % of {base} = {amount}")
            }
        }
    }
}

/// A minimum or maximum that changed the amount of a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitApplied {
    /// The exact subtotal was below the minimum and was raised to it.
    Minimum(Money),
    /// The exact subtotal was above the maximum and was lowered to it.
    Maximum(Money),
}

/// The rated result of one charge: the amount to bill and how it was
/// computed, ready to become an invoice line.
///
/// `subtotal` is the exact sum of the components; a minimum or maximum
/// replaces it when it applies; the result is rounded once, with the mode
/// given, to give `amount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeLine {
    pub(crate) quantity: Decimal,
    pub(crate) components: Vec<ChargeComponent>,
    pub(crate) subtotal: Money,
    pub(crate) limit: Option<LimitApplied>,
    pub(crate) rounding: RoundingMode,
    pub(crate) amount: Money,
}

impl ChargeLine {
    /// The quantity rated (for a percentage charge, the base amount).
    pub fn quantity(&self) -> Decimal {
        self.quantity
    }

    /// The computation's steps, in order (empty for a zero quantity).
    pub fn components(&self) -> &[ChargeComponent] {
        &self.components
    }

    /// The exact sum of the components, before limits and rounding.
    pub fn subtotal(&self) -> Money {
        self.subtotal
    }

    /// The minimum or maximum that applied, if any.
    pub fn limit(&self) -> Option<LimitApplied> {
        self.limit
    }

    /// The rounding mode used for `amount`.
    pub fn rounding(&self) -> RoundingMode {
        self.rounding
    }

    /// The amount to bill, rounded to the currency's minor unit.
    pub fn amount(&self) -> Money {
        self.amount
    }

    /// The exact amount after limits, before rounding.
    pub fn limited_subtotal(&self) -> Money {
        match self.limit {
            Some(LimitApplied::Minimum(m) | LimitApplied::Maximum(m)) => m,
            None => self.subtotal,
        }
    }
}

impl fmt::Display for ChargeLine {
    /// The components one per line, then limits, rounding and the total.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for component in &self.components {
            writeln!(f, "{component}")?;
        }
        writeln!(f, "subtotal: {}", self.subtotal)?;
        match self.limit {
            Some(LimitApplied::Minimum(m)) => writeln!(f, "raised to minimum: {m}")?,
            Some(LimitApplied::Maximum(m)) => writeln!(f, "lowered to maximum: {m}")?,
            None => {}
        }
        write!(f, "amount ({:?} rounding): {}", self.rounding, self.amount)
    }
}
