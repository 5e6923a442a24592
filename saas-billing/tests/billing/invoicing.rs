//! Billing cycles over time, racing runs, quotas and domain events.

use saas_billing::{
    BillingEvent, Currency, IngestOutcome, LineKind, MeterKey, NewSubscription, PlanChange,
    SubscriptionStatus, Trial, UsageEvent, dec,
};
use saas_core::TenantId;

use crate::fixtures::{at, harness, plan, usd};

#[tokio::test]
async fn anchored_on_jan_31_through_a_leap_year() {
    let mut h = harness(at(2024, 1, 31, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD).trial(Trial::None);
    let sub = h.engine().create_subscription(new).await.unwrap();
    h.advance_months(13).await.unwrap();
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    let bounds: Vec<_> = invoices
        .iter()
        .map(|i| (i.period_start, i.period_end))
        .collect();
    assert_eq!(invoices.len(), 13);
    assert_eq!(bounds[0], (at(2024, 1, 31, 0), at(2024, 2, 29, 0)));
    assert_eq!(bounds[1], (at(2024, 2, 29, 0), at(2024, 3, 31, 0)));
    assert_eq!(bounds[2], (at(2024, 3, 31, 0), at(2024, 4, 30, 0)));
    assert_eq!(bounds[11], (at(2024, 12, 31, 0), at(2025, 1, 31, 0)));
    assert_eq!(bounds[12], (at(2025, 1, 31, 0), at(2025, 2, 28, 0)));
    assert!(invoices.iter().all(|i| i.total == usd(dec!(30.00))));
    // Each draft is finalized on the next run after its grace.
    assert!(invoices[..12].iter().all(|i| i.is_finalized()));
    assert!(!invoices[12].is_finalized());
    let finalized = h
        .events()
        .iter()
        .filter(|e| matches!(e, BillingEvent::InvoiceFinalized { .. }))
        .count();
    assert_eq!(finalized, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runs_for_one_period_make_one_invoice() {
    let h = harness(at(2024, 1, 1, 0));
    let tenant = TenantId::new();
    let sub = h
        .engine()
        .create_subscription(NewSubscription::new(
            tenant,
            plan("basic", 1),
            Currency::USD,
        ))
        .await
        .unwrap();
    h.set_time(at(2024, 2, 1, 0));
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let engine = h.engine().clone();
            tokio::spawn(async move { engine.run_billing_cycle().await })
        })
        .collect();
    let mut created = 0;
    for run in runs {
        created += run.await.unwrap().unwrap().drafts_created.len();
    }
    assert_eq!(created, 1);
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0].total, usd(dec!(30.00)));
    let sub = h.engine().subscription(tenant, sub.id()).await.unwrap();
    assert_eq!(sub.current_period_index(), 1);
}

