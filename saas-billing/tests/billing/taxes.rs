//! Taxes: per line, rounded per line, inclusive and exclusive, reverse
//! charge; on drafts, at finalization and through the SQL stores.

use std::sync::Arc;

use saas_billing::{
    Currency, InvoiceLine, LineKind, MeterKey, Money, NewSubscription, RoundingMode,
    StaticTaxRates, SubscriptionId, TaxBehavior, TaxRate, TenantId, Trial, UsageEvent, apply_taxes,
    dec,
};

use crate::fixtures::{at, harness, plan, usd};

fn vat(percentage: saas_billing::Decimal, behavior: TaxBehavior) -> TaxRate {
    TaxRate::new("DE", "VAT", percentage, behavior).unwrap()
}

fn line(amount: saas_billing::Decimal) -> InvoiceLine {
    saas_billing::testing::fixtures::line(amount)
}

/// Three lines of 0.13 at 19 % exclusive: 0.0247 rounds to 0.02 on each
/// line, 0.06 in all — the invoice's sum (0.39 × 19 % = 0.0741) would
/// have given 0.07.
#[test]
fn exclusive_tax_is_rounded_per_line() {
    let table = StaticTaxRates::new().default_rates([vat(dec!(19), TaxBehavior::Exclusive)]);
    let mut lines = vec![line(dec!(0.13)), line(dec!(0.13)), line(dec!(0.13))];
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    apply_taxes(
        &mut lines,
        &table,
        tenant,
        sub,
        Currency::USD,
        RoundingMode::HalfEven,
    )
    .unwrap();
    for l in &lines {
        assert_eq!(l.taxes.len(), 1);
        assert_eq!(l.taxes[0].taxable, usd(dec!(0.13)));
        assert_eq!(l.taxes[0].amount, usd(dec!(0.02)));
        assert_eq!(l.amount_with_tax().unwrap(), usd(dec!(0.15)));
    }
    // Applying again replaces, never adds.
    apply_taxes(
        &mut lines,
        &table,
        tenant,
        sub,
        Currency::USD,
        RoundingMode::HalfEven,
    )
    .unwrap();
    assert_eq!(lines[0].taxes.len(), 1);
}

/// 20 % inclusive: the tax is inside the amount (10.00 holds 1.67, net
/// 8.33); with an exclusive rate beside it, the exclusive one is
/// computed on the net, never compounded.
#[test]
fn inclusive_tax_is_inside_the_amount() {
    let table = StaticTaxRates::new().default_rates([vat(dec!(20), TaxBehavior::Inclusive)]);
    let mut lines = vec![line(dec!(10.00)), line(dec!(-10.00))];
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    apply_taxes(
        &mut lines,
        &table,
        tenant,
        sub,
        Currency::USD,
        RoundingMode::HalfEven,
    )
    .unwrap();
    assert_eq!(lines[0].taxes[0].amount, usd(dec!(1.67)));
    assert_eq!(lines[0].net_amount().unwrap(), usd(dec!(8.33)));
    assert_eq!(lines[0].amount_with_tax().unwrap(), usd(dec!(10.00)));
    // A credit line carries a negative tax of the same size.
    assert_eq!(lines[1].taxes[0].amount, usd(dec!(-1.67)));

    let both = StaticTaxRates::new().default_rates([
        vat(dec!(20), TaxBehavior::Inclusive),
        TaxRate::new("DE-BY", "Levy", dec!(1), TaxBehavior::Exclusive).unwrap(),
    ]);
    let mut lines = vec![line(dec!(12.00))];
    apply_taxes(
        &mut lines,
        &both,
        tenant,
        sub,
        Currency::USD,
        RoundingMode::HalfEven,
    )
    .unwrap();
    // 12.00 holds 2.00 of VAT; the levy is 1 % of the net 10.00.
    let amounts: Vec<Money> = lines[0].taxes.iter().map(|t| t.amount).collect();
    assert_eq!(amounts, [usd(dec!(2.00)), usd(dec!(0.10))]);
    assert_eq!(lines[0].amount_with_tax().unwrap(), usd(dec!(12.10)));
}

