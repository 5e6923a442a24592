//! The catalog: products, versioned plans and their prices.
//!
//! A plan version is immutable once built; changing prices means building
//! version `n + 1`. A subscription stores the [`PlanRef`] (plan and
//! version) it is on and stays on it until it is changed explicitly, so
//! publishing a new version never reprices existing customers.

mod builder;
mod catalog;

pub(crate) use builder::check_trial_days;
pub use builder::{MAX_TRIAL_DAYS, PlanVersionBuilder};
pub use catalog::{Catalog, CatalogBuilder};

use std::collections::BTreeMap;
use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::calendar::Cadence;
use crate::charge::Charge;
use crate::currency::Currency;
use crate::entitlement::Entitlement;
use crate::error::BillingError;
use crate::ids::{FeatureKey, MeterKey, PlanId, PriceKey, ProductId};
use crate::money::Money;

/// A product of the catalog; plans belong to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    id: ProductId,
    name: String,
}

impl Product {
    /// A product.
    pub fn new(id: ProductId, name: impl Into<String>) -> Product {
        Product {
            id,
            name: name.into(),
        }
    }

    /// Its id.
    pub fn id(&self) -> &ProductId {
        &self.id
    }

    /// Its display name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A plan and one of its versions: what a subscription is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlanRef {
    /// The plan.
    pub plan: PlanId,
    /// The version, from 1.
    pub version: u32,
}

impl PlanRef {
    /// A reference to `plan` version `version`.
    pub fn new(plan: PlanId, version: u32) -> PlanRef {
        PlanRef { plan, version }
    }
}

impl fmt::Display for PlanRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}", self.plan, self.version)
    }
}

/// What a price charges for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PriceKind {
    /// A fee per period, rated at quantity 1.
    Recurring,
    /// A fee per period, rated at the subscription's quantity (seats).
    PerSeat,
    /// Rated on a meter's usage over the period, billed in arrears.
    Metered {
        /// The meter.
        meter: MeterKey,
    },
}

/// One price of a plan version: a kind and one [`Charge`] per currency the
/// plan is sold in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    key: PriceKey,
    description: String,
    kind: PriceKind,
    charges: BTreeMap<Currency, Charge>,
}

impl Price {
    /// Its key, unique within the plan version.
    pub fn key(&self) -> &PriceKey {
        &self.key
    }

    /// The text invoice lines show.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// What it charges for.
    pub fn kind(&self) -> &PriceKind {
        &self.kind
    }

    /// The charge in `currency`, if the price is sold in it.
    pub fn charge(&self, currency: Currency) -> Option<&Charge> {
        self.charges.get(&currency)
    }

    /// Whether it is billed per period in advance of usage (recurring or
    /// per seat), as opposed to metered.
    pub fn is_licensed(&self) -> bool {
        matches!(self.kind, PriceKind::Recurring | PriceKind::PerSeat)
    }
}

/// One immutable version of a plan: cadence, trial, prices per currency
/// and entitlements. Built by [`PlanVersion::builder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanVersion {
    reference: PlanRef,
    product: ProductId,
    name: String,
    cadence: Cadence,
    trial_days: u32,
    currencies: Vec<Currency>,
    prices: Vec<Price>,
    entitlements: Vec<Entitlement>,
}

impl PlanVersion {
    /// Starts a version of `plan` of `product`; see [`PlanVersionBuilder`].
    pub fn builder(plan: PlanId, version: u32, product: ProductId) -> PlanVersionBuilder {
        PlanVersionBuilder::new(PlanRef::new(plan, version), product)
    }

    /// The plan and version.
    pub fn reference(&self) -> &PlanRef {
        &self.reference
    }

    /// The product it sells.
    pub fn product(&self) -> &ProductId {
        &self.product
    }

    /// Display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How often it bills.
    pub fn cadence(&self) -> Cadence {
        self.cadence
    }

    /// Days of free trial for new subscriptions (0 for none).
    pub fn trial_days(&self) -> u32 {
        self.trial_days
    }

    /// The currencies every price is offered in.
    pub fn currencies(&self) -> &[Currency] {
        &self.currencies
    }

    /// Whether it is sold in `currency`.
    pub fn sells_in(&self, currency: Currency) -> bool {
        self.currencies.contains(&currency)
    }

    /// Prices, in the order given.
    pub fn prices(&self) -> &[Price] {
        &self.prices
    }

    /// Entitlements.
    pub fn entitlements(&self) -> &[Entitlement] {
        &self.entitlements
    }

    /// The entitlement for `feature`, if any.
    pub fn entitlement(&self, feature: &FeatureKey) -> Option<&Entitlement> {
        self.entitlements.iter().find(|e| e.feature() == feature)
    }

    /// The exact (unrounded) per-period amount of the licensed prices
    /// (recurring and per seat) at `quantity` seats. Used to tell upgrades
    /// from downgrades.
    ///
    /// # Errors
    /// `InvalidInput` if the plan is not sold in `currency`; `Overflow`.
    pub fn licensed_amount(
        &self,
        currency: Currency,
        quantity: u32,
    ) -> Result<Money, BillingError> {
        let mut total = Money::zero(currency);
        for price in self.prices.iter().filter(|p| p.is_licensed()) {
            let charge = price.charge(currency).ok_or_else(|| {
                BillingError::invalid(
                    "currency",
                    format!("{} is not sold in {currency}", self.reference),
                )
            })?;
            let line = charge.compute(
                price_quantity(price, quantity),
                crate::RoundingMode::HalfEven,
            )?;
            total = total.checked_add(line.limited_subtotal())?;
        }
        Ok(total)
    }
}

/// The quantity a licensed price is rated at.
pub(crate) fn price_quantity(price: &Price, seats: u32) -> Decimal {
    match price.kind {
        PriceKind::PerSeat => Decimal::from(seats),
        _ => Decimal::ONE,
    }
}
