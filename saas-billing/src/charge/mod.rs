//! Charge models: how a price turns a quantity into an amount.
//!
//! Rating is a pure function: [`Charge::compute`] multiplies and adds
//! exactly, applies the optional minimum and maximum, and rounds once to
//! the currency's minor unit, returning a [`ChargeLine`] that explains each
//! step.

mod line;
mod rate;
mod tiers;

pub use line::{ChargeComponent, ChargeLine, LimitApplied};
pub use tiers::{Tier, TierTable, TierTableBuilder};

use rust_decimal::Decimal;

use crate::currency::Currency;
use crate::error::BillingError;
use crate::money::Money;
use crate::rounding::RoundingMode;
use rate::{graduated, mul, non_negative, packages_needed, volume};

/// How a charge prices a quantity. Prices are in the [`Charge`]'s currency.
///
/// A quantity of zero reaches no tier and no package: it costs nothing
/// (before a minimum) in every model but [`ChargeModel::Flat`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChargeModel {
    /// A fixed amount whatever the quantity.
    Flat {
        /// The amount.
        amount: Decimal,
    },
    /// `quantity × unit_price`.
    PerUnit {
        /// Price of one unit.
        unit_price: Decimal,
    },
    /// Each unit priced by the tier it falls in: with tiers up to 100 at
    /// 0.10 and above at 0.08, 150 units cost 100 × 0.10 + 50 × 0.08.
    /// Each tier reached adds its flat fee.
    Graduated(TierTable),
    /// All units priced by the one tier the total quantity falls in: 150
    /// units cost 150 × 0.08. That tier's flat fee is added.
    Volume(TierTable),
    /// `ceil(quantity / package_size) × package_price`: a partial package
    /// is billed as a whole one.
    Package {
        /// Units per package; above zero.
        package_size: Decimal,
        /// Price of one package.
        package_price: Decimal,
    },
    /// `quantity × rate / 100`, the quantity being a base amount in the
    /// charge's currency (transaction volume, another line's total).
    Percentage {
        /// The rate in percent: 2.9 means 2.9 %.
        rate: Decimal,
    },
}

/// A validated price: a [`ChargeModel`] in a currency, with an optional
/// minimum and maximum for the line.
///
/// ```
/// use saas_billing::{Charge, Currency, Money, RoundingMode};
/// use saas_billing::dec;
///
/// // 100 units per package at 5.00 USD; 250 units need 3 packages.
/// let charge = Charge::package(dec!(100), Money::new(dec!(5), Currency::USD))?;
/// let line = charge.compute(dec!(250), RoundingMode::HalfEven)?;
/// assert_eq!(line.amount().amount(), dec!(15.00));
/// assert_eq!(line.components()[0].to_string(),
///            "250 in packages of 100 = 3 × 5 USD = 15 USD");
/// # Ok::<(), saas_billing::BillingError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Charge {
    currency: Currency,
    model: ChargeModel,
    minimum: Option<Money>,
    maximum: Option<Money>,
}

impl Charge {
    /// A charge of `model` in `currency`, with no minimum or maximum.
    ///
    /// # Errors
    /// [`BillingError::InvalidInput`] for a negative amount, price or rate,
    /// or a package size not above zero. (Tier tables were checked when
    /// built.)
    pub fn new(currency: Currency, model: ChargeModel) -> Result<Charge, BillingError> {
        match &model {
            ChargeModel::Flat { amount } => non_negative("amount", *amount)?,
            ChargeModel::PerUnit { unit_price } => non_negative("unit_price", *unit_price)?,
            ChargeModel::Graduated(_) | ChargeModel::Volume(_) => {}
            ChargeModel::Package {
                package_size,
                package_price,
            } => {
                if *package_size <= Decimal::ZERO {
                    return Err(BillingError::invalid("package_size", "must be above zero"));
                }
                non_negative("package_price", *package_price)?;
            }
            ChargeModel::Percentage { rate } => non_negative("rate", *rate)?,
        }
        Ok(Charge {
            currency,
            model,
            minimum: None,
            maximum: None,
        })
    }

    /// A fixed amount per period.
    ///
    /// # Errors
    /// As [`Charge::new`].
    pub fn flat(amount: Money) -> Result<Charge, BillingError> {
        Charge::new(
            amount.currency(),
            ChargeModel::Flat {
                amount: amount.amount(),
            },
        )
    }

    /// A price per unit.
    ///
    /// # Errors
    /// As [`Charge::new`].
    pub fn per_unit(unit_price: Money) -> Result<Charge, BillingError> {
        Charge::new(
            unit_price.currency(),
            ChargeModel::PerUnit {
                unit_price: unit_price.amount(),
            },
        )
    }

    /// Graduated tiers (see [`ChargeModel::Graduated`]).
    pub fn graduated(currency: Currency, tiers: TierTable) -> Charge {
        Charge {
            currency,
            model: ChargeModel::Graduated(tiers),
            minimum: None,
            maximum: None,
        }
    }

    /// Volume tiers (see [`ChargeModel::Volume`]).
    pub fn volume(currency: Currency, tiers: TierTable) -> Charge {
        Charge {
            currency,
            model: ChargeModel::Volume(tiers),
            minimum: None,
            maximum: None,
        }
    }

    /// A price per started package of `package_size` units.
    ///
    /// # Errors
    /// As [`Charge::new`].
    pub fn package(package_size: Decimal, package_price: Money) -> Result<Charge, BillingError> {
        Charge::new(
            package_price.currency(),
            ChargeModel::Package {
                package_size,
                package_price: package_price.amount(),
            },
        )
    }