#[tokio::test]
async fn quota_exhausted_exactly_at_the_limit() {
    let h = harness(at(2024, 1, 1, 0));
    let tenant = TenantId::new();
    let sub = h
        .engine()
        .create_subscription(NewSubscription::new(
            tenant,
            plan("basic", 1),
            Currency::USD,
        ))
        .await
        .unwrap();
    let checker = h.engine().entitlements();
    // 10,000 API calls a period.
    assert!(
        checker
            .try_consume(tenant, "api_calls", dec!(9999))
            .is_allowed()
    );
    let last = checker.try_consume(tenant, "api_calls", dec!(1));
    assert!(last.is_allowed());
    assert_eq!(last.remaining(), Some(dec!(0)));
    let over = checker.check(tenant, "api_calls", dec!(1));
    assert!(!over.is_allowed());
    assert_eq!(over.remaining(), Some(dec!(0)));
    assert_eq!(over.limit(), Some(dec!(10000)));
    // Static limit and flags.
    assert!(h.engine().check(tenant, "seats", dec!(3)).is_allowed());
    assert!(!h.engine().check(tenant, "seats", dec!(4)).is_allowed());
    assert!(h.engine().check(tenant, "export", dec!(1)).is_allowed());
    assert!(!h.engine().check(tenant, "sso", dec!(1)).is_allowed());
    // Recorded usage: 100 tokens a period; reaching 100 is fine, 101 is not.
    let tokens = |v, key: &str| {
        UsageEvent::new(
            tenant,
            sub.id(),
            MeterKey::new("tokens").unwrap(),
            v,
            at(2024, 1, 1, 0),
            key,
        )
    };
    h.engine()
        .record_usage(tokens(dec!(60), "t1"))
        .await
        .unwrap();
    h.engine()
        .record_usage(tokens(dec!(40), "t2"))
        .await
        .unwrap();
    assert!(
        !h.events()
            .iter()
            .any(|e| matches!(e, BillingEvent::QuotaExceeded { .. }))
    );
    assert_eq!(
        h.engine().check(tenant, "tokens", dec!(0)).remaining(),
        Some(dec!(0))
    );
    h.engine()
        .record_usage(tokens(dec!(1), "t3"))
        .await
        .unwrap();
    let exceeded: Vec<_> = h
        .events()
        .into_iter()
        .filter(|e| matches!(e, BillingEvent::QuotaExceeded { .. }))
        .collect();
    assert_eq!(exceeded.len(), 1);
    // The next period starts afresh.
    h.set_time(at(2024, 2, 1, 0));
    assert_eq!(
        checker.check(tenant, "api_calls", dec!(1)).remaining(),
        Some(dec!(9999))
    );
}

#[tokio::test]
async fn harness_records_domain_events_in_order() {
    let mut h = harness(at(2024, 1, 1, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD).trial(Trial::Days(7));
    let sub = h.engine().create_subscription(new).await.unwrap();
    h.advance_to(at(2024, 1, 8, 0)).await.unwrap();
    h.set_time(at(2024, 1, 20, 0));
    h.engine()
        .change_plan(
            tenant,
            sub.id(),
            saas_billing::PlanChange {
                plan: plan("pro", 1),
                seats: 1,
            },
        )
        .await
        .unwrap();
    h.engine()
        .cancel(
            tenant,
            sub.id(),
            saas_billing::CancelMode::Immediately { prorate: true },
        )
        .await
        .unwrap();
    h.advance_to(at(2024, 1, 22, 0)).await.unwrap();
    let kinds: Vec<&str> = h
        .events()
        .iter()
        .map(|e| match e {
            BillingEvent::SubscriptionCreated { .. } => "created",
            BillingEvent::SubscriptionStatusChanged {
                to: SubscriptionStatus::Active,
                ..
            } => "active",
            BillingEvent::SubscriptionChanged { .. } => "changed",
            BillingEvent::SubscriptionCanceled { .. } => "canceled",
            BillingEvent::InvoiceFinalized { .. } => "finalized",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["created", "active", "changed", "canceled", "finalized"]
    );
    // Final invoice: Jan 8 → Feb 8 is 31 days (2,678,400 s). Basic 30.00 in
    // full; upgrade on Jan 20 with 19 days (1,641,600 s) left: −18.39 and
    // +55.16 +3.06; cancel on Jan 20 too, crediting pro's 19 days: −55.16 −3.06.
    let invoice = &h.engine().invoices(tenant, sub.id()).await.unwrap()[0];
    let amounts: Vec<_> = invoice.lines.iter().map(|l| l.amount.amount()).collect();
    assert_eq!(
        amounts,
        [
            dec!(30.00),
            dec!(-18.39),
            dec!(55.16),
            dec!(3.06),
            dec!(-55.16),
            dec!(-3.06),
            dec!(0.00)
        ]
    );
    assert_eq!(invoice.total, usd(dec!(11.61)));
    assert_eq!(invoice.period_end, at(2024, 1, 20, 0));
}

#[tokio::test]
async fn upcoming_invoice_previews_the_open_period_without_storing_it() {
    let h = harness(at(2024, 1, 1, 0));
    let tenant = TenantId::new();
    let sub = h
        .engine()
        .create_subscription(
            NewSubscription::new(tenant, plan("pro", 1), Currency::USD).trial(Trial::None),
        )
        .await
        .unwrap();
    h.set_time(at(2024, 1, 15, 0));
    for n in 0..200 {
        let call = UsageEvent::new(
            tenant,
            sub.id(),
            MeterKey::new("calls").unwrap(),
            dec!(1),
            at(2024, 1, 14, 0),
            format!("call-{n}"),
        );
        h.engine().record_usage(call).await.unwrap();
    }
    // 90.00 base + 1 seat × 5.00 + 200 calls × 0.005.
    let preview = h.engine().upcoming_invoice(tenant, sub.id()).await.unwrap();
    assert_eq!(preview.total, usd(dec!(96.00)));
    assert_eq!(
        (preview.period_start, preview.period_end),
        (at(2024, 1, 1, 0), at(2024, 2, 1, 0))
    );
    assert!(!preview.is_finalized());
    assert!(
        h.engine()
            .invoices(tenant, sub.id())
            .await
            .unwrap()
            .is_empty()
    );

    // Another tenant cannot preview it.
    let other = h.engine().upcoming_invoice(TenantId::new(), sub.id()).await;
    assert!(matches!(
        other,
        Err(saas_billing::BillingError::NotFound { .. })
    ));

    // The period's real invoice, when the period ends, bills what the
    // preview showed.
    h.set_time(at(2024, 2, 1, 0));
    h.engine().run_billing_cycle().await.unwrap();
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0].total, preview.total);
    assert_eq!(invoices[0].lines, preview.lines);
}

