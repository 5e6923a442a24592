//! The [`InvoiceStore`] contract for credit notes.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::TimeDelta;
use saas_core::{ErrorKind, TenantId};

use super::fixtures::{draft, finalization, issuer, line, start};
use crate::{
    BillingError, CreditNoteRequest, CreditReason, Currency, Invoice, InvoiceStore, Money,
    PaymentChange, PaymentStatus, SubscriptionId, dec,
};

fn usd(amount: rust_decimal::Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

/// A finalized invoice of lines 20.00 and 10.00 (30.00) of a new issuer.
async fn thirty(store: &dyn InvoiceStore, tenant: TenantId) -> Invoice {
    let invoice = store
        .create(draft(tenant, SubscriptionId::new(), 0))
        .await
        .unwrap();
    let lines = vec![line(dec!(20.00)), line(dec!(10.00))];
    store
        .finalize(tenant, invoice.id, finalization(lines, start(), &issuer()))
        .await
        .unwrap()
}

/// Credit notes are numbered 1, 2… in the issuer's credit-note
/// sequence, reduce what remains due (paid when nothing does), never
/// credit more than remains creditable on a line or on the invoice, and
/// never change the invoice's lines, total or number.
pub async fn credit_notes_never_exceed_what_remains(store: Arc<dyn InvoiceStore>) {
    let tenant = TenantId::new();
    let at = start() + TimeDelta::days(2);
    let invoice = thirty(&*store, tenant).await;
    let goodwill =
        |line, amount| CreditNoteRequest::line(CreditReason::Goodwill, line, usd(amount));
    let (after, note) = store
        .issue_credit_note(tenant, invoice.id, goodwill(1, dec!(4.00)), at)
        .await
        .unwrap();
    assert_eq!(note.number.issuer, invoice.number.as_ref().unwrap().issuer);
    assert_eq!(note.number.sequence, 1);
    assert_eq!(
        (note.total, note.applied_to_balance),
        (usd(dec!(4.00)), usd(dec!(4.00)))
    );
    assert!(note.refund.is_zero());
    assert_eq!(note.lines[0].invoice_line, Some(1));
    assert_eq!(
        after.payment_state().unwrap().amount_remaining().unwrap(),
        usd(dec!(26.00))
    );
    assert_eq!(
        (&after.lines, after.total, &after.number),
        (&invoice.lines, invoice.total, &invoice.number)
    );
    for refused in [
        goodwill(1, dec!(6.01)),
        goodwill(7, dec!(1.00)),
        goodwill(0, dec!(0)),
    ] {
        let err = store
            .issue_credit_note(tenant, invoice.id, refused, at)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
    let whole = CreditNoteRequest::whole(CreditReason::Duplicate);
    let (paid, second) = store
        .issue_credit_note(tenant, invoice.id, whole.clone(), at)
        .await
        .unwrap();
    assert_eq!(
        (second.number.sequence, second.total),
        (2, usd(dec!(26.00)))
    );
    let state = paid.payment_state().unwrap();
    assert_eq!(state.status, PaymentStatus::Paid);
    assert_eq!(state.credited(), usd(dec!(30.00)));
    let err = store
        .issue_credit_note(tenant, invoice.id, whole, at)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let notes = store.credit_notes(tenant, invoice.id).await.unwrap();
    assert_eq!(notes, [note, second]);
    assert!(
        store
            .credit_notes(TenantId::new(), invoice.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.get(tenant, invoice.id).await.unwrap(), paid);

    let open = store
        .create(draft(tenant, SubscriptionId::new(), 0))
        .await
        .unwrap();
    let err = store
        .issue_credit_note(tenant, open.id, goodwill(0, dec!(1)), at)
        .await
        .unwrap_err();
    assert!(matches!(err, BillingError::InvoiceNotFinalized { .. }));
    let err = store
        .issue_credit_note(TenantId::new(), invoice.id, goodwill(0, dec!(1)), at)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// On a paid invoice a credit note is a refund; on a partly paid one it
/// first settles what remains; a void invoice takes none.
pub async fn credit_notes_after_payment_are_refunds(store: Arc<dyn InvoiceStore>) {
    let tenant = TenantId::new();
    let at = start() + TimeDelta::days(2);
    let refund = |amount| CreditNoteRequest::amount(CreditReason::Refund, usd(amount));
    let invoice = thirty(&*store, tenant).await;
    let pay = |amount| PaymentChange::Payment {
        amount: usd(amount),
    };
    store
        .apply_payment(tenant, invoice.id, pay(dec!(25.00)), at)
        .await
        .unwrap();
    let (after, note) = store
        .issue_credit_note(tenant, invoice.id, refund(dec!(10.00)), at)
        .await
        .unwrap();
    assert_eq!(
        (note.applied_to_balance, note.refund),
        (usd(dec!(5.00)), usd(dec!(5.00)))
    );
    assert_eq!(after.payment_state().unwrap().status, PaymentStatus::Paid);
    let (_, note) = store
        .issue_credit_note(tenant, invoice.id, refund(dec!(20.00)), at)
        .await
        .unwrap();
    assert_eq!(
        (note.applied_to_balance, note.refund),
        (usd(dec!(0)), usd(dec!(20.00)))
    );

    let voided = thirty(&*store, tenant).await;
    store
        .apply_payment(tenant, voided.id, PaymentChange::Void, at)
        .await
        .unwrap();
    let err = store
        .issue_credit_note(tenant, voided.id, refund(dec!(1.00)), at)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        BillingError::IllegalPaymentTransition {
            from: PaymentStatus::Void,
            ..
        }
    ));
}

/// Eight racing credit notes of 10.00 on a 30.00 invoice: three are
/// issued, numbered 1 to 3; the rest are refused.
pub async fn racing_credit_notes_never_over_credit(store: Arc<dyn InvoiceStore>) {
    let tenant = TenantId::new();
    let invoice = thirty(&*store, tenant).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let request = CreditNoteRequest::amount(CreditReason::Goodwill, usd(dec!(10.00)));
                store
                    .issue_credit_note(tenant, invoice.id, request, start())
                    .await
            })
        })
        .collect();
    let mut numbers = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok((_, note)) => numbers.push(note.number.sequence),
            Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}"),
        }
    }
    numbers.sort_unstable();
    assert_eq!(numbers, [1, 2, 3]);
    let notes = store.credit_notes(tenant, invoice.id).await.unwrap();
    assert_eq!(notes.len(), 3);
}
