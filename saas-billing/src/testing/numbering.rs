//! The [`InvoiceStore`] contract for invoice numbers and payment state.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::TimeDelta;
use saas_core::{ErrorKind, TenantId};

use super::fixtures::{draft, finalization, issuer, line, start};
use crate::{
    BillingError, Currency, InvoiceStore, IssuerId, Money, PaymentChange, PaymentStatus,
    SubscriptionId, dec,
};

/// Finalizes a new draft of a new subscription with `lines`, numbered by
/// `issuer`; the number's sequence.
async fn finalize_new(
    store: &dyn InvoiceStore,
    tenant: TenantId,
    issuer: &IssuerId,
    amount: rust_decimal::Decimal,
) -> crate::Invoice {
    let invoice = store
        .create(draft(tenant, SubscriptionId::new(), 0))
        .await
        .unwrap();
    store
        .finalize(
            tenant,
            invoice.id,
            finalization(vec![line(amount)], start(), issuer),
        )
        .await
        .unwrap()
}

fn sequence(invoice: &crate::Invoice) -> u64 {
    invoice.number.as_ref().unwrap().sequence
}

/// Numbers are 1, 2, 3… per issuer, given at finalization; a refused
/// finalization takes none; the payment state starts open for the total
/// (paid at once when nothing is due).
pub async fn numbers_are_sequential_per_issuer(store: Arc<dyn InvoiceStore>) {
    let tenant = TenantId::new();
    let (a, b) = (issuer(), issuer());
    let first = finalize_new(&*store, tenant, &a, dec!(30.00)).await;
    assert_eq!(first.number.as_ref().unwrap().issuer, a);
    assert_eq!(sequence(&first), 1);
    assert_eq!(
        sequence(&finalize_new(&*store, tenant, &b, dec!(5)).await),
        1
    );
    assert_eq!(
        sequence(&finalize_new(&*store, tenant, &a, dec!(5)).await),
        2
    );
    // A refused second finalization takes no number.
    let err = store
        .finalize(tenant, first.id, finalization(Vec::new(), start(), &a))
        .await
        .unwrap_err();
    assert!(matches!(err, BillingError::InvoiceFinalized { .. }));
    assert_eq!(
        sequence(&finalize_new(&*store, tenant, &a, dec!(5)).await),
        3
    );
    assert_eq!(
        sequence(&finalize_new(&*store, tenant, &b, dec!(5)).await),
        2
    );
    // Drafts have no number and no payment state.
    let open = store
        .create(draft(tenant, SubscriptionId::new(), 0))
        .await
        .unwrap();
    assert_eq!((open.number, open.payment), (None, None));

    let payment = first.payment.clone().unwrap();
    assert_eq!(payment.status, PaymentStatus::Open);
    assert_eq!(payment.amount_due, Money::new(dec!(30.00), Currency::USD));
    assert!(payment.amount_paid.is_zero());
    assert_eq!(store.get(tenant, first.id).await.unwrap(), first);
    let free = finalize_new(&*store, tenant, &a, dec!(0)).await;
    assert_eq!(free.payment.unwrap().status, PaymentStatus::Paid);
    let credit = finalize_new(&*store, tenant, &a, dec!(-4.00)).await;
    let credit = credit.payment.unwrap();
    assert_eq!(
        (credit.status, credit.amount_due.is_zero()),
        (PaymentStatus::Paid, true)
    );
}

/// `finalizers` tasks each finalize `per_finalizer` new drafts of one
/// issuer at once: the numbers are exactly 1..=finalizers × per_finalizer,
/// no gap, no duplicate.
pub async fn concurrent_numbering(
    store: Arc<dyn InvoiceStore>,
    finalizers: usize,
    per_finalizer: usize,
) {
    let tenant = TenantId::new();
    let shared = issuer();
    let tasks: Vec<_> = (0..finalizers)
        .map(|_| {
            let (store, shared) = (store.clone(), shared.clone());
            tokio::spawn(async move {
                let mut numbers = Vec::with_capacity(per_finalizer);
                for _ in 0..per_finalizer {
                    let done = finalize_new(&*store, tenant, &shared, dec!(1)).await;
                    numbers.push(sequence(&done));
                }
                numbers
            })
        })
        .collect();
    let mut numbers = Vec::new();
    for task in tasks {
        numbers.extend(task.await.unwrap());
    }
    let total = finalizers * per_finalizer;
    let distinct: BTreeSet<u64> = numbers.iter().copied().collect();
    assert_eq!(numbers.len(), total);
    assert_eq!(distinct.len(), total, "no number given twice");
    let expected: BTreeSet<u64> = (1..=total as u64).collect();
    assert_eq!(distinct, expected, "1..={total} with no gap");
}

/// 8 finalizers × 25 invoices of one issuer: numbers 1..=200, no gap, no
/// duplicate (the SQL backends' own tests run 8 × 500).
pub async fn racing_finalizations_number_without_gaps(store: Arc<dyn InvoiceStore>) {
    concurrent_numbering(store, 8, 25).await;
}

