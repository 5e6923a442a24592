//! A year of one subscription on the simulated clock: a coupon, a
//! mid-year upgrade, a top-up grant and a credit note; the twelve
//! invoices checked line by line, on every store.

use saas_billing::testing::BillingHarness;
use saas_billing::{
    BillingConfig, BillingStores, Coupon, CouponDuration, CouponId, CreditGrant, CreditNoteRequest,
    CreditReason, Currency, Invoice, MeterKey, Money, NewSubscription, PaymentStatus, PlanChange,
    TenantId, Trial, UsageEvent, dec,
};

use crate::fixtures::{at, catalog, plan, usd};

/// What the year produced, without ids: per invoice its number, lines
/// (description, amount, discounts), total, and payment state (status,
/// prepaid, credited, remaining).
type Line = (String, Money, Vec<Money>);
type Summary = (String, Vec<Line>, Money, PaymentStatus, Money, Money, Money);

fn summary(invoice: &Invoice) -> Summary {
    let state = invoice.payment_state().unwrap();
    (
        invoice.number.as_ref().unwrap().to_string(),
        invoice
            .lines
            .iter()
            .map(|l| {
                (
                    l.description.clone(),
                    l.amount,
                    l.discounts.iter().map(|d| d.amount).collect(),
                )
            })
            .collect(),
        invoice.total,
        state.status,
        state.prepaid(),
        state.credited(),
        state.amount_remaining().unwrap(),
    )
}

/// The year: basic v1 (30.00 a month, calls free up to 1,000) from Jan 1
/// with 10 % off for 3 months; a 50.00 top-up grant on Mar 15; an upgrade
/// to pro (90.00 + 5.00 a seat + 0.005 a call) with 1 seat on Jul 17; 400
/// calls in October; a goodwill credit note of 10.00 on August's base
/// line on Sep 10; every other invoice paid on the 5th.
async fn year(stores: BillingStores) -> (Vec<Summary>, Vec<String>) {
    let mut h = BillingHarness::with_stores(
        catalog(),
        at(2024, 1, 1, 0),
        BillingConfig::default(),
        stores,
    );
    let engine = h.engine().clone();
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD).trial(Trial::None);
    let sub = engine.create_subscription(new).await.unwrap();
    let welcome = Coupon::percent(
        CouponId::new("welcome-10").unwrap(),
        "Welcome 10 %",
        dec!(10),
    )
    .unwrap()
    .with_duration(CouponDuration::Repeating { periods: 3 })
    .unwrap();
    engine.create_coupon(welcome).await.unwrap();
    engine
        .redeem_coupon(tenant, sub.id(), &CouponId::new("welcome-10").unwrap())
        .await
        .unwrap();
    let calls = MeterKey::new("calls").unwrap();
    for month in 1..=12u32 {
        let (y, m) = if month == 12 {
            (2025, 1)
        } else {
            (2024, month + 1)
        };
        if month == 3 {
            h.advance_to(at(2024, 3, 15, 0)).await.unwrap();
            let top_up = CreditGrant::new(tenant, usd(dec!(50.00)), h.now())
                .unwrap()
                .with_description("Top-up");
            engine.grant_credit(top_up).await.unwrap();
        }
        if month == 7 {
            h.advance_to(at(2024, 7, 17, 0)).await.unwrap();
            let change = PlanChange {
                plan: plan("pro", 1),
                seats: 1,
            };
            engine.change_plan(tenant, sub.id(), change).await.unwrap();
        }
        if month == 9 {
            h.advance_to(at(2024, 9, 10, 0)).await.unwrap();
            let august = engine.invoices(tenant, sub.id()).await.unwrap().remove(7);
            let goodwill = CreditNoteRequest::line(CreditReason::Goodwill, 0, usd(dec!(10.00)));
            engine
                .issue_credit_note(tenant, august.id, goodwill)
                .await
                .unwrap();
        }
        if month == 10 {
            h.advance_to(at(2024, 10, 20, 0)).await.unwrap();
            for i in 0..400 {
                let event = UsageEvent::new(
                    tenant,
                    sub.id(),
                    calls.clone(),
                    dec!(1),
                    h.now(),
                    format!("oct-{i}"),
                );
                engine.record_usage(event).await.unwrap();
            }
        }
        // Finalized on the 2nd (after the 24 h grace), paid on the 5th.
        h.advance_to(at(y, m, 2, 1)).await.unwrap();
        h.advance_to(at(y, m, 5, 0)).await.unwrap();
        let invoice = engine
            .invoices(tenant, sub.id())
            .await
            .unwrap()
            .remove(month as usize - 1);
        let left = invoice.payment_state().unwrap().amount_remaining().unwrap();
        if !left.is_zero() {
            engine
                .record_payment(tenant, invoice.id, left)
                .await
                .unwrap();
        }
    }
    let invoices = engine.invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(invoices.len(), 12);
    assert!(invoices.iter().all(Invoice::is_finalized));
    // The credit note on August and the top-up's draws, as text.
    let mut ledger = Vec::new();
    for note in engine
        .stores()
        .invoices
        .credit_notes(tenant, invoices[7].id)
        .await
        .unwrap()
    {
        ledger.push(format!(
            "credit note {}: {} on line {:?}, applied {}, refund {}",
            note.number,
            note.total,
            note.lines[0].invoice_line,
            note.applied_to_balance,
            note.refund
        ));
    }
    for draw in engine
        .stores()
        .invoices
        .credit_consumptions(tenant)
        .await
        .unwrap()
    {
        let month = invoices
            .iter()
            .position(|i| i.id == draw.invoice_id)
            .unwrap()
            + 1;
        ledger.push(format!("top-up drawn {} by invoice {month}", draw.amount));
    }
    (invoices.iter().map(summary).collect(), ledger)
}