    /// `rate` percent of a base amount in `currency`.
    ///
    /// # Errors
    /// As [`Charge::new`].
    pub fn percentage(rate: Decimal, currency: Currency) -> Result<Charge, BillingError> {
        Charge::new(currency, ChargeModel::Percentage { rate })
    }

    /// Sets the least the line may bill; a lower subtotal is raised to it,
    /// including a zero quantity.
    ///
    /// # Errors
    /// `CurrencyMismatch`, or `InvalidInput` if negative or above the maximum.
    pub fn with_minimum(mut self, minimum: Money) -> Result<Charge, BillingError> {
        self.check_limit("minimum", minimum)?;
        self.minimum = Some(minimum);
        self.check_limits_order()?;
        Ok(self)
    }

    /// Sets the most the line may bill; a higher subtotal is lowered to it.
    ///
    /// # Errors
    /// `CurrencyMismatch`, or `InvalidInput` if negative or below the minimum.
    pub fn with_maximum(mut self, maximum: Money) -> Result<Charge, BillingError> {
        self.check_limit("maximum", maximum)?;
        self.maximum = Some(maximum);
        self.check_limits_order()?;
        Ok(self)
    }

    /// The currency of every price and of the result.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The charge model.
    pub fn model(&self) -> &ChargeModel {
        &self.model
    }

    /// The minimum, if set.
    pub fn minimum(&self) -> Option<Money> {
        self.minimum
    }

    /// The maximum, if set.
    pub fn maximum(&self) -> Option<Money> {
        self.maximum
    }

    /// Rates `quantity` (for a percentage charge: the base amount in the
    /// charge's currency): the exact subtotal, limited by the minimum and
    /// maximum, rounded once with `rounding`.
    ///
    /// # Errors
    /// `InvalidInput` for a negative quantity, `Overflow` if a product or
    /// sum exceeds a [`Decimal`].
    pub fn compute(
        &self,
        quantity: Decimal,
        rounding: RoundingMode,
    ) -> Result<ChargeLine, BillingError> {
        if quantity.is_sign_negative() && !quantity.is_zero() {
            return Err(BillingError::invalid("quantity", "cannot be negative"));
        }
        let components = self.components(quantity)?;
        let subtotal = Money::checked_sum(
            self.currency,
            components.iter().map(ChargeComponent::amount),
        )?;
        let (limited, limit) = match (self.minimum, self.maximum) {
            (Some(min), _) if subtotal.amount() < min.amount() => {
                (min, Some(LimitApplied::Minimum(min)))
            }
            (_, Some(max)) if subtotal.amount() > max.amount() => {
                (max, Some(LimitApplied::Maximum(max)))
            }
            _ => (subtotal, None),
        };
        Ok(ChargeLine {
            quantity,
            components,
            subtotal,
            limit,
            rounding,
            amount: limited.round(rounding),
        })
    }

    /// Rates a percentage (or any) charge on `base`, which must be in the
    /// charge's currency.
    ///
    /// # Errors
    /// `CurrencyMismatch`, then as [`Charge::compute`].
    pub fn compute_on(
        &self,
        base: Money,
        rounding: RoundingMode,
    ) -> Result<ChargeLine, BillingError> {
        if base.currency() != self.currency {
            return Err(BillingError::CurrencyMismatch {
                expected: self.currency,
                found: base.currency(),
            });
        }
        self.compute(base.amount(), rounding)
    }

    fn components(&self, quantity: Decimal) -> Result<Vec<ChargeComponent>, BillingError> {
        let money = |amount| Money::new(amount, self.currency);
        let component = match &self.model {
            ChargeModel::Flat { amount } => ChargeComponent::Flat {
                amount: money(*amount),
            },
            ChargeModel::PerUnit { unit_price } => ChargeComponent::PerUnit {
                quantity,
                unit_price: money(*unit_price),
                amount: money(mul(quantity, *unit_price)?),
            },
            ChargeModel::Graduated(table) => return graduated(self.currency, table, quantity),
            ChargeModel::Volume(table) => match volume(self.currency, table, quantity)? {
                Some(component) => component,
                None => return Ok(Vec::new()),
            },
            ChargeModel::Package {
                package_size,
                package_price,
            } => {
                if quantity.is_zero() {
                    return Ok(Vec::new());
                }
                let packages = packages_needed(quantity, *package_size)?;
                ChargeComponent::Packages {
                    quantity,
                    package_size: *package_size,
                    packages,
                    package_price: money(*package_price),
                    amount: money(mul(packages, *package_price)?),
                }
            }
            ChargeModel::Percentage { rate } => {
                let amount = mul(quantity, *rate)?
                    .checked_div(Decimal::ONE_HUNDRED)
                    .ok_or_else(|| BillingError::overflow("a percentage"))?;
                ChargeComponent::Percentage {
                    base: money(quantity),
                    rate: *rate,
                    amount: money(amount),
                }
            }
        };
        Ok(vec![component])
    }

    fn check_limit(&self, field: &'static str, limit: Money) -> Result<(), BillingError> {
        if limit.currency() != self.currency {
            return Err(BillingError::CurrencyMismatch {
                expected: self.currency,
                found: limit.currency(),
            });
        }
        non_negative(field, limit.amount())
    }

    fn check_limits_order(&self) -> Result<(), BillingError> {
        match (self.minimum, self.maximum) {
            (Some(min), Some(max)) if min.amount() > max.amount() => Err(BillingError::invalid(
                "minimum",
                format!("{min} is above the maximum {max}"),
            )),
            _ => Ok(()),
        }
    }
}
