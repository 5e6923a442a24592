//! Add-ons (issue 20): attached, changed and detached mid-period with the
//! proration policy, billed in whole from the next period, taxed and
//! discounted as any line, refused clearly where they cannot be billed.

use std::sync::Arc;

use saas_billing::testing::BillingHarness;
use saas_billing::{
    AddOn, BillingConfig, CancelMode, ChangeDirection, ChangeTiming, Coupon, CouponDuration,
    CouponId, Currency, ErrorKind, Invoice, LineKind, NewSubscription, PriceKey, ProrationPolicy,
    StaticTaxRates, SubscriptionId, TaxBehavior, TaxRate, TenantId, Trial, dec,
};

use crate::fixtures::{at, catalog, plan, usd};

fn addon(price: &str, quantity: u32) -> AddOn {
    AddOn::new(plan("addons", 1), PriceKey::new(price).unwrap(), quantity)
}

fn harness_with(policy: ProrationPolicy) -> BillingHarness {
    BillingHarness::new(
        catalog(),
        at(2024, 4, 1, 0),
        BillingConfig::default().with_proration(policy),
    )
}

async fn subscribe(h: &BillingHarness, tenant: TenantId) -> SubscriptionId {
    let new = NewSubscription::new(tenant, plan("basic", 2), Currency::USD).trial(Trial::None);
    h.engine().create_subscription(new).await.unwrap().id()
}

/// `(kind, price, amount)` of each line with a non-zero amount.
fn lines(invoice: &Invoice) -> Vec<(LineKind, String, saas_billing::Decimal)> {
    invoice
        .lines
        .iter()
        .filter(|l| !l.amount.amount().is_zero())
        .map(|l| {
            let price = l.price.as_ref().map(|p| p.to_string()).unwrap_or_default();
            (l.kind.clone(), price, l.amount.amount())
        })
        .collect()
}

async fn invoice(h: &BillingHarness, tenant: TenantId, sub: SubscriptionId, n: usize) -> Invoice {
    h.engine().invoices(tenant, sub).await.unwrap().remove(n)
}

