//! The catalog the worked examples use.

use chrono::{DateTime, TimeZone, Utc};
use saas_billing::{
    Aggregation, BillingConfig, Catalog, Charge, Currency, Meter, MeterKey, Money, PlanId, PlanRef,
    PlanVersion, Product, ProductId, TierTable, dec,
};

pub(crate) fn usd(amount: saas_billing::Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

pub(crate) fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

pub(crate) fn plan(id: &str, version: u32) -> PlanRef {
    PlanRef::new(PlanId::new(id).unwrap(), version)
}

/// - `basic` v1: 30.00 USD a month; calls graduated (1,000 free, then
///   0.01); quotas 10,000 calls and 100 tokens a period; `export`; 3 seats.
/// - `basic` v2: 35.00 USD a month (published later).
/// - `pro` v1: 90.00 USD a month + 5.00 USD a seat; calls 0.005 each; `sso`.
/// - `payg` v1: calls 0.10 USD each, nothing else.
/// - `addons` v1, add-on prices: `storage` 10.00 USD a unit a month,
///   `support` 50.00 USD flat a month; metered on `calls`: `extra_calls`
///   0.01 USD a call, `call_audit` 0.002 USD a call.
pub(crate) fn catalog() -> Catalog {
    let app = ProductId::new("app").unwrap();
    let calls_tiers = TierTable::builder()
        .up_to(dec!(1000), dec!(0))
        .unbounded(dec!(0.01))
        .build()
        .unwrap();
    Catalog::builder()
        .product(Product::new(app.clone(), "App"))
        .meter(Meter::new(
            MeterKey::new("calls").unwrap(),
            Aggregation::Count,
        ))
        .meter(Meter::new(
            MeterKey::new("tokens").unwrap(),
            Aggregation::Sum,
        ))
        .plan(
            PlanVersion::builder(PlanId::new("basic").unwrap(), 1, app.clone())
                .recurring("base", "Basic", [Charge::flat(usd(dec!(30))).unwrap()])
                .metered(
                    "calls",
                    "API calls",
                    "calls",
                    [Charge::graduated(Currency::USD, calls_tiers)],
                )
                .quota("api_calls", "calls", dec!(10000))
                .quota("tokens", "tokens", dec!(100))
                .flag("export")
                .limit("seats", dec!(3))
                .build()
                .unwrap(),
        )
        .plan(
            PlanVersion::builder(PlanId::new("basic").unwrap(), 2, app.clone())
                .recurring("base", "Basic", [Charge::flat(usd(dec!(35))).unwrap()])
                .build()
                .unwrap(),
        )
        .plan(
            PlanVersion::builder(PlanId::new("pro").unwrap(), 1, app.clone())
                .recurring("base", "Pro", [Charge::flat(usd(dec!(90))).unwrap()])
                .per_seat(
                    "seats",
                    "Pro seats",
                    [Charge::per_unit(usd(dec!(5))).unwrap()],
                )
                .metered(
                    "calls",
                    "API calls",
                    "calls",
                    [Charge::per_unit(usd(dec!(0.005))).unwrap()],
                )
                .flag("sso")
                .build()
                .unwrap(),
        )
        .plan(
            PlanVersion::builder(PlanId::new("addons").unwrap(), 1, app.clone())
                .recurring(
                    "storage",
                    "Extra storage",
                    [Charge::per_unit(usd(dec!(10))).unwrap()],
                )
                .recurring(
                    "support",
                    "Priority support",
                    [Charge::flat(usd(dec!(50))).unwrap()],
                )
                .metered(
                    "extra_calls",
                    "Extra calls",
                    "calls",
                    [Charge::per_unit(usd(dec!(0.01))).unwrap()],
                )
                .metered(
                    "call_audit",
                    "Call audit",
                    "calls",
                    [Charge::per_unit(usd(dec!(0.002))).unwrap()],
                )
                .build()
                .unwrap(),
        )
        .plan(
            PlanVersion::builder(PlanId::new("payg").unwrap(), 1, app)
                .metered(
                    "calls",
                    "API calls",
                    "calls",
                    [Charge::per_unit(usd(dec!(0.10))).unwrap()],
                )
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

pub(crate) fn harness(start: DateTime<Utc>) -> saas_billing::testing::BillingHarness {
    saas_billing::testing::BillingHarness::new(catalog(), start, BillingConfig::default())
}
