//! Validating builder for plan versions.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;

use super::{PlanRef, PlanVersion, Price, PriceKind};
use crate::calendar::Cadence;
use crate::charge::Charge;
use crate::entitlement::Entitlement;
use crate::error::BillingError;
use crate::ids::{FeatureKey, MeterKey, PriceKey, ProductId};

/// Longest trial accepted, in days: by [`PlanVersionBuilder::trial_days`]
/// (checked in `build`) and by `Trial::Days` when a subscription is
/// created — one rule, shared by both.
pub const MAX_TRIAL_DAYS: u32 = 730;

/// The trial-length rule shared by plan versions and subscriptions: `Err`
/// holds the reason, which each caller wraps in its own error variant.
pub(crate) fn check_trial_days(days: u32) -> Result<(), String> {
    if days > MAX_TRIAL_DAYS {
        Err(format!(
            "a trial of {days} days is longer than the {MAX_TRIAL_DAYS} days allowed"
        ))
    } else {
        Ok(())
    }
}

/// Builds a [`PlanVersion`]; every rule is checked in [`build`](Self::build),
/// which names the entry at fault.
///
/// ```
/// use saas_billing::{dec, BillingError, Charge, Currency, Money, PlanId, PlanVersion, ProductId};
///
/// let usd = |a| Money::new(a, Currency::USD);
/// let pro = PlanVersion::builder(PlanId::new("pro")?, 1, ProductId::new("app")?)
///     .name("Pro")
///     .trial_days(14)
///     .recurring("base", "Pro plan", [Charge::flat(usd(dec!(49)))?])
///     .per_seat("seats", "Seats", [Charge::per_unit(usd(dec!(10)))?])
///     .flag("sso")
///     .build()?;
/// assert_eq!(pro.prices().len(), 2);
///
/// let err = PlanVersion::builder(PlanId::new("pro")?, 2, ProductId::new("app")?)
///     .recurring("base", "Pro", [Charge::flat(usd(dec!(49)))?])
///     .recurring("base", "Pro again", [Charge::flat(usd(dec!(59)))?])
///     .build()
///     .unwrap_err();
/// assert!(matches!(err, BillingError::InvalidCatalog { .. }));
/// # Ok::<(), BillingError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct PlanVersionBuilder {
    reference: PlanRef,
    product: ProductId,
    name: Option<String>,
    cadence: Cadence,
    trial_days: u32,
    prices: Vec<(String, String, RawKind, Vec<Charge>)>,
    entitlements: Vec<(String, RawEntitlement)>,
}

#[derive(Debug, Clone)]
enum RawKind {
    Recurring,
    PerSeat,
    Metered(String),
}

#[derive(Debug, Clone)]
enum RawEntitlement {
    Flag,
    Limit(Decimal),
    Quota(String, Decimal),
}

impl PlanVersionBuilder {
    pub(super) fn new(reference: PlanRef, product: ProductId) -> Self {
        PlanVersionBuilder {
            reference,
            product,
            name: None,
            cadence: Cadence::monthly(),
            trial_days: 0,
            prices: Vec::new(),
            entitlements: Vec::new(),
        }
    }

    /// Display name (default: the plan id).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Billing cadence (default: monthly).
    pub fn cadence(mut self, cadence: Cadence) -> Self {
        self.cadence = cadence;
        self
    }

    /// Free trial length in days for new subscriptions (default 0).
    pub fn trial_days(mut self, days: u32) -> Self {
        self.trial_days = days;
        self
    }

    /// A fee per period, one charge per currency.
    pub fn recurring(
        self,
        key: &str,
        description: &str,
        charges: impl IntoIterator<Item = Charge>,
    ) -> Self {
        self.price(key, description, RawKind::Recurring, charges)
    }

    /// A fee per seat per period, one charge per currency.
    pub fn per_seat(
        self,
        key: &str,
        description: &str,
        charges: impl IntoIterator<Item = Charge>,
    ) -> Self {
        self.price(key, description, RawKind::PerSeat, charges)
    }

    /// A usage price on `meter`, one charge per currency.
    pub fn metered(
        self,
        key: &str,
        description: &str,
        meter: &str,
        charges: impl IntoIterator<Item = Charge>,
    ) -> Self {
        self.price(
            key,
            description,
            RawKind::Metered(meter.to_owned()),
            charges,
        )
    }

    /// A boolean feature.
    pub fn flag(mut self, feature: &str) -> Self {
        self.entitlements
            .push((feature.to_owned(), RawEntitlement::Flag));
        self
    }

    /// A static limit (`seats = 10`).
    pub fn limit(mut self, feature: &str, limit: Decimal) -> Self {
        self.entitlements
            .push((feature.to_owned(), RawEntitlement::Limit(limit)));
        self
    }

