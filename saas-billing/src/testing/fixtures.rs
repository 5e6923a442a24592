//! Small catalog and records shared by the suites.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeZone, Utc};
use saas_core::TenantId;

use crate::{Aggregation, Meter, MeterKey};
use crate::{
    Catalog, Charge, Currency, Invoice, InvoiceId, InvoiceStatus, Money, NewSubscription, PlanId,
    PlanRef, PlanVersion, Product, ProductId, Subscription, SubscriptionId, Trial, UsageEvent,
    UsageRecord, dec,
};
use crate::{Finalization, InvoiceLine, IssuerId, LineKind, PriceKey};

/// 2024-01-01T00:00:00Z, where the fixtures start.
pub fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
}

/// A catalog with plan `basic` v1 (10.00 USD a month), add-on plan
/// `addons` v1 (`storage`, 5.00 USD a unit a month; `extra_calls`, 0.01
/// USD a call) and meter `calls`.
pub fn catalog() -> Catalog {
    let app = ProductId::new("app").unwrap();
    Catalog::builder()
        .product(Product::new(app.clone(), "App"))
        .meter(Meter::new(
            MeterKey::new("calls").unwrap(),
            Aggregation::Count,
        ))
        .plan(
            PlanVersion::builder(PlanId::new("basic").unwrap(), 1, app.clone())
                .recurring(
                    "base",
                    "Basic",
                    [Charge::flat(Money::new(dec!(10), Currency::USD)).unwrap()],
                )
                .build()
                .unwrap(),
        )
        .plan(
            PlanVersion::builder(PlanId::new("addons").unwrap(), 1, app)
                .recurring(
                    "storage",
                    "Extra storage",
                    [Charge::per_unit(Money::new(dec!(5), Currency::USD)).unwrap()],
                )
                .metered(
                    "extra_calls",
                    "Extra calls",
                    "calls",
                    [Charge::per_unit(Money::new(dec!(0.01), Currency::USD)).unwrap()],
                )
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

/// A new active `basic` subscription of `tenant` created at `at`.
pub fn subscription(tenant: TenantId, at: DateTime<Utc>) -> Subscription {
    let plan = PlanRef::new(PlanId::new("basic").unwrap(), 1);
    let new = NewSubscription::new(tenant, plan, Currency::USD).trial(Trial::None);
    Subscription::create(new, &catalog(), at).unwrap()
}

/// A usage record of one `calls` event in `period`.
pub fn usage(
    tenant: TenantId,
    subscription: SubscriptionId,
    key: &str,
    period: i64,
) -> UsageRecord {
    UsageRecord {
        event: UsageEvent::new(
            tenant,
            subscription,
            MeterKey::new("calls").unwrap(),
            dec!(1),
            start(),
            key,
        ),
        period,
    }
}

/// An empty draft invoice for `subscription`'s `period`.
pub fn draft(tenant: TenantId, subscription: SubscriptionId, period: i64) -> Invoice {
    Invoice {
        id: InvoiceId::new(),
        tenant_id: tenant,
        subscription_id: subscription,
        period_index: period,
        period_start: start(),
        period_end: start(),
        plan: PlanRef::new(PlanId::new("basic").unwrap(), 1),
        currency: Currency::USD,
        status: InvoiceStatus::Draft,
        lines: Vec::new(),
        total: Money::zero(Currency::USD),
        created_at: start(),
        finalize_after: start(),
        finalized_at: None,
        number: None,
        payment: None,
    }
}

/// A licensed line of `amount` USD.
pub fn line(amount: rust_decimal::Decimal) -> InvoiceLine {
    InvoiceLine {
        kind: LineKind::Licensed,
        description: "Basic".to_owned(),
        price: Some(PriceKey::new("base").unwrap()),
        quantity: dec!(1),
        full_period_amount: None,
        components: Vec::new(),
        proration: None,
        service_start: start(),
        service_end: start(),
        amount: Money::new(amount, Currency::USD),
        taxes: Vec::new(),
        discounts: Vec::new(),
    }
}

/// An issuer of its own (`test-` and a random suffix), so that tests
/// sharing a store never share a sequence.
pub fn issuer() -> IssuerId {
    IssuerId::new(format!("test-{}", uuid::Uuid::new_v4().simple())).unwrap()
}

/// A finalization with `lines` at `at`, numbered by `issuer`.
pub fn finalization(lines: Vec<InvoiceLine>, at: DateTime<Utc>, issuer: &IssuerId) -> Finalization {
    Finalization::new(lines, at, issuer.clone())
}
