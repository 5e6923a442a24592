//! The app's price list and the plan question its handlers ask.

use saas_billing::Decimal;
use saas_billing::{
    Aggregation, Catalog, Charge, Currency, Meter, MeterKey, Money, PlanId, PlanRef, PlanVersion,
    Product, ProductId, TierTable, dec,
};
use saas_core::{ErrorKind, TenantId};
use saas_foundation::problem::Problem;
use saas_foundation::subscriptions::CurrentSubscriptions;

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
pub(crate) fn plan_ref(name: &str) -> Result<PlanRef, Problem> {
    match name {
        "free" | "pro" => Ok(PlanRef::new(PlanId::new(name)?, 1)),
        _ => Err(Problem::new(
            ErrorKind::InvalidInput,
            "plan must be \"free\" or \"pro\"",
        )),
    }
}

/// Whether the tenant's plan allows one more project than `used`; read
/// before the creating transaction, applied inside it.
pub(crate) async fn project_limit(
    current: &CurrentSubscriptions,
    tenant: TenantId,
) -> Result<impl Fn(i64) -> Result<(), Problem> + Send + Sync + use<>, Problem> {
    let (subscription, limit) = current.entitlement(tenant, PROJECTS).await?;
    let plan = subscription.plan().plan.as_str().to_owned();
    let limit = limit.ok_or_else(|| refused(format!("the {plan} plan includes no projects")))?;
    Ok(move |used: i64| {
        let decision = limit.decide(Decimal::from(used), Decimal::ONE);
        match decision.is_allowed() {
            true => Ok(()),
            false => Err(refused(format!(
                "the {plan} plan allows {} projects; upgrade to pro for more",
                decision.limit().unwrap_or_default()
            ))),
        }
    })
}

fn refused(detail: String) -> Problem {
    Problem::new(ErrorKind::Forbidden, detail).with_code("plan_limit")
}