    /// A quota on `meter` per billing period.
    pub fn quota(mut self, feature: &str, meter: &str, per_period: Decimal) -> Self {
        self.entitlements.push((
            feature.to_owned(),
            RawEntitlement::Quota(meter.to_owned(), per_period),
        ));
        self
    }

    fn price(
        mut self,
        key: &str,
        description: &str,
        kind: RawKind,
        charges: impl IntoIterator<Item = Charge>,
    ) -> Self {
        self.prices.push((
            key.to_owned(),
            description.to_owned(),
            kind,
            charges.into_iter().collect(),
        ));
        self
    }

    /// Checks every rule and builds the version.
    ///
    /// # Errors
    /// [`BillingError::InvalidCatalog`] naming the entry when: the version
    /// is 0; the trial exceeds [`MAX_TRIAL_DAYS`]; there is no price; a key
    /// is malformed or repeated; a price has no charge or two in one
    /// currency; prices disagree on currencies; a limit is negative.
    pub fn build(self) -> Result<PlanVersion, BillingError> {
        let item = format!("plan {}", self.reference);
        if self.reference.version == 0 {
            return Err(BillingError::catalog(item, "versions start at 1"));
        }
        if let Err(reason) = check_trial_days(self.trial_days) {
            return Err(BillingError::catalog(item, reason));
        }
        if self.prices.is_empty() {
            return Err(BillingError::catalog(
                item,
                "a plan version needs at least one price",
            ));
        }
        let mut prices = Vec::with_capacity(self.prices.len());
        let mut currencies: Option<BTreeSet<_>> = None;
        for (key, description, kind, charges) in self.prices {
            let price_item = format!("{item} price {key:?}");
            let key = PriceKey::new(key)
                .map_err(|e| BillingError::catalog(&price_item, e.to_string()))?;
            if prices.iter().any(|p: &Price| p.key == key) {
                return Err(BillingError::catalog(
                    price_item,
                    "price keys must be unique",
                ));
            }
            let kind = match kind {
                RawKind::Recurring => PriceKind::Recurring,
                RawKind::PerSeat => PriceKind::PerSeat,
                RawKind::Metered(meter) => PriceKind::Metered {
                    meter: MeterKey::new(meter)
                        .map_err(|e| BillingError::catalog(&price_item, e.to_string()))?,
                },
            };
            if charges.is_empty() {
                return Err(BillingError::catalog(
                    price_item,
                    "a price needs a charge in each currency",
                ));
            }
            let mut by_currency = BTreeMap::new();
            for charge in charges {
                if by_currency.insert(charge.currency(), charge).is_some() {
                    return Err(BillingError::catalog(
                        price_item,
                        "two charges in one currency",
                    ));
                }
            }
            let these: BTreeSet<_> = by_currency.keys().copied().collect();
            match &currencies {
                Some(expected) if *expected != these => {
                    return Err(BillingError::catalog(
                        price_item,
                        "every price must be offered in the same currencies",
                    ));
                }
                _ => currencies = Some(these),
            }
            prices.push(Price {
                key,
                description,
                kind,
                charges: by_currency,
            });
        }
        let mut entitlements: Vec<Entitlement> = Vec::with_capacity(self.entitlements.len());
        for (feature, raw) in self.entitlements {
            let feature_item = format!("{item} feature {feature:?}");
            let key = FeatureKey::new(feature)
                .map_err(|e| BillingError::catalog(&feature_item, e.to_string()))?;
            if entitlements.iter().any(|e| *e.feature() == key) {
                return Err(BillingError::catalog(
                    feature_item,
                    "features must be unique",
                ));
            }
            let entitlement = match raw {
                RawEntitlement::Flag => Entitlement::flag(key),
                RawEntitlement::Limit(limit) => Entitlement::limit(key, limit),
                RawEntitlement::Quota(meter, limit) => {
                    let meter = MeterKey::new(meter)
                        .map_err(|e| BillingError::catalog(&feature_item, e.to_string()))?;
                    Entitlement::quota(key, meter, limit)
                }
            };
            if entitlement
                .max()
                .is_some_and(|m| m.is_sign_negative() && !m.is_zero())
            {
                return Err(BillingError::catalog(
                    feature_item,
                    "a limit cannot be negative",
                ));
            }
            entitlements.push(entitlement);
        }
        Ok(PlanVersion {
            name: self.name.unwrap_or_else(|| self.reference.plan.to_string()),
            reference: self.reference,
            product: self.product,
            cadence: self.cadence,
            trial_days: self.trial_days,
            currencies: currencies.unwrap_or_default().into_iter().collect(),
            prices,
            entitlements,
        })
    }
}
