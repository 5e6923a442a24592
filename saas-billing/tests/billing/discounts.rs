//! Coupons: the order of discounts, largest-remainder allocation, never
//! below zero, scopes, durations, redemption rules, and before tax.

use std::sync::Arc;

use saas_billing::{
    BillingError, Coupon, CouponDuration, CouponId, Currency, InvoiceLine, MeterKey, Money,
    NewSubscription, PriceKey, Redemption, RoundingMode, StaticTaxRates, SubscriptionId,
    TaxBehavior, TaxRate, TenantId, Trial, UsageEvent, apply_discounts, dec,
};

use crate::fixtures::{at, harness, plan, usd};

fn line(amount: saas_billing::Decimal, price: &str) -> InvoiceLine {
    let mut line = saas_billing::testing::fixtures::line(amount);
    line.price = Some(PriceKey::new(price).unwrap());
    line
}

fn redeemed(coupon: Coupon) -> Redemption {
    Redemption {
        coupon,
        tenant_id: TenantId::new(),
        subscription_id: SubscriptionId::new(),
        start_period: 0,
        redeemed_at: at(2024, 1, 1, 0),
    }
}

fn id(key: &str) -> CouponId {
    CouponId::new(key).unwrap()
}

fn amounts(lines: &[InvoiceLine]) -> Vec<Money> {
    lines.iter().map(|l| l.amount).collect()
}

fn apply(lines: &mut [InvoiceLine], coupons: &[Redemption]) {
    apply_discounts(lines, coupons, 0, Currency::USD, RoundingMode::HalfEven).unwrap();
}

/// A fixed 10.00 over three lines of 10.00: 3.34, 3.33, 3.33 by largest
/// remainder (ties to the earlier line); the discounts add up to 10.00.
#[test]
fn a_fixed_discount_is_allocated_by_largest_remainder() {
    let ten = Coupon::fixed(id("ten"), "10 off", [usd(dec!(10.00))]).unwrap();
    let mut lines = vec![
        line(dec!(10.00), "a"),
        line(dec!(10.00), "b"),
        line(dec!(10.00), "c"),
    ];
    apply(&mut lines, &[redeemed(ten.clone())]);
    assert_eq!(
        amounts(&lines),
        [usd(dec!(6.66)), usd(dec!(6.67)), usd(dec!(6.67))]
    );
    let taken: Vec<Money> = lines.iter().map(|l| l.discounts[0].amount).collect();
    assert_eq!(taken, [usd(dec!(3.34)), usd(dec!(3.33)), usd(dec!(3.33))]);
    // 10.00 over 7.00, 3.00 and 1.00 (11.00), in proportion to each.
    let mut lines = vec![
        line(dec!(7.00), "a"),
        line(dec!(3.00), "b"),
        line(dec!(1.00), "c"),
    ];
    apply(&mut lines, &[redeemed(ten)]);
    assert_eq!(
        amounts(&lines),
        [usd(dec!(0.64)), usd(dec!(0.27)), usd(dec!(0.09))]
    );
}

/// A discount larger than the invoice takes every line to zero, never
/// below; credit lines are never discounted.
#[test]
fn a_discount_never_takes_a_line_below_zero() {
    let big = Coupon::fixed(id("big"), "50 off", [usd(dec!(50.00))]).unwrap();
    let all = Coupon::percent(id("all"), "100 %", dec!(100)).unwrap();
    let mut lines = vec![
        line(dec!(3.00), "a"),
        line(dec!(2.00), "b"),
        line(dec!(-4.00), "credit"),
    ];
    apply(&mut lines, &[redeemed(all), redeemed(big)]);
    assert_eq!(
        amounts(&lines),
        [usd(dec!(0)), usd(dec!(0)), usd(dec!(-4.00))]
    );
    assert!(lines[2].discounts.is_empty());
    // The 100 % took everything; nothing was left for the fixed coupon.
    assert!(lines.iter().all(|l| l.discounts.len() <= 1));
}

