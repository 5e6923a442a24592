//! A caller of the engine needs only `saas_billing::…` paths: the chrono
//! and saas_core types of the API are re-exported (no `chrono::` or
//! `saas_core::` path appears in this file).

use std::sync::Arc;

use saas_billing::{
    BillingConfig, BillingEngine, BillingStores, Catalog, Charge, Clock, Currency, DateTime,
    ErrorKind, ManualClock, Money, NewSubscription, PlanId, PlanRef, PlanVersion, Product,
    ProductId, SharedClock, SystemClock, TenantId, TimeDelta, TimeZone, Trial, Utc, dec,
};

#[tokio::test]
async fn engine_calls_need_only_saas_billing_paths() {
    let app = ProductId::new("app").unwrap();
    let catalog = Catalog::builder()
        .product(Product::new(app.clone(), "App"))
        .plan(
            PlanVersion::builder(PlanId::new("basic").unwrap(), 1, app)
                .recurring(
                    "base",
                    "Basic",
                    [Charge::flat(Money::new(dec!(30), Currency::USD)).unwrap()],
                )
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let start: DateTime<Utc> = Utc.with_ymd_and_hms(2024, 4, 1, 0, 0, 0).unwrap();
    let manual = ManualClock::new(start);
    let clock: SharedClock = Arc::new(manual.clone());
    assert_eq!(clock.now(), start);
    let config = BillingConfig::default().with_late_usage_grace(TimeDelta::hours(1));
    let engine = BillingEngine::new(Arc::new(catalog), BillingStores::in_memory(), clock)
        .with_config(config);

    let tenant: TenantId = TenantId::new();
    let basic = PlanRef::new(PlanId::new("basic").unwrap(), 1);
    let new = NewSubscription::new(tenant, basic, Currency::USD).trial(Trial::None);
    let sub = engine.create_subscription(new).await.unwrap();
    manual.set(Utc.with_ymd_and_hms(2024, 5, 1, 2, 0, 0).unwrap());
    engine.run_billing_cycle().await.unwrap();
    let invoices = engine.invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(invoices.len(), 1);
    assert!(invoices[0].is_finalized());
    // The production clock is there too.
    let system: SharedClock = Arc::new(SystemClock);
    assert!(system.now() > start);
    let kind: ErrorKind = Money::new(dec!(1), Currency::USD)
        .checked_add(Money::new(dec!(1), Currency::EUR))
        .unwrap_err()
        .kind();
    assert_eq!(kind, ErrorKind::InvalidInput);
}
