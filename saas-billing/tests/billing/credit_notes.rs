//! Credit notes through the engine, and their immutability in SQL.

use std::sync::Arc;

use saas_billing::{
    BillingEvent, CreditNoteRequest, CreditReason, Currency, InvoiceStore, MeterKey, Money,
    NewSubscription, PaymentStatus, StaticTaxRates, TaxBehavior, TaxRate, TenantId, Trial,
    UsageEvent, dec,
};

use crate::fixtures::{at, harness, plan, usd};

/// Worked example (README): January of `pro` with 2 seats and 300 calls
/// is invoice default-000001 of 90.00 + 10.00 + 1.50 = 101.50. The seats
/// were billed by mistake: credit note default-000001 (the credit-note
/// sequence) credits that line's 10.00; the invoice still reads 101.50,
/// 91.50 remains due, and paying 91.50 settles it.
#[tokio::test]
async fn worked_example_a_credit_note_for_one_line() {
    let mut h = harness(at(2024, 1, 1, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("pro", 1), Currency::USD)
        .seats(2)
        .trial(Trial::None);
    let sub = h.engine().create_subscription(new).await.unwrap();
    let calls = MeterKey::new("calls").unwrap();
    h.set_time(at(2024, 1, 10, 0));
    for i in 0..300 {
        let event = UsageEvent::new(
            tenant,
            sub.id(),
            calls.clone(),
            dec!(1),
            h.now(),
            format!("c{i}"),
        );
        h.engine().record_usage(event).await.unwrap();
    }
    h.advance_to(at(2024, 2, 3, 0)).await.unwrap();
    let invoice = h
        .engine()
        .invoices(tenant, sub.id())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        invoice.number.as_ref().unwrap().to_string(),
        "default-000001"
    );
    let amounts: Vec<Money> = invoice.lines.iter().map(|l| l.amount).collect();
    assert_eq!(
        amounts,
        [usd(dec!(90.00)), usd(dec!(10.00)), usd(dec!(1.50))]
    );
    assert_eq!(invoice.total, usd(dec!(101.50)));

    let request = CreditNoteRequest::whole_line(CreditReason::Correction, 1)
        .with_memo("Seats billed in error");
    let (after, note) = h
        .engine()
        .issue_credit_note(tenant, invoice.id, request)
        .await
        .unwrap();
    assert_eq!(note.number.to_string(), "default-000001");
    assert_eq!(note.lines.len(), 1);
    assert_eq!(note.lines[0].description, invoice.lines[1].description);
    assert_eq!(
        (note.total, note.applied_to_balance),
        (usd(dec!(10.00)), usd(dec!(10.00)))
    );
    assert!(note.refund.is_zero());
    assert_eq!(
        (after.total, &after.lines),
        (usd(dec!(101.50)), &invoice.lines)
    );
    let state = after.payment_state().unwrap();
    assert_eq!(state.amount_due, usd(dec!(101.50)));
    assert_eq!(state.amount_remaining().unwrap(), usd(dec!(91.50)));
    // The line is fully credited now.
    let again = CreditNoteRequest::whole_line(CreditReason::Correction, 1);
    assert!(
        h.engine()
            .issue_credit_note(tenant, invoice.id, again)
            .await
            .is_err()
    );
    let paid = h
        .engine()
        .record_payment(tenant, invoice.id, usd(dec!(91.50)))
        .await
        .unwrap();
    assert_eq!(paid.payment_state().unwrap().status, PaymentStatus::Paid);
    assert!(h.events().iter().any(|e| matches!(
        e,
        BillingEvent::CreditNoteIssued { credit_note, .. } if credit_note == &note
    )));
}