/// A late event for April, finalized on `payg` (0.10 a call), arrives in
/// May after an upgrade to `pro` (0.005 a call): the correction on May's
/// invoice is priced on April's plan — 11 calls 1.10 − 10 calls 1.00 =
/// 0.10 — not on pro's (0.06 − 0.05 = 0.01).
#[tokio::test]
async fn late_usage_corrections_use_the_late_periods_plan() {
    let mut h = harness(at(2024, 4, 1, 0));
    let tenant = TenantId::new();
    let sub = h
        .engine()
        .create_subscription(NewSubscription::new(tenant, plan("payg", 1), Currency::USD))
        .await
        .unwrap();
    let calls = MeterKey::new("calls").unwrap();
    let call = |t, key: &str| UsageEvent::new(tenant, sub.id(), calls.clone(), dec!(1), t, key);
    h.set_time(at(2024, 4, 15, 0));
    for i in 0..10 {
        let event = call(at(2024, 4, 15, 0), &format!("apr-{i}"));
        h.engine().record_usage(event).await.unwrap();
    }
    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    h.advance_to(at(2024, 5, 2, 0)).await.unwrap();
    let april = &h.engine().invoices(tenant, sub.id()).await.unwrap()[0];
    assert!(april.is_finalized());
    assert_eq!(april.total, usd(dec!(1.00)));
    h.set_time(at(2024, 5, 5, 0));
    let pro = PlanChange {
        plan: plan("pro", 1),
        seats: 1,
    };
    h.engine().change_plan(tenant, sub.id(), pro).await.unwrap();
    h.set_time(at(2024, 5, 10, 0));
    let late = call(at(2024, 4, 20, 0), "apr-late");
    assert_eq!(
        h.engine().record_usage(late).await.unwrap(),
        IngestOutcome::Recorded { billed_in: 1 }
    );
    h.advance_to(at(2024, 6, 1, 0)).await.unwrap();
    let may = &h.engine().invoices(tenant, sub.id()).await.unwrap()[1];
    let corrections: Vec<_> = may
        .lines
        .iter()
        .filter(|l| matches!(l.kind, LineKind::UsageCorrection { .. }))
        .map(|l| (l.kind.clone(), l.quantity, l.amount))
        .collect();
    assert_eq!(
        corrections,
        [(
            LineKind::UsageCorrection {
                meter: calls.clone(),
                period: 0
            },
            dec!(1),
            usd(dec!(0.10))
        )]
    );
}

