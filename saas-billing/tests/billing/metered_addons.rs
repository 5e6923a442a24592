//! Metered add-ons (issue 20): a metered price attached to a subscription
//! bills its meter's usage of the time it was attached, on the period's
//! invoice with the plan's lines; the invoice records the spans it billed,
//! so finalization and late usage re-rate them whatever is attached later.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use saas_billing::testing::BillingHarness;
use saas_billing::{
    AddOn, BillingConfig, BillingStores, ChangeDirection, ChangeTiming, Coupon, CouponDuration,
    CouponId, Currency, Decimal, ErrorKind, Invoice, InvoiceLine, LineKind, MeterKey,
    NewSubscription, PlanRef, PriceKey, ProrationPolicy, StaticTaxRates, SubscriptionId,
    TaxBehavior, TaxRate, TenantId, Trial, UsageEvent, dec,
};

use crate::fixtures::{at, catalog, plan, usd};
use crate::sql_stores::{pg_stores, sqlite_stores};

pub(crate) fn addon(price: &str, quantity: u32) -> AddOn {
    AddOn::new(plan("addons", 1), PriceKey::new(price).unwrap(), quantity)
}

pub(crate) fn immediate() -> ProrationPolicy {
    let now = ChangeTiming::ImmediateWithProration;
    ProrationPolicy::new(now, now)
}

pub(crate) fn harness(stores: BillingStores, policy: ProrationPolicy) -> BillingHarness {
    let config = BillingConfig::default().with_proration(policy);
    BillingHarness::with_stores(catalog(), at(2024, 4, 1, 0), config, stores)
}

pub(crate) async fn subscribe(h: &BillingHarness, tenant: TenantId, on: PlanRef) -> SubscriptionId {
    let new = NewSubscription::new(tenant, on, Currency::USD).trial(Trial::None);
    h.engine().create_subscription(new).await.unwrap().id()
}

pub(crate) async fn set(h: &BillingHarness, tenant: TenantId, sub: SubscriptionId, addon: AddOn) {
    h.engine().set_addon(tenant, sub, addon).await.unwrap();
}

/// Records `n` calls of `sub` at `t` (keys `{key}-0`…).
pub(crate) async fn calls(
    h: &BillingHarness,
    tenant: TenantId,
    sub: SubscriptionId,
    n: u32,
    t: DateTime<Utc>,
    key: &str,
) {
    let meter = MeterKey::new("calls").unwrap();
    let events: Vec<UsageEvent> = (0..n)
        .map(|i| UsageEvent::new(tenant, sub, meter.clone(), dec!(1), t, format!("{key}-{i}")))
        .collect();
    let out = h.engine().record_usage_batch(events).await.unwrap();
    assert!(out.iter().all(Result::is_ok), "{out:?}");
}

pub(crate) async fn invoice(
    h: &BillingHarness,
    tenant: TenantId,
    sub: SubscriptionId,
    n: usize,
) -> Invoice {
    h.engine().invoices(tenant, sub).await.unwrap().remove(n)
}

/// The add-on lines (usage and corrections) of `price`.
pub(crate) fn addon_lines<'i>(invoice: &'i Invoice, price: &str) -> Vec<&'i InvoiceLine> {
    invoice
        .lines
        .iter()
        .filter(|l| {
            matches!(
                l.kind,
                LineKind::AddOnUsage { .. } | LineKind::AddOnUsageCorrection { .. }
            ) && l.price.as_ref().is_some_and(|p| p.as_str() == price)
        })
        .collect()
}

/// `(quantity, amount, service start, service end)` of a line.
pub(crate) fn figures(line: &InvoiceLine) -> (Decimal, Decimal, DateTime<Utc>, DateTime<Utc>) {
    (
        line.quantity,
        line.amount.amount(),
        line.service_start,
        line.service_end,
    )
}

