//! The app's price list and the billing questions its handlers ask.

use std::sync::Arc;

use saas_billing::Decimal;
use saas_billing::{
    Aggregation, BillingEngine, Catalog, Charge, Currency, Entitlement, Meter, MeterKey, Money,
    PlanId, PlanRef, PlanVersion, Product, ProductId, TierTable, UsageEvent, dec,
};
use saas_core::{SharedClock, TenantId};
use saas_foundation::subscriptions::CurrentSubscriptions;

use super::error::ApiError;

/// The metered feature every API call counts against.
pub(crate) const API_CALLS: &str = "api_calls";
/// The static limit on projects.
pub(crate) const PROJECTS: &str = "projects";

/// Free: 3 projects and 1,000 API calls a month, no charge. Pro: 49.00 a
/// month, 100 projects, 10,000 calls included, then 0.002 a call.
pub(crate) fn price_list() -> Result<Catalog, saas_billing::BillingError> {
    let usd = |amount| Money::new(amount, Currency::USD);
    let product = ProductId::new("notes")?;
    let calls = TierTable::builder()
        .up_to(dec!(10000), dec!(0))
        .unbounded(dec!(0.002))
        .build()?;
    Catalog::builder()
        .product(Product::new(product.clone(), "Notes API"))
        .meter(Meter::new(MeterKey::new(API_CALLS)?, Aggregation::Count))
        .plan(
            PlanVersion::builder(PlanId::new("free")?, 1, product.clone())
                .recurring("base", "Free plan", [Charge::flat(usd(dec!(0)))?])
                .metered(
                    "calls",
                    "API calls",
                    API_CALLS,
                    [Charge::per_unit(usd(dec!(0)))?],
                )
                .limit(PROJECTS, dec!(3))
                .quota(API_CALLS, API_CALLS, dec!(1000))
                .build()?,
        )
        .plan(
            PlanVersion::builder(PlanId::new("pro")?, 1, product)
                .recurring("base", "Pro plan", [Charge::flat(usd(dec!(49)))?])
                .metered(
                    "calls",
                    "API calls",
                    API_CALLS,
                    [Charge::graduated(Currency::USD, calls)],
                )
                .limit(PROJECTS, dec!(100))
                .build()?,
        )
        .build()
}

/// The plan a sign-up asks for.
pub(crate) fn plan_ref(name: &str) -> Result<PlanRef, ApiError> {
    match name {
        "free" | "pro" => Ok(PlanRef::new(
            PlanId::new(name).map_err(|e| ApiError::bad_request(e.to_string()))?,
            1,
        )),
        _ => Err(ApiError::bad_request(
            "plan must be \"free\" or \"pro\"".to_owned(),
        )),
    }
}

/// The billing engine and each tenant's current subscription.
#[derive(Clone)]
pub(crate) struct Billing {
    pub(crate) current: Arc<CurrentSubscriptions>,
    clock: SharedClock,
}

impl Billing {
    pub(crate) fn new(engine: BillingEngine, clock: SharedClock) -> Self {
        Self {
            current: Arc::new(CurrentSubscriptions::new(engine)),
            clock,
        }
    }

    pub(crate) fn engine(&self) -> &BillingEngine {
        self.current.billing()
    }

    /// Records one API call (idempotent by `request_id`).
    pub(crate) async fn meter_call(
        &self,
        tenant: TenantId,
        request_id: String,
    ) -> Result<(), ApiError> {
        let subscription = self.current.id(tenant).await?;
        let meter = MeterKey::new(API_CALLS)?;
        let now = self.clock.now();
        let event = UsageEvent::new(tenant, subscription, meter, Decimal::ONE, now, request_id);
        self.engine().record_usage(event).await?;
        Ok(())
    }

    /// The tenant's plan name and its limit on projects.
    pub(crate) async fn project_limit(
        &self,
        tenant: TenantId,
    ) -> Result<(String, Entitlement), ApiError> {
        let sub = self.current.current(tenant).await?;
        let plan = self.engine().catalog().plan(sub.plan())?;
        let limit = plan
            .entitlements()
            .iter()
            .find(|e| e.feature().as_str() == PROJECTS)
            .cloned()
            .ok_or_else(|| ApiError::forbidden("plan_limit", "the plan includes no projects"))?;
        Ok((sub.plan().plan.as_str().to_owned(), limit))
    }
}