/// Payments, failures, uncollectible and void follow
/// [`InvoicePayment::apply`](crate::InvoicePayment::apply); a refused
/// change changes nothing; lines and number never change.
pub async fn payment_changes_follow_the_rules(store: Arc<dyn InvoiceStore>) {
    let tenant = TenantId::new();
    let usd = |a| Money::new(a, Currency::USD);
    let at = start() + TimeDelta::days(3);
    let pay = |a| PaymentChange::Payment { amount: usd(a) };
    let draft = store
        .create(draft(tenant, SubscriptionId::new(), 0))
        .await
        .unwrap();
    let err = store
        .apply_payment(tenant, draft.id, pay(dec!(1)), at)
        .await;
    assert!(matches!(err, Err(BillingError::InvoiceNotFinalized { .. })));

    let invoice = finalize_new(&*store, tenant, &issuer(), dec!(30.00)).await;
    let part = store
        .apply_payment(tenant, invoice.id, pay(dec!(10.00)), at)
        .await
        .unwrap();
    let state = part.payment.clone().unwrap();
    assert_eq!(state.status, PaymentStatus::Open);
    assert_eq!(state.amount_remaining().unwrap(), usd(dec!(20.00)));
    assert_eq!(state.changed_at, at);
    assert_eq!(
        (part.lines.clone(), part.number.clone()),
        (invoice.lines.clone(), invoice.number.clone())
    );
    for refused in [pay(dec!(20.01)), pay(dec!(0)), pay(dec!(-1))] {
        let err = store
            .apply_payment(tenant, invoice.id, refused, at)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
    let euros = PaymentChange::Payment {
        amount: Money::new(dec!(1), Currency::EUR),
    };
    let err = store
        .apply_payment(tenant, invoice.id, euros, at)
        .await
        .unwrap_err();
    assert!(matches!(err, BillingError::CurrencyMismatch { .. }));
    // Partly paid: not voidable (a refund is a credit note).
    let err = store
        .apply_payment(tenant, invoice.id, PaymentChange::Void, at)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        BillingError::IllegalPaymentTransition {
            from: PaymentStatus::Open,
            ..
        }
    ));
    assert_eq!(
        store.get(tenant, invoice.id).await.unwrap(),
        part,
        "refusals change nothing"
    );

    let failed = store
        .apply_payment(tenant, invoice.id, PaymentChange::PaymentFailed, at)
        .await
        .unwrap();
    assert_eq!(failed.payment.as_ref().unwrap().failed_attempts, 1);
    assert!(failed.payment.as_ref().unwrap().is_delinquent());
    let given_up = store
        .apply_payment(tenant, invoice.id, PaymentChange::MarkUncollectible, at)
        .await
        .unwrap();
    assert_eq!(
        given_up.payment.unwrap().status,
        PaymentStatus::Uncollectible
    );
    let paid = store
        .apply_payment(tenant, invoice.id, pay(dec!(20.00)), at)
        .await
        .unwrap();
    let state = paid.payment.clone().unwrap();
    assert_eq!(state.status, PaymentStatus::Paid);
    assert_eq!(state.amount_paid, usd(dec!(30.00)));
    assert!(state.amount_remaining().unwrap().is_zero());
    for change in [
        pay(dec!(1)),
        PaymentChange::Void,
        PaymentChange::PaymentFailed,
        PaymentChange::MarkUncollectible,
    ] {
        let err = store
            .apply_payment(tenant, invoice.id, change, at)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            BillingError::IllegalPaymentTransition {
                from: PaymentStatus::Paid,
                ..
            }
        ));
        assert_eq!(err.kind(), ErrorKind::Conflict);
    }
    assert_eq!(store.get(tenant, invoice.id).await.unwrap(), paid);

    let voided = finalize_new(&*store, tenant, &issuer(), dec!(12.00)).await;
    let voided = store
        .apply_payment(tenant, voided.id, PaymentChange::Void, at)
        .await
        .unwrap();
    let state = voided.payment.clone().unwrap();
    assert_eq!(state.status, PaymentStatus::Void);
    assert!(state.amount_remaining().unwrap().is_zero());
    let err = store
        .apply_payment(tenant, voided.id, pay(dec!(12.00)), at)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        BillingError::IllegalPaymentTransition {
            from: PaymentStatus::Void,
            ..
        }
    ));

    let other = TenantId::new();
    let err = store
        .apply_payment(other, voided.id, PaymentChange::Void, at)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// Two racing payments of the whole amount: one succeeds, the invoice
/// is paid once.
pub async fn racing_payments_pay_once(store: Arc<dyn InvoiceStore>) {
    let tenant = TenantId::new();
    let invoice = finalize_new(&*store, tenant, &issuer(), dec!(30.00)).await;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let amount = Money::new(dec!(30.00), Currency::USD);
                store
                    .apply_payment(
                        tenant,
                        invoice.id,
                        PaymentChange::Payment { amount },
                        start(),
                    )
                    .await
            })
        })
        .collect();
    let mut succeeded = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => succeeded += 1,
            Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
        }
    }
    assert_eq!(succeeded, 1);
    let paid = store
        .get(tenant, invoice.id)
        .await
        .unwrap()
        .payment
        .unwrap();
    assert_eq!(paid.amount_paid, Money::new(dec!(30.00), Currency::USD));
}