/// Attached April 16, detached April 25, immediately: of 600 April calls
/// only the 200 from April 16 00:00 (inclusive) to April 25 00:00
/// (exclusive) are billed, 200 × 0.01 = 2.00; April is 35.00 + 2.00.
/// May's usage, after the detach, is not billed: May is 35.00.
#[tokio::test]
async fn a_metered_addon_bills_only_the_usage_between_attach_and_detach() {
    let mut h = harness(BillingStores::in_memory(), immediate());
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant, plan("basic", 2)).await;
    h.set_time(at(2024, 4, 16, 0));
    let (s, outcome) = h
        .engine()
        .set_addon(tenant, sub, addon("extra_calls", 1))
        .await
        .unwrap();
    assert_eq!(outcome.direction, ChangeDirection::Upgrade);
    assert!(s.pending_lines().is_empty(), "usage bills it, no proration");
    h.set_time(at(2024, 4, 25, 0));
    let (_, outcome) = h
        .engine()
        .set_addon(tenant, sub, addon("extra_calls", 0))
        .await
        .unwrap();
    assert_eq!(outcome.direction, ChangeDirection::Downgrade);
    h.set_time(at(2024, 4, 30, 0));
    calls(&h, tenant, sub, 100, at(2024, 4, 10, 0), "a").await;
    calls(&h, tenant, sub, 1, at(2024, 4, 16, 0), "b").await;
    calls(&h, tenant, sub, 199, at(2024, 4, 20, 0), "c").await;
    calls(&h, tenant, sub, 1, at(2024, 4, 25, 0), "d").await;
    calls(&h, tenant, sub, 299, at(2024, 4, 28, 0), "e").await;
    h.advance_to(at(2024, 5, 2, 0)).await.unwrap();
    let april = invoice(&h, tenant, sub, 0).await;
    assert!(april.is_finalized());
    let lines = addon_lines(&april, "extra_calls");
    assert_eq!(lines.len(), 1);
    assert_eq!(
        figures(lines[0]),
        (
            dec!(200),
            dec!(2.00),
            at(2024, 4, 16, 0),
            at(2024, 4, 25, 0)
        )
    );
    assert_eq!(april.total, usd(dec!(37.00)));

    h.set_time(at(2024, 5, 10, 0));
    calls(&h, tenant, sub, 50, at(2024, 5, 5, 0), "f").await;
    h.advance_to(at(2024, 6, 2, 0)).await.unwrap();
    let may = invoice(&h, tenant, sub, 1).await;
    assert!(addon_lines(&may, "extra_calls").is_empty());
    assert_eq!(may.total, usd(dec!(35.00)));
}

/// With the default policy a detach waits for the period's end, so April
/// bills all usage from the attach on: 100 calls by April 20 (the preview
/// then shows 1.00), 50 more after the detach request, 1.50 in all. The
/// preview of April 30 is April's invoice; May bills no add-on usage.
#[tokio::test]
async fn a_detach_at_period_end_bills_the_period_out_and_the_preview_agrees() {
    let mut h = harness(BillingStores::in_memory(), ProrationPolicy::default());
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant, plan("basic", 2)).await;
    h.set_time(at(2024, 4, 16, 0));
    set(&h, tenant, sub, addon("extra_calls", 1)).await;
    h.set_time(at(2024, 4, 20, 0));
    calls(&h, tenant, sub, 100, at(2024, 4, 18, 0), "a").await;
    let preview = h.engine().upcoming_invoice(tenant, sub).await.unwrap();
    assert_eq!(
        figures(addon_lines(&preview, "extra_calls")[0]),
        (dec!(100), dec!(1.00), at(2024, 4, 16, 0), at(2024, 5, 1, 0))
    );
    assert_eq!(preview.total, usd(dec!(36.00)));
    let (s, outcome) = h
        .engine()
        .set_addon(tenant, sub, addon("extra_calls", 0))
        .await
        .unwrap();
    assert_eq!(outcome.timing, ChangeTiming::AtPeriodEnd);
    assert_eq!(s.scheduled_addons(), [addon("extra_calls", 0)]);
    h.set_time(at(2024, 4, 30, 0));
    calls(&h, tenant, sub, 50, at(2024, 4, 28, 0), "b").await;
    let preview = h.engine().upcoming_invoice(tenant, sub).await.unwrap();
    h.advance_to(at(2024, 5, 2, 0)).await.unwrap();
    let april = invoice(&h, tenant, sub, 0).await;
    assert_eq!(
        figures(addon_lines(&april, "extra_calls")[0]),
        (dec!(150), dec!(1.50), at(2024, 4, 16, 0), at(2024, 5, 1, 0))
    );
    assert_eq!(april.total, usd(dec!(36.50)));
    assert_eq!(preview.lines, april.lines);
    assert_eq!(preview.total, april.total);

    h.set_time(at(2024, 5, 4, 0));
    calls(&h, tenant, sub, 10, at(2024, 5, 3, 0), "c").await;
    h.advance_to(at(2024, 6, 2, 0)).await.unwrap();
    let may = invoice(&h, tenant, sub, 1).await;
    assert!(addon_lines(&may, "extra_calls").is_empty());
    assert_eq!(may.total, usd(dec!(35.00)));
}

