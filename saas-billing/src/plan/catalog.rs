//! The catalog: products, meters and plan versions, validated together.

use std::collections::BTreeMap;

use super::{PlanRef, PlanVersion, PriceKind, Product};
use crate::entitlement::EntitlementValue;
use crate::error::BillingError;
use crate::ids::{MeterKey, PlanId, ProductId};
use crate::metering::Meter;

/// Every product, meter and plan version, checked for consistency.
///
/// Immutable once built: publish a new plan version by building a new
/// catalog that contains the old versions too (subscriptions on them keep
/// being billed from them).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    products: BTreeMap<ProductId, Product>,
    meters: BTreeMap<MeterKey, Meter>,
    plans: BTreeMap<PlanRef, PlanVersion>,
}

impl Catalog {
    /// Starts an empty catalog.
    pub fn builder() -> CatalogBuilder {
        CatalogBuilder::default()
    }

    /// A plan version.
    ///
    /// # Errors
    /// [`BillingError::NotFound`] if the catalog does not have it.
    pub fn plan(&self, reference: &PlanRef) -> Result<&PlanVersion, BillingError> {
        self.plans
            .get(reference)
            .ok_or_else(|| BillingError::not_found("plan version", reference))
    }

    /// The highest version of `plan`, if any.
    pub fn latest(&self, plan: &PlanId) -> Option<&PlanVersion> {
        self.plans
            .range(PlanRef::new(plan.clone(), 0)..=PlanRef::new(plan.clone(), u32::MAX))
            .next_back()
            .map(|(_, v)| v)
    }

    /// A meter.
    ///
    /// # Errors
    /// [`BillingError::NotFound`] if the catalog does not have it.
    pub fn meter(&self, key: &MeterKey) -> Result<&Meter, BillingError> {
        self.meters
            .get(key)
            .ok_or_else(|| BillingError::not_found("meter", key))
    }

    /// A product.
    pub fn product(&self, id: &ProductId) -> Option<&Product> {
        self.products.get(id)
    }

    /// Every plan version, by plan then version.
    pub fn plans(&self) -> impl Iterator<Item = &PlanVersion> {
        self.plans.values()
    }
}

/// Collects catalog entries; [`build`](Self::build) checks them together.
///
/// ```
/// use saas_billing::{dec, Aggregation, Catalog, Charge, Currency, Meter, MeterKey, Money,
///     PlanId, PlanRef, PlanVersion, Product, ProductId};
///
/// let app = ProductId::new("app")?;
/// let calls = Meter::new(MeterKey::new("calls")?, Aggregation::Count);
/// let plan = PlanVersion::builder(PlanId::new("dev")?, 1, app.clone())
///     .metered("calls", "API calls", "calls",
///              [Charge::per_unit(Money::new(dec!(0.001), Currency::USD))?])
///     .build()?;
/// let catalog = Catalog::builder()
///     .product(Product::new(app, "The app"))
///     .meter(calls)
///     .plan(plan)
///     .build()?;
/// assert!(catalog.plan(&PlanRef::new(PlanId::new("dev")?, 1)).is_ok());
/// # Ok::<(), saas_billing::BillingError>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct CatalogBuilder {
    products: Vec<Product>,
    meters: Vec<Meter>,
    plans: Vec<PlanVersion>,
}

impl CatalogBuilder {
    /// Adds a product.
    pub fn product(mut self, product: Product) -> Self {
        self.products.push(product);
        self
    }

    /// Adds a meter.
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meters.push(meter);
        self
    }

    /// Adds a plan version.
    pub fn plan(mut self, plan: PlanVersion) -> Self {
        self.plans.push(plan);
        self
    }

    /// Checks the entries together and builds the catalog.
    ///
    /// # Errors
    /// [`BillingError::InvalidCatalog`] for a repeated product, meter or
    /// plan version; a plan of an unknown product, or whose versions
    /// belong to different products; a metered price or quota on an
    /// unknown meter.
    pub fn build(self) -> Result<Catalog, BillingError> {
        let mut catalog = Catalog::default();
        for product in self.products {
            let id = product.id().clone();
            if catalog.products.insert(id.clone(), product).is_some() {
                return Err(BillingError::catalog(format!("product {id}"), "repeated"));
            }
        }
        for meter in self.meters {
            let key = meter.key().clone();
            if catalog.meters.insert(key.clone(), meter).is_some() {
                return Err(BillingError::catalog(format!("meter {key}"), "repeated"));
            }
        }
        for plan in self.plans {
            let item = format!("plan {}", plan.reference());
            if !catalog.products.contains_key(plan.product()) {
                return Err(BillingError::catalog(
                    item,
                    format!("unknown product {}", plan.product()),
                ));
            }
            if let Some(other) = catalog.latest(&plan.reference().plan)
                && other.product() != plan.product()
            {
                return Err(BillingError::catalog(
                    item,
                    "all versions of a plan sell one product",
                ));
            }
            let meters = plan
                .prices()
                .iter()
                .filter_map(|p| match p.kind() {
                    PriceKind::Metered { meter } => Some(meter),
                    _ => None,
                })
                .chain(plan.entitlements().iter().filter_map(|e| match e.value() {
                    EntitlementValue::Quota { meter, .. } => Some(meter),
                    _ => None,
                }));
            for meter in meters {
                if !catalog.meters.contains_key(meter) {
                    return Err(BillingError::catalog(
                        &item,
                        format!("unknown meter {meter}"),
                    ));
                }
            }
            let reference = plan.reference().clone();
            if catalog.plans.insert(reference, plan).is_some() {
                return Err(BillingError::catalog(item, "repeated"));
            }
        }
        Ok(catalog)
    }
}