/// `basic` v2 (35.00 a month) from April 1, with immediate prorated
/// changes both ways:
/// - April 16 (15 of 30 days left): 2 × storage (20.00 a month)
///   attached, +10.00; April bills 35.00 + 10.00 = 45.00.
/// - May bills the add-on in whole: 35.00 + 20.00; detached May 11
///   (21 of 31 days left): −20.00 × 21/31 = −13.548… → −13.55; May is
///   41.45.
/// - June 16 (15 of 30 left): 1 × storage, +5.00; June 21 (10 of 30
///   left): to 3, −10.00 × 1/3 → −3.33 and +30.00 × 1/3 → +10.00; June
///   is 35.00 + 5.00 − 3.33 + 10.00 = 46.67.
/// - July bills 3 × storage in whole: 35.00 + 30.00 = 65.00.
#[tokio::test]
async fn addons_attached_changed_and_detached_mid_period_are_prorated_exactly() {
    let immediate = ChangeTiming::ImmediateWithProration;
    let mut h = harness_with(ProrationPolicy::new(immediate, immediate));
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant).await;

    h.set_time(at(2024, 4, 16, 0));
    let (s, outcome) = h
        .engine()
        .set_addon(tenant, sub, addon("storage", 2))
        .await
        .unwrap();
    assert_eq!(outcome.direction, ChangeDirection::Upgrade);
    assert_eq!(s.addons(), [addon("storage", 2)]);
    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    let april = invoice(&h, tenant, sub, 0).await;
    assert_eq!(
        lines(&april),
        [
            (LineKind::Licensed, "base".into(), dec!(35.00)),
            (LineKind::ProrationDebit, "storage".into(), dec!(10.00)),
        ]
    );
    assert_eq!(april.total, usd(dec!(45.00)));

    h.set_time(at(2024, 5, 11, 0));
    let (s, outcome) = h
        .engine()
        .set_addon(tenant, sub, addon("storage", 0))
        .await
        .unwrap();
    assert_eq!(outcome.direction, ChangeDirection::Downgrade);
    assert!(s.addons().is_empty());
    h.advance_to(at(2024, 6, 1, 0)).await.unwrap();
    let may = invoice(&h, tenant, sub, 1).await;
    assert_eq!(
        lines(&may),
        [
            (LineKind::Licensed, "base".into(), dec!(35.00)),
            (LineKind::Licensed, "storage".into(), dec!(20.00)),
            (LineKind::ProrationCredit, "storage".into(), dec!(-13.55)),
        ]
    );
    assert_eq!(may.total, usd(dec!(41.45)));

    h.set_time(at(2024, 6, 16, 0));
    h.engine()
        .set_addon(tenant, sub, addon("storage", 1))
        .await
        .unwrap();
    h.set_time(at(2024, 6, 21, 0));
    h.engine()
        .set_addon(tenant, sub, addon("storage", 3))
        .await
        .unwrap();
    h.advance_to(at(2024, 7, 1, 0)).await.unwrap();
    let june = invoice(&h, tenant, sub, 2).await;
    assert_eq!(
        lines(&june),
        [
            (LineKind::Licensed, "base".into(), dec!(35.00)),
            (LineKind::ProrationDebit, "storage".into(), dec!(5.00)),
            (LineKind::ProrationCredit, "storage".into(), dec!(-3.33)),
            (LineKind::ProrationDebit, "storage".into(), dec!(10.00)),
        ]
    );
    assert_eq!(june.total, usd(dec!(46.67)));

    h.advance_to(at(2024, 8, 1, 0)).await.unwrap();
    let july = invoice(&h, tenant, sub, 3).await;
    assert_eq!(july.total, usd(dec!(65.00)));
    assert_eq!(july.lines[1].quantity, dec!(3));
}

/// With the default policy a detach is a downgrade at the period's end:
/// the period keeps the add-on in whole, the next one is without it.
#[tokio::test]
async fn a_detach_at_period_end_bills_the_period_in_whole() {
    let mut h = harness_with(ProrationPolicy::default());
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant).await;
    h.set_time(at(2024, 4, 16, 0));
    h.engine()
        .set_addon(tenant, sub, addon("support", 1))
        .await
        .unwrap();
    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    h.set_time(at(2024, 5, 11, 0));
    let (s, outcome) = h
        .engine()
        .set_addon(tenant, sub, addon("support", 0))
        .await
        .unwrap();
    assert_eq!(outcome.timing, ChangeTiming::AtPeriodEnd);
    assert_eq!(s.addons(), [addon("support", 1)]);
    assert_eq!(s.scheduled_addons(), [addon("support", 0)]);
    h.advance_to(at(2024, 7, 1, 0)).await.unwrap();
    // April: 35.00 + 50.00 × 15/30; May: 35.00 + 50.00; June: 35.00.
    let totals: Vec<_> = h
        .engine()
        .invoices(tenant, sub)
        .await
        .unwrap()
        .iter()
        .map(|i| i.total)
        .collect();
    assert_eq!(
        totals,
        [usd(dec!(60.00)), usd(dec!(85.00)), usd(dec!(35.00))]
    );
    let s = h.engine().subscription(tenant, sub).await.unwrap();
    assert!(s.addons().is_empty() && s.scheduled_addons().is_empty());
}