/// The scenario of [`late_usage_in_an_addons_span_is_corrected_after_its_detach`],
/// on any stores: its April and May invoices.
async fn late_usage_scenario(stores: BillingStores) -> (Invoice, Invoice, Invoice) {
    let mut h = harness(stores, immediate());
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant, plan("basic", 2)).await;
    h.set_time(at(2024, 4, 16, 0));
    set(&h, tenant, sub, addon("extra_calls", 1)).await;
    h.set_time(at(2024, 4, 30, 0));
    calls(&h, tenant, sub, 100, at(2024, 4, 10, 0), "a").await;
    calls(&h, tenant, sub, 200, at(2024, 4, 20, 0), "b").await;
    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    // Within the 24 hours' grace: billed on April's invoice itself.
    h.set_time(at(2024, 5, 1, 12));
    calls(&h, tenant, sub, 10, at(2024, 4, 21, 0), "c").await;
    h.advance_to(at(2024, 5, 2, 0)).await.unwrap();
    let april = invoice(&h, tenant, sub, 0).await;
    h.set_time(at(2024, 5, 3, 0));
    set(&h, tenant, sub, addon("extra_calls", 0)).await;
    // After April's finalization: 5 late calls in its add-on span, 7
    // outside it; in May 20 calls before the detach, 30 after.
    h.set_time(at(2024, 5, 10, 0));
    calls(&h, tenant, sub, 5, at(2024, 4, 22, 0), "d").await;
    calls(&h, tenant, sub, 7, at(2024, 4, 12, 0), "e").await;
    calls(&h, tenant, sub, 20, at(2024, 5, 2, 0), "f").await;
    calls(&h, tenant, sub, 30, at(2024, 5, 5, 0), "g").await;
    h.advance_to(at(2024, 6, 2, 0)).await.unwrap();
    let april_after = invoice(&h, tenant, sub, 0).await;
    let may = invoice(&h, tenant, sub, 1).await;
    (april, april_after, may)
}

/// Attached April 16: April bills 200 calls plus 10 within the grace,
/// 2.10 (37.10). Detached May 3, then late April calls arrive: the 5 in
/// April's add-on span are corrected on May's invoice at the add-on's
/// price (+0.05), the 7 before the attach are not; May bills its 20
/// calls before the detach (0.20), not the 30 after: 35.25. April's
/// invoice does not change.
#[tokio::test]
async fn late_usage_in_an_addons_span_is_corrected_after_its_detach() {
    let (april, april_after, may) = late_usage_scenario(BillingStores::in_memory()).await;
    assert_eq!(
        figures(addon_lines(&april, "extra_calls")[0]),
        (dec!(210), dec!(2.10), at(2024, 4, 16, 0), at(2024, 5, 1, 0))
    );
    assert_eq!(april.total, usd(dec!(37.10)));
    assert_eq!(april_after, april);
    let lines = addon_lines(&may, "extra_calls");
    assert_eq!(lines.len(), 2);
    assert!(matches!(lines[0].kind, LineKind::AddOnUsage { .. }));
    assert_eq!(
        figures(lines[0]),
        (dec!(20), dec!(0.20), at(2024, 5, 1, 0), at(2024, 5, 3, 0))
    );
    assert_eq!(
        lines[1].kind,
        LineKind::AddOnUsageCorrection {
            meter: MeterKey::new("calls").unwrap(),
            plan: plan("addons", 1),
            period: april.period_index,
        }
    );
    assert_eq!(
        figures(lines[1]),
        (dec!(5), dec!(0.05), at(2024, 4, 16, 0), at(2024, 5, 1, 0))
    );
    assert_eq!(may.total, usd(dec!(35.25)));
}

/// The same invoices from SQLite and PostgreSQL stores as in memory
/// (ids and instants of creation aside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metered_addons_bill_alike_in_every_store() {
    fn lines(invoices: &(Invoice, Invoice, Invoice)) -> Vec<Vec<InvoiceLine>> {
        vec![
            invoices.0.lines.clone(),
            invoices.1.lines.clone(),
            invoices.2.lines.clone(),
        ]
    }
    let expected = lines(&late_usage_scenario(BillingStores::in_memory()).await);
    let (sqlite, cleanup) = sqlite_stores().await;
    assert_eq!(
        lines(&late_usage_scenario(sqlite.billing_stores()).await),
        expected
    );
    cleanup.run().await;
    if let Some((pg, cleanup)) = pg_stores("metered_addons_bill_alike_in_every_store").await {
        assert_eq!(
            lines(&late_usage_scenario(pg.billing_stores()).await),
            expected
        );
        cleanup.run().await;
    }
}