/// Percentages first (each on the undiscounted line, rounded per line),
/// then fixed amounts on what remains; scoped coupons touch only their
/// prices; applying again undoes and redoes, never discounts twice.
#[test]
fn percentages_then_fixed_amounts_within_their_scope() {
    let half = Coupon::percent(id("half"), "50 %", dec!(50)).unwrap();
    let ten = Coupon::fixed(id("ten"), "10 off", [usd(dec!(10.00))]).unwrap();
    let seats_only = Coupon::percent(id("seats"), "Seats 10 %", dec!(10))
        .unwrap()
        .with_prices([PriceKey::new("seats").unwrap()])
        .unwrap();
    // Listed fixed first: the order is by kind, then by redemption.
    let coupons = [redeemed(ten), redeemed(half), redeemed(seats_only)];
    let mut lines = vec![line(dec!(30.00), "base"), line(dec!(20.05), "seats")];
    apply(&mut lines, &coupons);
    // base: 30.00 − 15.00 = 15.00; seats: 20.05 − 10.02(5 → half-even
    // 10.02) − 2.00(5 → 2.00) = 8.03; then 10.00 over 15.00 and 8.03:
    // 6.51 and 3.49.
    assert_eq!(amounts(&lines), [usd(dec!(8.49)), usd(dec!(4.54))]);
    assert_eq!(
        lines[1].amount_before_discounts().unwrap(),
        usd(dec!(20.05))
    );
    let once = amounts(&lines);
    apply(&mut lines, &coupons);
    assert_eq!(amounts(&lines), once);
}

/// A Once coupon applies to its period only, Repeating to N periods,
/// Forever from its period on; a coupon's fixed amount in another
/// currency does not apply.
#[test]
fn durations_and_currencies() {
    let mut r = redeemed(Coupon::percent(id("x"), "x", dec!(10)).unwrap());
    r.start_period = 2;
    assert!(!r.active_in(1) && r.active_in(2) && !r.active_in(3));
    r.coupon = r
        .coupon
        .with_duration(CouponDuration::Repeating { periods: 3 })
        .unwrap();
    assert!(r.active_in(4) && !r.active_in(5));
    r.coupon = r.coupon.with_duration(CouponDuration::Forever).unwrap();
    assert!(r.active_in(1000) && !r.active_in(1));
    let euros = Coupon::fixed(id("eur"), "5 €", [Money::new(dec!(5), Currency::EUR)]).unwrap();
    let mut lines = vec![line(dec!(10.00), "a")];
    apply(&mut lines, &[redeemed(euros)]);
    assert_eq!(amounts(&lines), [usd(dec!(10.00))]);
    assert!(Coupon::percent(id("zero"), "0", dec!(0)).is_err());
    assert!(Coupon::percent(id("more"), "101", dec!(101)).is_err());
    assert!(Coupon::fixed(id("none"), "none", []).is_err());
    assert!(Coupon::fixed(id("unrounded"), "x", [usd(dec!(1.005))]).is_err());
    let twice = [usd(dec!(1)), usd(dec!(2))];
    assert!(Coupon::fixed(id("twice"), "x", twice).is_err());
}