#[test]
fn rates_out_of_range_are_refused() {
    for bad in [dec!(-1), dec!(100), dec!(150)] {
        assert!(TaxRate::new("DE", "VAT", bad, TaxBehavior::Exclusive).is_err());
    }
    assert!(TaxRate::new(" ", "VAT", dec!(19), TaxBehavior::Exclusive).is_err());
}

/// `pro` with 3 seats and 33 calls for January, taxed by the table:
/// base 90.00, seats 15.00, calls 33 × 0.005 = 0.165 → 0.16 (half-even).
async fn january_invoice(table: StaticTaxRates, tenant: TenantId) -> saas_billing::Invoice {
    let mut h = harness(at(2024, 1, 1, 0)).map_engine(|e| e.with_tax_resolver(Arc::new(table)));
    let new = NewSubscription::new(tenant, plan("pro", 1), Currency::USD)
        .seats(3)
        .trial(Trial::None);
    let sub = h.engine().create_subscription(new).await.unwrap();
    let calls = MeterKey::new("calls").unwrap();
    h.set_time(at(2024, 1, 9, 0));
    for i in 0..33 {
        let event = UsageEvent::new(
            tenant,
            sub.id(),
            calls.clone(),
            dec!(1),
            at(2024, 1, 9, 0),
            format!("call-{i}"),
        );
        h.engine().record_usage(event).await.unwrap();
    }
    h.advance_months(1).await.unwrap();
    let draft = h
        .engine()
        .invoices(tenant, sub.id())
        .await
        .unwrap()
        .remove(0);
    h.advance(saas_billing::TimeDelta::days(2)).await.unwrap();
    let invoice = h
        .engine()
        .invoices(tenant, sub.id())
        .await
        .unwrap()
        .remove(0);
    assert!(invoice.is_finalized());
    assert_eq!(
        draft.total, invoice.total,
        "the draft is taxed as the final invoice"
    );
    invoice
}

fn taxes_by_line(invoice: &saas_billing::Invoice) -> Vec<(Money, Money)> {
    invoice
        .lines
        .iter()
        .map(|l| (l.amount, l.taxes[0].amount))
        .collect()
}

/// Worked example (README): 19 % exclusive on each line — 17.10, 2.85
/// and 0.0304 → 0.03; subtotal 105.16, tax 19.98, total 125.14.
#[tokio::test]
async fn worked_example_tax_exclusive_19_percent() {
    let table = StaticTaxRates::new().default_rates([vat(dec!(19), TaxBehavior::Exclusive)]);
    let invoice = january_invoice(table, TenantId::new()).await;
    assert_eq!(
        taxes_by_line(&invoice),
        [
            (usd(dec!(90.00)), usd(dec!(17.10))),
            (usd(dec!(15.00)), usd(dec!(2.85))),
            (usd(dec!(0.16)), usd(dec!(0.03))),
        ]
    );
    assert_eq!(invoice.subtotal().unwrap(), usd(dec!(105.16)));
    assert_eq!(invoice.tax_total().unwrap(), usd(dec!(19.98)));
    assert_eq!(invoice.total, usd(dec!(125.14)));
    assert_eq!(
        invoice.payment_state().unwrap().amount_due,
        usd(dec!(125.14))
    );
    let summary = invoice.tax_summary().unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!(
        (summary[0].taxable, summary[0].amount),
        (usd(dec!(105.16)), usd(dec!(19.98)))
    );
}

/// Worked example (README): 20 % inclusive — 90.00 holds 15.00, 15.00
/// holds 2.50, 0.16 holds 0.0267 → 0.03; subtotal 87.63, tax 17.53,
/// total 105.16 (the prices as charged).
#[tokio::test]
async fn worked_example_tax_inclusive_20_percent() {
    let table = StaticTaxRates::new().default_rates([vat(dec!(20), TaxBehavior::Inclusive)]);
    let invoice = january_invoice(table, TenantId::new()).await;
    assert_eq!(
        taxes_by_line(&invoice),
        [
            (usd(dec!(90.00)), usd(dec!(15.00))),
            (usd(dec!(15.00)), usd(dec!(2.50))),
            (usd(dec!(0.16)), usd(dec!(0.03))),
        ]
    );
    let nets: Vec<Money> = invoice
        .lines
        .iter()
        .map(|l| l.net_amount().unwrap())
        .collect();
    assert_eq!(nets, [usd(dec!(75.00)), usd(dec!(12.50)), usd(dec!(0.13))]);
    assert_eq!(invoice.subtotal().unwrap(), usd(dec!(87.63)));
    assert_eq!(invoice.tax_total().unwrap(), usd(dec!(17.53)));
    assert_eq!(invoice.total, usd(dec!(105.16)));
}