/// `basic` v1 rates calls graduated (1,000 free, then 0.01); `call_audit`
/// (0.002) is attached for all of April, `extra_calls` (0.01) from April
/// 16. Each price rates the usage it covers, independently: of 1,500
/// calls (1,000 on April 10, 500 on April 20) the plan bills 500 × 0.01 =
/// 5.00, `call_audit` 1,500 × 0.002 = 3.00, `extra_calls` 500 × 0.01 =
/// 5.00: 30.00 + 13.00 = 43.00.
#[tokio::test]
async fn the_plan_and_two_addons_on_one_meter_each_rate_the_usage_they_cover() {
    let mut h = harness(BillingStores::in_memory(), ProrationPolicy::default());
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant, plan("basic", 1)).await;
    set(&h, tenant, sub, addon("call_audit", 1)).await;
    h.set_time(at(2024, 4, 16, 0));
    set(&h, tenant, sub, addon("extra_calls", 1)).await;
    h.set_time(at(2024, 4, 30, 0));
    calls(&h, tenant, sub, 1000, at(2024, 4, 10, 0), "a").await;
    calls(&h, tenant, sub, 500, at(2024, 4, 20, 0), "b").await;
    h.advance_to(at(2024, 5, 2, 0)).await.unwrap();
    let april = invoice(&h, tenant, sub, 0).await;
    let plan_line = april
        .lines
        .iter()
        .find(|l| matches!(l.kind, LineKind::Usage { .. }))
        .unwrap();
    assert_eq!(
        (plan_line.quantity, plan_line.amount),
        (dec!(1500), usd(dec!(5.00)))
    );
    assert_eq!(
        figures(addon_lines(&april, "call_audit")[0]),
        (dec!(1500), dec!(3.00), at(2024, 4, 1, 0), at(2024, 5, 1, 0))
    );
    assert_eq!(
        figures(addon_lines(&april, "extra_calls")[0]),
        (dec!(500), dec!(5.00), at(2024, 4, 16, 0), at(2024, 5, 1, 0))
    );
    assert_eq!(april.total, usd(dec!(43.00)));
}

/// Attached April 5, detached April 10, attached again April 20: each
/// span is rated on its own (10 calls, 0.10 each); May, attached all
/// along, bills the whole month, a zero line without usage.
#[tokio::test]
async fn a_reattach_opens_a_second_span_and_the_next_period_bills_in_whole() {
    let mut h = harness(BillingStores::in_memory(), immediate());
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant, plan("basic", 2)).await;
    for (day, quantity) in [(5, 1), (10, 0), (20, 1)] {
        h.set_time(at(2024, 4, day, 0));
        set(&h, tenant, sub, addon("extra_calls", quantity)).await;
    }
    h.set_time(at(2024, 4, 30, 0));
    for (day, key) in [(7, "a"), (15, "b"), (25, "c")] {
        calls(&h, tenant, sub, 10, at(2024, 4, day, 0), key).await;
    }
    h.advance_to(at(2024, 6, 2, 0)).await.unwrap();
    let april = invoice(&h, tenant, sub, 0).await;
    let spans: Vec<_> = addon_lines(&april, "extra_calls")
        .into_iter()
        .map(figures)
        .collect();
    assert_eq!(
        spans,
        [
            (dec!(10), dec!(0.10), at(2024, 4, 5, 0), at(2024, 4, 10, 0)),
            (dec!(10), dec!(0.10), at(2024, 4, 20, 0), at(2024, 5, 1, 0)),
        ]
    );
    assert_eq!(april.total, usd(dec!(35.20)));
    let may = invoice(&h, tenant, sub, 1).await;
    let spans: Vec<_> = addon_lines(&may, "extra_calls")
        .into_iter()
        .map(figures)
        .collect();
    assert_eq!(
        spans,
        [(dec!(0), dec!(0.00), at(2024, 5, 1, 0), at(2024, 6, 1, 0))]
    );
}