/// An add-on line is taxed as any line: 19 % exclusive on 20.00.
#[tokio::test]
async fn addon_lines_are_taxed() {
    let vat = TaxRate::new("DE", "VAT", dec!(19), TaxBehavior::Exclusive).unwrap();
    let table = StaticTaxRates::new().default_rates([vat]);
    let mut h = harness_with(ProrationPolicy::default())
        .map_engine(|e| e.with_tax_resolver(Arc::new(table)));
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant).await;
    h.engine()
        .set_addon(tenant, sub, addon("storage", 2))
        .await
        .unwrap();
    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    let april = invoice(&h, tenant, sub, 0).await;
    let storage = april
        .lines
        .iter()
        .find(|l| l.price.as_ref().is_some_and(|p| p.as_str() == "storage"))
        .unwrap();
    assert_eq!(storage.amount, usd(dec!(20.00)));
    assert_eq!(storage.taxes[0].amount, usd(dec!(3.80)));
    // (35.00 + 20.00) × 1.19
    assert_eq!(april.total, usd(dec!(65.45)));
}

/// A metered add-on with a quantity above 1, an unknown price and
/// another tenant's subscription are refused, and nothing changes.
#[tokio::test]
async fn addons_that_cannot_be_billed_are_refused() {
    let h = harness_with(ProrationPolicy::default());
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant).await;
    let engine = h.engine();
    let err = engine
        .set_addon(tenant, sub, addon("extra_calls", 2))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = engine
        .set_addon(tenant, sub, addon("nope", 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let other = TenantId::new();
    let err = engine
        .set_addon(other, sub, addon("storage", 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        engine
            .subscription(tenant, sub)
            .await
            .unwrap()
            .addons()
            .is_empty()
    );
}

/// Canceled immediately with proration on April 16 (15 of 30 days
/// left): the plan's and the add-on's unused halves are credited,
/// 35.00 + 20.00 − 17.50 − 10.00 = 27.50.
#[tokio::test]
async fn an_immediate_cancel_credits_the_addons_unused_time() {
    let mut h = harness_with(ProrationPolicy::default());
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant).await;
    h.engine()
        .set_addon(tenant, sub, addon("storage", 2))
        .await
        .unwrap();
    h.set_time(at(2024, 4, 16, 0));
    h.engine()
        .cancel(tenant, sub, CancelMode::Immediately { prorate: true })
        .await
        .unwrap();
    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    let april = invoice(&h, tenant, sub, 0).await;
    assert_eq!(
        lines(&april),
        [
            (LineKind::Licensed, "base".into(), dec!(35.00)),
            (LineKind::Licensed, "storage".into(), dec!(20.00)),
            (LineKind::ProrationCredit, "base".into(), dec!(-17.50)),
            (LineKind::ProrationCredit, "storage".into(), dec!(-10.00)),
        ]
    );
    assert_eq!(april.total, usd(dec!(27.50)));
}

/// A coupon scoped to the add-on's price discounts the add-on's lines
/// (the proration debit and the whole-period line), not the plan's:
/// April 35.00 + 10.00 − 5.00 = 40.00; May 35.00 + 20.00 − 10.00 = 45.00.
#[tokio::test]
async fn a_coupon_scoped_to_the_addon_discounts_its_lines() {
    let mut h = harness_with(ProrationPolicy::default());
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant).await;
    let id = CouponId::new("storage-half").unwrap();
    let coupon = Coupon::percent(id.clone(), "Storage half price", dec!(50))
        .unwrap()
        .with_prices([PriceKey::new("storage").unwrap()])
        .unwrap()
        .with_duration(CouponDuration::Forever)
        .unwrap();
    h.engine().create_coupon(coupon).await.unwrap();
    h.engine().redeem_coupon(tenant, sub, &id).await.unwrap();
    h.set_time(at(2024, 4, 16, 0));
    h.engine()
        .set_addon(tenant, sub, addon("storage", 2))
        .await
        .unwrap();
    h.advance_to(at(2024, 6, 1, 0)).await.unwrap();
    let april = invoice(&h, tenant, sub, 0).await;
    assert_eq!(
        lines(&april),
        [
            (LineKind::Licensed, "base".into(), dec!(35.00)),
            (LineKind::ProrationDebit, "storage".into(), dec!(5.00)),
        ]
    );
    assert_eq!(april.lines[1].discounts[0].amount, usd(dec!(5.00)));
    let may = invoice(&h, tenant, sub, 1).await;
    assert_eq!(may.total, usd(dec!(45.00)));
    assert!(may.lines[0].discounts.is_empty());
}