/// A reverse-charged tenant: a zero rate with its reason on every line,
/// nothing added; other tenants keep the default rate.
#[tokio::test]
async fn reverse_charge_is_a_zero_rate_with_its_reason() {
    let b2b = TenantId::new();
    let reason = "Reverse charge: VAT due by the recipient (Art. 196 VAT Directive)";
    let table = StaticTaxRates::new()
        .default_rates([vat(dec!(19), TaxBehavior::Exclusive)])
        .tenant_rates(b2b, [TaxRate::reverse_charge("FR", reason)]);
    let invoice = january_invoice(table, b2b).await;
    assert!(invoice.lines.iter().all(|l| {
        l.taxes.len() == 1
            && l.taxes[0].amount.is_zero()
            && l.taxes[0].rate.reason() == Some(reason)
    }));
    assert_eq!(invoice.total, usd(dec!(105.16)));
    assert!(invoice.tax_total().unwrap().is_zero());
    assert!(
        invoice
            .lines
            .iter()
            .all(|l| l.kind != LineKind::ProrationCredit)
    );
}

/// Finalizes January of `basic` (30.00) at 19 % exclusive on `stores`.
async fn taxed_on(stores: saas_billing::BillingStores) -> saas_billing::Invoice {
    let table = StaticTaxRates::new().default_rates([vat(dec!(19), TaxBehavior::Exclusive)]);
    let mut h = saas_billing::testing::BillingHarness::with_stores(
        crate::fixtures::catalog(),
        at(2024, 1, 1, 0),
        saas_billing::BillingConfig::default(),
        stores.clone(),
    )
    .map_engine(|e| e.with_tax_resolver(Arc::new(table)));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD).trial(Trial::None);
    let sub = h.engine().create_subscription(new).await.unwrap();
    h.advance_months(1).await.unwrap();
    h.advance(saas_billing::TimeDelta::days(2)).await.unwrap();
    let invoice = h
        .engine()
        .invoices(tenant, sub.id())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(invoice.total, usd(dec!(35.70)));
    assert_eq!(invoice.lines[0].taxes[0].amount, usd(dec!(5.70)));
    assert_eq!(
        stores.invoices.get(tenant, invoice.id).await.unwrap(),
        invoice
    );
    invoice
}

/// Taxed invoices read back identical from the SQLite and PostgreSQL
/// stores (taxes live in the stored body; the `total` column includes
/// exclusive tax).
#[tokio::test]
async fn taxed_invoices_round_trip_through_sql_stores() {
    let (stores, cleanup) = crate::sql_stores::sqlite_stores().await;
    let invoice = taxed_on(stores.billing_stores()).await;
    let total: String = sqlx::query_scalar("SELECT total FROM billing_invoices WHERE id = ?1")
        .bind(invoice.id.to_string())
        .fetch_one(stores.pool())
        .await
        .unwrap();
    assert_eq!(total, "35.70");
    cleanup.run().await;
    if let Some((pg, cleanup)) =
        crate::sql_stores::pg_stores("taxed_invoices_round_trip_through_sql_stores").await
    {
        let invoice = taxed_on(pg.billing_stores()).await;
        let total: saas_billing::Decimal =
            sqlx::query_scalar("SELECT total FROM billing_invoices WHERE id = $1")
                .bind(invoice.id.as_uuid())
                .fetch_one(pg.pool())
                .await
                .unwrap();
        assert_eq!(total, dec!(35.70));
        cleanup.run().await;
    }
}