/// With the default policy, re-attaching on April 22 cancels the detach
/// scheduled on April 20: the span stays open and May bills in whole.
#[tokio::test]
async fn cancelling_a_scheduled_detach_keeps_the_span_open() {
    let mut h = harness(BillingStores::in_memory(), ProrationPolicy::default());
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant, plan("basic", 2)).await;
    for (day, quantity) in [(16, 1), (20, 0), (22, 1)] {
        h.set_time(at(2024, 4, day, 0));
        set(&h, tenant, sub, addon("extra_calls", quantity)).await;
    }
    let s = h.engine().subscription(tenant, sub).await.unwrap();
    assert!(s.scheduled_addons().is_empty());
    let spans = s.metered_addon_spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(
        (spans[0].from, spans[0].to),
        (Some(at(2024, 4, 16, 0)), None)
    );
    h.set_time(at(2024, 5, 20, 0));
    calls(&h, tenant, sub, 30, at(2024, 5, 10, 0), "a").await;
    h.advance_to(at(2024, 6, 2, 0)).await.unwrap();
    let may = invoice(&h, tenant, sub, 1).await;
    assert_eq!(
        figures(addon_lines(&may, "extra_calls")[0]),
        (dec!(30), dec!(0.30), at(2024, 5, 1, 0), at(2024, 6, 1, 0))
    );
}

/// A coupon scoped to the add-on's price (50 %) and 19 % VAT apply to its
/// usage line as to any line: 1,000 calls are 10.00, 5.00 after the
/// coupon; (35.00 + 5.00) × 1.19 = 47.60.
#[tokio::test]
async fn metered_addon_lines_are_discounted_and_taxed() {
    let vat = TaxRate::new("DE", "VAT", dec!(19), TaxBehavior::Exclusive).unwrap();
    let table = StaticTaxRates::new().default_rates([vat]);
    let mut h = harness(BillingStores::in_memory(), ProrationPolicy::default())
        .map_engine(|e| e.with_tax_resolver(Arc::new(table)));
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant, plan("basic", 2)).await;
    let id = CouponId::new("calls-half").unwrap();
    let coupon = Coupon::percent(id.clone(), "Calls half price", dec!(50))
        .unwrap()
        .with_prices([PriceKey::new("extra_calls").unwrap()])
        .unwrap()
        .with_duration(CouponDuration::Forever)
        .unwrap();
    h.engine().create_coupon(coupon).await.unwrap();
    h.engine().redeem_coupon(tenant, sub, &id).await.unwrap();
    set(&h, tenant, sub, addon("extra_calls", 1)).await;
    h.set_time(at(2024, 4, 30, 0));
    calls(&h, tenant, sub, 1000, at(2024, 4, 10, 0), "a").await;
    h.advance_to(at(2024, 5, 2, 0)).await.unwrap();
    let april = invoice(&h, tenant, sub, 0).await;
    let line = addon_lines(&april, "extra_calls")[0];
    assert_eq!(line.amount, usd(dec!(5.00)));
    assert_eq!(line.discounts[0].amount, usd(dec!(5.00)));
    assert_eq!(line.taxes[0].amount, usd(dec!(0.95)));
    assert_eq!(april.total, usd(dec!(47.60)));
}

/// One tenant's metered add-on bills only its own usage; another tenant's
/// subscription without it bills none, and cannot be given it through the
/// first tenant.
#[tokio::test]
async fn metered_addons_are_per_tenant() {
    let mut h = harness(BillingStores::in_memory(), ProrationPolicy::default());
    let (a, b) = (TenantId::new(), TenantId::new());
    let sub_a = subscribe(&h, a, plan("basic", 2)).await;
    let sub_b = subscribe(&h, b, plan("basic", 2)).await;
    set(&h, a, sub_a, addon("extra_calls", 1)).await;
    let err = h
        .engine()
        .set_addon(a, sub_b, addon("extra_calls", 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    h.set_time(at(2024, 4, 30, 0));
    calls(&h, a, sub_a, 100, at(2024, 4, 10, 0), "k").await;
    calls(&h, b, sub_b, 300, at(2024, 4, 10, 0), "k").await;
    h.advance_to(at(2024, 5, 2, 0)).await.unwrap();
    let april_a = invoice(&h, a, sub_a, 0).await;
    assert_eq!(
        figures(addon_lines(&april_a, "extra_calls")[0]),
        (dec!(100), dec!(1.00), at(2024, 4, 1, 0), at(2024, 5, 1, 0))
    );
    assert_eq!(april_a.total, usd(dec!(36.00)));
    let april_b = invoice(&h, b, sub_b, 0).await;
    assert!(addon_lines(&april_b, "extra_calls").is_empty());
    assert_eq!(april_b.total, usd(dec!(35.00)));
}