/// A taxed line is creditable with its tax: 30.00 + 19 % = 35.70.
#[tokio::test]
async fn a_taxed_line_is_credited_with_its_tax() {
    let vat = TaxRate::new("DE", "VAT", dec!(19), TaxBehavior::Exclusive).unwrap();
    let table = StaticTaxRates::new().default_rates([vat]);
    let mut h = harness(at(2024, 1, 1, 0)).map_engine(|e| e.with_tax_resolver(Arc::new(table)));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD).trial(Trial::None);
    let sub = h.engine().create_subscription(new).await.unwrap();
    h.advance_to(at(2024, 2, 3, 0)).await.unwrap();
    let invoice = h
        .engine()
        .invoices(tenant, sub.id())
        .await
        .unwrap()
        .remove(0);
    let (after, note) = h
        .engine()
        .issue_credit_note(
            tenant,
            invoice.id,
            CreditNoteRequest::whole_line(CreditReason::Refund, 0),
        )
        .await
        .unwrap();
    assert_eq!(note.total, usd(dec!(35.70)));
    assert_eq!(after.payment_state().unwrap().status, PaymentStatus::Paid);
}

/// Issued credit notes cannot be changed or deleted by SQL, on SQLite
/// and PostgreSQL.
#[tokio::test]
async fn sql_refuses_changes_to_credit_notes() {
    async fn issue(store: &dyn InvoiceStore) -> saas_billing::CreditNote {
        use saas_billing::testing::fixtures::{draft, finalization, issuer, line, start};
        let tenant = TenantId::new();
        let invoice = store
            .create(draft(tenant, saas_billing::SubscriptionId::new(), 0))
            .await
            .unwrap();
        let lines = vec![line(dec!(10.00))];
        store
            .finalize(tenant, invoice.id, finalization(lines, start(), &issuer()))
            .await
            .unwrap();
        let request = CreditNoteRequest::whole(CreditReason::Goodwill);
        store
            .issue_credit_note(tenant, invoice.id, request, start())
            .await
            .unwrap()
            .1
    }
    let (sqlite, cleanup) = crate::sql_stores::sqlite_stores().await;
    let note = issue(&sqlite.invoices()).await;
    for sql in [
        "UPDATE billing_credit_notes SET number = 9 WHERE id = ?1",
        "DELETE FROM billing_credit_notes WHERE id = ?1",
    ] {
        let done = sqlx::query(sql)
            .bind(note.id.to_string())
            .execute(sqlite.pool())
            .await;
        assert!(done.is_err(), "refused: {sql}");
    }
    cleanup.run().await;
    if let Some((pg, cleanup)) =
        crate::sql_stores::pg_stores("sql_refuses_changes_to_credit_notes").await
    {
        let note = issue(&pg.invoices()).await;
        for sql in [
            "UPDATE billing_credit_notes SET number = 9 WHERE id = $1",
            "DELETE FROM billing_credit_notes WHERE id = $1",
        ] {
            let done = sqlx::query(sql)
                .bind(note.id.as_uuid())
                .execute(pg.pool())
                .await;
            assert!(done.is_err(), "refused: {sql}");
        }
        cleanup.run().await;
    }
}

/// A credit note that settles a failed invoice brings a past_due
/// subscription back to active, as a payment would.
#[tokio::test]
async fn a_settling_credit_note_restores_the_subscription() {
    let mut h = harness(at(2024, 1, 1, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD).trial(Trial::None);
    let sub = h.engine().create_subscription(new).await.unwrap();
    h.advance_to(at(2024, 2, 3, 0)).await.unwrap();
    let invoice = h
        .engine()
        .invoices(tenant, sub.id())
        .await
        .unwrap()
        .remove(0);
    h.engine()
        .record_payment_failure(tenant, invoice.id)
        .await
        .unwrap();
    let status = h
        .engine()
        .subscription(tenant, sub.id())
        .await
        .unwrap()
        .status();
    assert_eq!(status, saas_billing::SubscriptionStatus::PastDue);
    let request = CreditNoteRequest::whole(CreditReason::Goodwill);
    let (after, _) = h
        .engine()
        .issue_credit_note(tenant, invoice.id, request)
        .await
        .unwrap();
    assert_eq!(after.payment_state().unwrap().status, PaymentStatus::Paid);
    let status = h
        .engine()
        .subscription(tenant, sub.id())
        .await
        .unwrap()
        .status();
    assert_eq!(status, saas_billing::SubscriptionStatus::Active);
}