/// The engine's default rounding is half-even (documented on
/// `BillingConfig` and in the README): 1001 units of a volume tier at
/// 0.005 USD are exactly 5.005 USD, billed 5.00 by default and 5.01 with
/// half-up.
#[tokio::test]
async fn default_rounding_is_half_even_on_a_volume_tie() {
    use saas_billing::{
        Aggregation, BillingConfig, Catalog, Charge, Meter, PlanId, PlanVersion, Product,
        ProductId, RoundingMode, TierTable, testing::BillingHarness,
    };

    async fn bill(config: BillingConfig) -> saas_billing::Money {
        let app = ProductId::new("app").unwrap();
        let tiers = TierTable::builder()
            .up_to(dec!(1000), dec!(0.006))
            .unbounded(dec!(0.005))
            .build()
            .unwrap();
        let catalog = Catalog::builder()
            .product(Product::new(app.clone(), "App"))
            .meter(Meter::new(
                MeterKey::new("units").unwrap(),
                Aggregation::Sum,
            ))
            .plan(
                PlanVersion::builder(PlanId::new("volume").unwrap(), 1, app)
                    .metered(
                        "units",
                        "Units",
                        "units",
                        [Charge::volume(Currency::USD, tiers)],
                    )
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let mut h = BillingHarness::new(catalog, at(2024, 4, 1, 0), config);
        let tenant = TenantId::new();
        let new = NewSubscription::new(tenant, plan("volume", 1), Currency::USD).trial(Trial::None);
        let sub = h.engine().create_subscription(new).await.unwrap();
        h.set_time(at(2024, 4, 10, 0));
        let units = UsageEvent::new(
            tenant,
            sub.id(),
            MeterKey::new("units").unwrap(),
            dec!(1001),
            at(2024, 4, 10, 0),
            "u1",
        );
        h.engine().record_usage(units).await.unwrap();
        h.advance_to(at(2024, 5, 3, 0)).await.unwrap();
        let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
        assert_eq!(invoices.len(), 1);
        assert!(invoices[0].is_finalized());
        invoices[0].total
    }

    assert_eq!(BillingConfig::default().rounding, RoundingMode::HalfEven);
    let default = bill(BillingConfig::default()).await;
    assert_eq!(default.to_string(), "5.00 USD");
    let half_up = bill(BillingConfig::default().with_rounding(RoundingMode::HalfUp)).await;
    assert_eq!(half_up.to_string(), "5.01 USD");
}

/// A subscription more than `MAX_STEPS_PER_SUBSCRIPTION` periods behind:
/// the run says so in `periods_left`, and the next run catches up.
#[tokio::test]
async fn a_cycle_that_stops_early_reports_the_periods_left() {
    use saas_billing::{
        Cadence, Catalog, Charge, MAX_STEPS_PER_SUBSCRIPTION, PlanId, PlanVersion, Product,
        ProductId, testing::BillingHarness,
    };

    let app = ProductId::new("app").unwrap();
    let catalog = Catalog::builder()
        .product(Product::new(app.clone(), "App"))
        .plan(
            PlanVersion::builder(PlanId::new("daily").unwrap(), 1, app)
                .cadence(Cadence::daily())
                .recurring("base", "Daily", [Charge::flat(usd(dec!(1))).unwrap()])
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let start = at(2000, 1, 1, 0);
    let mut h = BillingHarness::new(catalog, start, saas_billing::BillingConfig::default());
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("daily", 1), Currency::USD).trial(Trial::None);
    let sub = h.engine().create_subscription(new).await.unwrap();
    let behind = i64::try_from(MAX_STEPS_PER_SUBSCRIPTION).unwrap() + 5;
    let later = start + chrono::TimeDelta::days(behind);

    let first = h.advance_to(later).await.unwrap();
    assert_eq!(first.drafts_created.len(), MAX_STEPS_PER_SUBSCRIPTION);
    assert_eq!(first.periods_left, [(tenant, sub.id())]);
    assert!(!first.is_complete());

    let second = h.engine().run_billing_cycle().await.unwrap();
    assert_eq!(second.drafts_created.len(), 5);
    assert!(second.periods_left.is_empty());
    assert!(second.is_complete());
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(invoices.len(), MAX_STEPS_PER_SUBSCRIPTION + 5);
}