/// Worked example (README): `pro` with 2 seats and metered calls
/// (0.005 each), a 20 % coupon for 3 months redeemed at sign-up.
/// Jan (300 calls): 72.00 + 8.00 + 1.20 = 81.20; Feb (333 calls, 1.665 →
/// 1.66, 20 % = 0.332 → 0.33): 72.00 + 8.00 + 1.33 = 81.33; Mar (no
/// calls): 80.00; Apr (100 calls), coupon over: 90.00 + 10.00 + 0.50 =
/// 100.50.
#[tokio::test]
async fn worked_example_20_percent_for_3_months_with_a_metered_price() {
    let mut h = harness(at(2024, 1, 1, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("pro", 1), Currency::USD)
        .seats(2)
        .trial(Trial::None);
    let sub = h.engine().create_subscription(new).await.unwrap();
    let launch = Coupon::percent(id("launch-20"), "Launch 20 %", dec!(20))
        .unwrap()
        .with_duration(CouponDuration::Repeating { periods: 3 })
        .unwrap();
    h.engine().create_coupon(launch).await.unwrap();
    h.engine()
        .redeem_coupon(tenant, sub.id(), &id("launch-20"))
        .await
        .unwrap();
    let calls = MeterKey::new("calls").unwrap();
    for (month, count) in [(1, 300), (2, 333), (3, 0), (4, 100)] {
        h.set_time(at(2024, month, 10, 0));
        for i in 0..count {
            let key = format!("{month}-{i}");
            let event = UsageEvent::new(tenant, sub.id(), calls.clone(), dec!(1), h.now(), key);
            h.engine().record_usage(event).await.unwrap();
        }
    }
    // (Usage is recorded ahead by timestamp; each period bills its own.)
    h.set_time(at(2024, 1, 1, 0));
    h.advance_months(4).await.unwrap();
    h.advance(saas_billing::TimeDelta::days(2)).await.unwrap();
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    let by_line: Vec<Vec<Money>> = invoices.iter().map(|i| amounts(&i.lines)).collect();
    assert_eq!(
        by_line,
        [
            vec![usd(dec!(72.00)), usd(dec!(8.00)), usd(dec!(1.20))],
            vec![usd(dec!(72.00)), usd(dec!(8.00)), usd(dec!(1.33))],
            vec![usd(dec!(72.00)), usd(dec!(8.00)), usd(dec!(0.00))],
            vec![usd(dec!(90.00)), usd(dec!(10.00)), usd(dec!(0.50))],
        ]
    );
    let totals: Vec<Money> = invoices.iter().map(|i| i.total).collect();
    assert_eq!(
        totals,
        [
            usd(dec!(81.20)),
            usd(dec!(81.33)),
            usd(dec!(80.00)),
            usd(dec!(100.50))
        ]
    );
    assert!(invoices.iter().all(|i| i.is_finalized()));
    assert_eq!(invoices[1].lines[2].discounts[0].amount, usd(dec!(0.33)));
    assert_eq!(invoices[1].lines[2].discounts[0].name, "Launch 20 %");
    assert!(invoices[3].lines.iter().all(|l| l.discounts.is_empty()));
}

/// Discounts apply before tax: 30.00 − 20 % = 24.00, taxed 19 % = 4.56.
#[tokio::test]
async fn discounts_apply_before_tax() {
    let table = StaticTaxRates::new().default_rates([TaxRate::new(
        "DE",
        "VAT",
        dec!(19),
        TaxBehavior::Exclusive,
    )
    .unwrap()]);
    let mut h = harness(at(2024, 1, 1, 0)).map_engine(|e| e.with_tax_resolver(Arc::new(table)));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 2), Currency::USD).trial(Trial::None);
    let sub = h.engine().create_subscription(new).await.unwrap();
    let coupon = Coupon::percent(id("twenty"), "20 %", dec!(20)).unwrap();
    h.engine().create_coupon(coupon).await.unwrap();
    h.engine()
        .redeem_coupon(tenant, sub.id(), &id("twenty"))
        .await
        .unwrap();
    h.advance_months(1).await.unwrap();
    h.advance(saas_billing::TimeDelta::days(2)).await.unwrap();
    let invoice = h
        .engine()
        .invoices(tenant, sub.id())
        .await
        .unwrap()
        .remove(0);
    // basic v2 is 35.00: 35.00 − 7.00 = 28.00, tax 5.32, total 33.32.
    assert_eq!(invoice.lines[0].amount, usd(dec!(28.00)));
    assert_eq!(invoice.lines[0].taxes[0].amount, usd(dec!(5.32)));
    assert_eq!(invoice.total, usd(dec!(33.32)));
}

/// Redemption through the engine: an expired coupon, a coupon without an
/// amount in the subscription's currency and a second redemption are
/// refused; a Once coupon discounts only the first invoice.
#[tokio::test]
async fn redemption_rules_through_the_engine() {
    let mut h = harness(at(2024, 1, 1, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 2), Currency::USD).trial(Trial::None);
    let sub = h.engine().create_subscription(new).await.unwrap();
    let engine = h.engine().clone();
    let expired = Coupon::percent(id("old"), "old", dec!(10))
        .unwrap()
        .with_redeem_by(at(2024, 1, 1, 0));
    engine.create_coupon(expired).await.unwrap();
    let err = engine
        .redeem_coupon(tenant, sub.id(), &id("old"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        BillingError::CouponNotRedeemable {
            reason: "expired",
            ..
        }
    ));
    let euros = Coupon::fixed(id("eur"), "5 €", [Money::new(dec!(5), Currency::EUR)]).unwrap();
    engine.create_coupon(euros).await.unwrap();
    let err = engine
        .redeem_coupon(tenant, sub.id(), &id("eur"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BillingError::InvalidInput {
                field: "coupon",
                ..
            }
        ),
        "{err}"
    );
    let once = Coupon::fixed(id("five"), "5 off", [usd(dec!(5.00))]).unwrap();
    engine.create_coupon(once).await.unwrap();
    engine
        .redeem_coupon(tenant, sub.id(), &id("five"))
        .await
        .unwrap();
    let err = engine
        .redeem_coupon(tenant, sub.id(), &id("five"))
        .await
        .unwrap_err();
    assert!(matches!(err, BillingError::AlreadyExists { .. }));
    h.advance_months(2).await.unwrap();
    let totals: Vec<Money> = engine
        .invoices(tenant, sub.id())
        .await
        .unwrap()
        .iter()
        .map(|i| i.total)
        .collect();
    assert_eq!(totals, [usd(dec!(30.00)), usd(dec!(35.00))]);
}
