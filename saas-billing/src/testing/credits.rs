//! The [`InvoiceStore`] contract for the prepaid credit ledger.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::TimeDelta;
use saas_core::{ErrorKind, TenantId};

use super::fixtures::{draft, finalization, issuer, line, start};
use crate::{
    CreditGrant, Currency, Invoice, InvoiceStore, Money, PaymentStatus, SubscriptionId, dec,
};

fn usd(amount: rust_decimal::Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

async fn finalize(
    store: &dyn InvoiceStore,
    tenant: TenantId,
    amount: rust_decimal::Decimal,
    at: chrono::DateTime<chrono::Utc>,
    credits: bool,
) -> Invoice {
    let invoice = store
        .create(draft(tenant, SubscriptionId::new(), 0))
        .await
        .unwrap();
    let mut done = finalization(vec![line(amount)], at, &issuer());
    if !credits {
        done = done.without_credits();
    }
    store.finalize(tenant, invoice.id, done).await.unwrap()
}

/// Finalization draws the tenant's grants by priority, then soonest
/// expiry, never an expired grant or one in another currency, and only
/// up to what the invoice leaves due; the ledger lists each draw.
pub async fn finalization_consumes_credits_in_order(store: Arc<dyn InvoiceStore>) {
    let tenant = TenantId::new();
    let at = start() + TimeDelta::days(40);
    let grant = |amount| CreditGrant::new(tenant, usd(amount), start()).unwrap();
    let a = grant(dec!(50.00)).with_priority(1);
    let b = grant(dec!(20.00)).expiring_at(start() + TimeDelta::days(90));
    let c = grant(dec!(10.00)).expiring_at(start() + TimeDelta::days(60));
    let expired = grant(dec!(100.00)).expiring_at(at);
    let euros = CreditGrant::new(tenant, Money::new(dec!(100), Currency::EUR), start()).unwrap();
    for g in [&a, &b, &c, &expired, &euros] {
        store.grant_credit(g.clone()).await.unwrap();
    }
    let err = store.grant_credit(a.clone()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);

    let untouched = finalize(&*store, tenant, dec!(30.00), at, false).await;
    assert_eq!(
        untouched.payment_state().unwrap().status,
        PaymentStatus::Open
    );
    let first = finalize(&*store, tenant, dec!(30.00), at, true).await;
    let state = first.payment_state().unwrap();
    assert_eq!(
        (state.status, state.prepaid()),
        (PaymentStatus::Paid, usd(dec!(30.00)))
    );
    let second = finalize(&*store, tenant, dec!(45.00), at, true).await;
    assert_eq!(second.payment_state().unwrap().prepaid(), usd(dec!(45.00)));
    let third = finalize(&*store, tenant, dec!(10.00), at, true).await;
    let state = third.payment_state().unwrap();
    assert_eq!(
        (state.status, state.prepaid()),
        (PaymentStatus::Open, usd(dec!(5.00)))
    );
    assert_eq!(state.amount_remaining().unwrap(), usd(dec!(5.00)));
    assert_eq!(store.get(tenant, third.id).await.unwrap(), third);

    let draws: Vec<_> = store
        .credit_consumptions(tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.grant_id, c.invoice_id, c.amount))
        .collect();
    assert_eq!(
        draws,
        [
            (c.id, first.id, usd(dec!(10.00))),
            (b.id, first.id, usd(dec!(20.00))),
            (a.id, second.id, usd(dec!(45.00))),
            (a.id, third.id, usd(dec!(5.00))),
        ]
    );
    let left: Vec<_> = store
        .credit_balances(tenant, Currency::USD)
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.grant.id, b.remaining))
        .collect();
    assert_eq!(left.len(), 4);
    assert!(
        left.contains(&(expired.id, usd(dec!(100.00)))),
        "expired: kept, unused"
    );
    assert!(
        left.iter()
            .filter(|(id, _)| *id != expired.id)
            .all(|(_, r)| r.is_zero())
    );
    let euro_left = store.credit_balances(tenant, Currency::EUR).await.unwrap();
    assert_eq!(euro_left[0].remaining, Money::new(dec!(100), Currency::EUR));
    assert!(
        store
            .credit_consumptions(TenantId::new())
            .await
            .unwrap()
            .is_empty()
    );
}

/// Eight invoices of 30.00 finalized at once against one grant of
/// 100.00: exactly 100.00 is drawn, never more.
pub async fn racing_finalizations_never_overdraw_a_grant(store: Arc<dyn InvoiceStore>) {
    let tenant = TenantId::new();
    let grant = CreditGrant::new(tenant, usd(dec!(100.00)), start()).unwrap();
    store.grant_credit(grant).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { finalize(&*store, tenant, dec!(30.00), start(), true).await })
        })
        .collect();
    let mut drawn = Vec::new();
    for task in tasks {
        drawn.push(task.await.unwrap().payment_state().unwrap().prepaid());
    }
    assert_eq!(
        Money::checked_sum(Currency::USD, drawn.clone()).unwrap(),
        usd(dec!(100.00))
    );
    assert_eq!(drawn.iter().filter(|d| **d == usd(dec!(30.00))).count(), 3);
    assert_eq!(drawn.iter().filter(|d| **d == usd(dec!(10.00))).count(), 1);
    let balances = store.credit_balances(tenant, Currency::USD).await.unwrap();
    assert!(balances[0].remaining.is_zero());
}