fn line(
    description: &str,
    amount: saas_billing::Decimal,
    discount: Option<saas_billing::Decimal>,
) -> Line {
    (
        description.to_owned(),
        usd(amount),
        discount.into_iter().map(usd).collect(),
    )
}

/// Paid in full by the customer.
fn paid(number: u32, lines: Vec<Line>, total: saas_billing::Decimal) -> Summary {
    let zero = usd(dec!(0));
    (
        format!("default-{number:06}"),
        lines,
        usd(total),
        PaymentStatus::Paid,
        zero,
        zero,
        zero,
    )
}

fn basic(discount: bool) -> Vec<Line> {
    let base = if discount {
        line("Basic (basic v1)", dec!(27.00), Some(dec!(3.00)))
    } else {
        line("Basic (basic v1)", dec!(30.00), None)
    };
    vec![base, line("API calls", dec!(0.00), None)]
}

fn pro(calls: saas_billing::Decimal) -> Vec<Line> {
    vec![
        line("Pro (pro v1)", dec!(90.00), None),
        line("Pro seats (pro v1)", dec!(5.00), None),
        line("API calls", calls, None),
    ]
}

/// The twelve invoices, line by line:
/// - Jan–Mar: basic 30.00 less 10 % (3.00) = 27.00; March is covered by
///   the top-up (27.00 drawn, 23.00 left);
/// - Apr: 30.00, 23.00 from the top-up, 7.00 paid;
/// - May, Jun: 30.00;
/// - Jul: 30.00, then the upgrade on Jul 17 (15 of 31 days left):
///   basic's unused 30.00 × 15/31 = 14.516 → −14.52, pro 90.00 × 15/31 =
///   43.548 → 43.55, one seat 5.00 × 15/31 = 2.419 → 2.42: 61.45;
/// - Aug–Dec: pro 90.00 + 5.00 = 95.00, October with 400 calls × 0.005 =
///   2.00: 97.00;
/// - the credit note of Sep 10 on August's base line (paid Sep 5) is a
///   10.00 refund: August's invoice is unchanged.
fn expected() -> (Vec<Summary>, Vec<String>) {
    let mut march = paid(3, basic(true), dec!(27.00));
    march.4 = usd(dec!(27.00));
    let mut april = paid(4, basic(false), dec!(30.00));
    april.4 = usd(dec!(23.00));
    let july = vec![
        line("Basic (basic v1)", dec!(30.00), None),
        line(
            "Unused time on Basic (basic v1) after 2024-07-17T00:00:00+00:00",
            dec!(-14.52),
            None,
        ),
        line(
            "Remaining time on Pro (pro v1) after 2024-07-17T00:00:00+00:00",
            dec!(43.55),
            None,
        ),
        line(
            "Remaining time on Pro seats (pro v1) after 2024-07-17T00:00:00+00:00",
            dec!(2.42),
            None,
        ),
        line("API calls", dec!(0.00), None),
    ];
    let invoices = vec![
        paid(1, basic(true), dec!(27.00)),
        paid(2, basic(true), dec!(27.00)),
        march,
        april,
        paid(5, basic(false), dec!(30.00)),
        paid(6, basic(false), dec!(30.00)),
        paid(7, july, dec!(61.45)),
        paid(8, pro(dec!(0.00)), dec!(95.00)),
        paid(9, pro(dec!(0.00)), dec!(95.00)),
        paid(10, pro(dec!(2.00)), dec!(97.00)),
        paid(11, pro(dec!(0.00)), dec!(95.00)),
        paid(12, pro(dec!(0.00)), dec!(95.00)),
    ];
    let ledger = vec![
        "credit note default-000001: 10.00 USD on line Some(0), applied 0.00 USD, refund 10.00 USD"
            .to_owned(),
        "top-up drawn 27.00 USD by invoice 3".to_owned(),
        "top-up drawn 23.00 USD by invoice 4".to_owned(),
    ];
    (invoices, ledger)
}

#[tokio::test]
async fn a_year_with_a_coupon_an_upgrade_a_top_up_and_a_credit_note() {
    let (invoices, ledger) = year(BillingStores::in_memory()).await;
    let (want, want_ledger) = expected();
    for (month, (got, want)) in invoices.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "invoice {}", month + 1);
    }
    assert_eq!(invoices.len(), 12);
    assert_eq!(ledger, want_ledger);
}

/// The same year on SQLite and PostgreSQL gives the same twelve invoices.
#[tokio::test]
async fn the_year_is_the_same_on_the_sql_stores() {
    let expected = expected();
    let (sqlite, cleanup) = crate::sql_stores::sqlite_stores().await;
    assert_eq!(year(sqlite.billing_stores()).await, expected);
    cleanup.run().await;
    if let Some((pg, cleanup)) =
        crate::sql_stores::pg_stores("the_year_is_the_same_on_the_sql_stores").await
    {
        assert_eq!(year(pg.billing_stores()).await, expected);
        cleanup.run().await;
    }
}