/// Attached during a 14-day trial: nothing is prorated, and the first
/// paid period (from April 15) bills the add-on in whole.
#[tokio::test]
async fn an_addon_attached_in_a_trial_is_billed_from_the_first_paid_period() {
    let mut h = harness_with(ProrationPolicy::default());
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 2), Currency::USD).trial(Trial::Days(14));
    let sub = h.engine().create_subscription(new).await.unwrap().id();
    h.set_time(at(2024, 4, 5, 0));
    let (s, _) = h
        .engine()
        .set_addon(tenant, sub, addon("storage", 1))
        .await
        .unwrap();
    assert!(s.pending_lines().is_empty());
    assert_eq!(s.period_addons(), [addon("storage", 1)]);
    h.advance_to(at(2024, 5, 16, 0)).await.unwrap();
    let first = invoice(&h, tenant, sub, 0).await;
    assert_eq!(
        lines(&first),
        [
            (LineKind::Licensed, "base".into(), dec!(35.00)),
            (LineKind::Licensed, "storage".into(), dec!(10.00)),
        ]
    );
}

/// Created April 1 with its billing anchored on April 16 and an add-on
/// attached at once: the stub [April 1, April 16) bills plan and add-on
/// prorated over the calendar's full period [March 16, April 16), 15 of
/// 31 days: 35.00 × 15/31 = 16.935… → 16.94 and 10.00 × 15/31 = 4.838…
/// → 4.84.
#[tokio::test]
async fn a_stub_period_prorates_its_addons_as_its_plan() {
    let mut h = harness_with(ProrationPolicy::default());
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 2), Currency::USD)
        .trial(Trial::None)
        .billing_cycle_anchor(at(2024, 4, 16, 0));
    let sub = h.engine().create_subscription(new).await.unwrap().id();
    h.engine()
        .set_addon(tenant, sub, addon("storage", 1))
        .await
        .unwrap();
    h.advance_to(at(2024, 4, 17, 0)).await.unwrap();
    let stub = invoice(&h, tenant, sub, 0).await;
    assert_eq!(
        lines(&stub),
        [
            (LineKind::Licensed, "base".into(), dec!(16.94)),
            (LineKind::Licensed, "storage".into(), dec!(4.84)),
        ]
    );
    assert_eq!(stub.total, usd(dec!(21.78)));
}

/// The same add-on changes give the same invoices whether the billing
/// cycle ran at every period's end or only once at the end.
#[tokio::test]
async fn addon_invoices_do_not_depend_on_the_cycles_lag() {
    async fn run(punctual: bool) -> Vec<Vec<(LineKind, String, saas_billing::Decimal)>> {
        let immediate = ChangeTiming::ImmediateWithProration;
        let mut h = harness_with(ProrationPolicy::new(immediate, ChangeTiming::AtPeriodEnd));
        let tenant = TenantId::new();
        let sub = subscribe(&h, tenant).await;
        let steps = [
            (at(2024, 4, 16, 0), addon("storage", 2)),
            (at(2024, 5, 11, 0), addon("support", 1)),
            (at(2024, 5, 20, 0), addon("storage", 1)),
            (at(2024, 6, 3, 0), addon("storage", 4)),
        ];
        for (when, change) in steps {
            if punctual {
                h.advance_to(when).await.unwrap();
            } else {
                h.set_time(when);
            }
            h.engine().set_addon(tenant, sub, change).await.unwrap();
        }
        h.advance_to(at(2024, 7, 1, 0)).await.unwrap();
        h.engine()
            .invoices(tenant, sub)
            .await
            .unwrap()
            .iter()
            .map(lines)
            .collect()
    }
    let punctual = run(true).await;
    assert_eq!(punctual.len(), 3);
    assert_eq!(run(false).await, punctual);
}
