//! Invoice numbers and payment state through the engine, and the
//! subscription statuses payments drive.

use std::sync::Arc;

use saas_billing::{
    BillingEngine, BillingError, BillingEvent, BillingStores, Currency, InvoiceIssuer, IssuerId,
    ManualClock, NewSubscription, PaymentStatus, SubscriptionStatus, Trial, dec,
};
use saas_core::TenantId;

use crate::fixtures::{at, catalog, harness, plan, usd};

/// A `basic` (30.00 a month) subscription billed for two months: the two
/// finalized invoices are numbered 1 and 2 of the default issuer, open
/// for 30.00; a failed payment makes the subscription past_due, giving up
/// makes it unpaid, paying makes it active again.
#[tokio::test]
async fn payments_drive_past_due_unpaid_and_active() {
    let mut h = harness(at(2024, 1, 1, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD).trial(Trial::None);
    let sub = h.engine().create_subscription(new).await.unwrap();
    h.advance_months(2).await.unwrap();
    h.advance(saas_billing::TimeDelta::days(2)).await.unwrap();
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    let numbers: Vec<String> = invoices
        .iter()
        .filter_map(|i| i.number.as_ref().map(|n| n.to_string()))
        .collect();
    assert_eq!(numbers, ["default-000001", "default-000002"]);
    let (january, february) = (&invoices[0], &invoices[1]);
    let open = january.payment_state().unwrap();
    assert_eq!(open.status, PaymentStatus::Open);
    assert_eq!(open.amount_due, usd(dec!(30.00)));
    assert!(h.events().iter().any(|e| matches!(
        e,
        BillingEvent::InvoiceFinalized { number: Some(n), .. } if n.sequence == 2
    )));
    let status = |h: &saas_billing::testing::BillingHarness| {
        let (engine, id) = (h.engine().clone(), sub.id());
        async move { engine.subscription(tenant, id).await.unwrap().status() }
    };

    let engine = h.engine();
    engine
        .record_payment_failure(tenant, january.id)
        .await
        .unwrap();
    assert_eq!(status(&h).await, SubscriptionStatus::PastDue);
    engine.mark_uncollectible(tenant, january.id).await.unwrap();
    assert_eq!(status(&h).await, SubscriptionStatus::Unpaid);
    // February failing too: still unpaid while January is uncollectible.
    engine
        .record_payment_failure(tenant, february.id)
        .await
        .unwrap();
    assert_eq!(status(&h).await, SubscriptionStatus::Unpaid);
    // A partial payment of January settles nothing.
    let part = engine
        .record_payment(tenant, january.id, usd(dec!(10.00)))
        .await
        .unwrap();
    assert_eq!(
        part.payment_state().unwrap().amount_remaining().unwrap(),
        usd(dec!(20.00))
    );
    assert_eq!(status(&h).await, SubscriptionStatus::Unpaid);
    let paid = engine
        .record_payment(tenant, january.id, usd(dec!(20.00)))
        .await
        .unwrap();
    assert_eq!(paid.payment_state().unwrap().status, PaymentStatus::Paid);
    // January paid; February's failure remains: past_due (through the
    // table: unpaid → active on the payment, → past_due on the failure).
    assert_eq!(status(&h).await, SubscriptionStatus::PastDue);
    engine.void_invoice(tenant, february.id).await.unwrap();
    assert_eq!(status(&h).await, SubscriptionStatus::Active);

    let changes: Vec<(&str, PaymentStatus, PaymentStatus)> = h
        .events()
        .iter()
        .filter_map(|e| match e {
            BillingEvent::InvoicePaymentChanged {
                change, from, to, ..
            } => Some((*change, *from, *to)),
            _ => None,
        })
        .collect();
    use PaymentStatus::{Open, Paid, Uncollectible, Void};
    assert_eq!(
        changes,
        [
            ("payment_failed", Open, Open),
            ("mark_uncollectible", Open, Uncollectible),
            ("payment_failed", Open, Open),
            ("payment", Uncollectible, Uncollectible),
            ("payment", Uncollectible, Paid),
            ("void", Open, Void),
        ]
    );
    let statuses: Vec<(SubscriptionStatus, SubscriptionStatus)> = h
        .events()
        .iter()
        .filter_map(|e| match e {
            BillingEvent::SubscriptionStatusChanged { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect();
    use SubscriptionStatus::{Active, PastDue, Unpaid};
    assert_eq!(
        statuses,
        [
            (Active, PastDue),
            (PastDue, Unpaid),
            (Unpaid, PastDue),
            (PastDue, Active)
        ]
    );
}

/// Payment changes on a draft, or refused by the invoice's status,
/// change nothing.
#[tokio::test]
async fn payment_changes_on_drafts_and_settled_invoices_are_refused() {
    let mut h = harness(at(2024, 1, 1, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD).trial(Trial::None);
    let sub = h.engine().create_subscription(new).await.unwrap();
    h.advance_months(1).await.unwrap();
    let draft = h
        .engine()
        .invoices(tenant, sub.id())
        .await
        .unwrap()
        .remove(0);
    assert!(!draft.is_finalized());
    let err = h
        .engine()
        .record_payment(tenant, draft.id, usd(dec!(30.00)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BillingError::InvoiceNotFinalized { .. }),
        "{err}"
    );
    h.advance(saas_billing::TimeDelta::days(2)).await.unwrap();
    h.engine()
        .record_payment(tenant, draft.id, usd(dec!(30.00)))
        .await
        .unwrap();
    let err = h.engine().void_invoice(tenant, draft.id).await.unwrap_err();
    assert!(matches!(
        err,
        BillingError::IllegalPaymentTransition {
            from: PaymentStatus::Paid,
            change: "void",
            ..
        }
    ));
    let status = h
        .engine()
        .subscription(tenant, sub.id())
        .await
        .unwrap()
        .status();
    assert_eq!(status, SubscriptionStatus::Active);
}

/// With one sequence per tenant, each tenant's invoices are numbered from
/// 1, the issuer named by the tenant id; a fixed issuer shares one.
#[tokio::test]
async fn per_tenant_issuers_number_each_tenant_from_one() {
    let clock = ManualClock::new(at(2024, 1, 1, 0));
    let stores = BillingStores::in_memory();
    let engine = BillingEngine::new(Arc::new(catalog()), stores.clone(), Arc::new(clock.clone()))
        .with_invoice_issuer(InvoiceIssuer::PerTenant);
    let (a, b) = (TenantId::new(), TenantId::new());
    let mut subs = Vec::new();
    for tenant in [a, b] {
        let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD).trial(Trial::None);
        subs.push((tenant, engine.create_subscription(new).await.unwrap().id()));
    }
    clock.set(at(2024, 3, 3, 0));
    engine.run_billing_cycle().await.unwrap();
    for (tenant, sub) in &subs {
        let numbers: Vec<_> = engine
            .invoices(*tenant, *sub)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|i| i.number)
            .collect();
        let issuer = IssuerId::new(tenant.to_string()).unwrap();
        assert_eq!(numbers.len(), 2);
        assert!(numbers.iter().all(|n| n.issuer == issuer));
        assert_eq!(
            numbers.iter().map(|n| n.sequence).collect::<Vec<_>>(),
            [1, 2]
        );
    }

    // The same stores with one legal entity: its own sequence from 1.
    let entity = IssuerId::new("acme-eu").unwrap();
    let engine = BillingEngine::new(Arc::new(catalog()), stores, Arc::new(clock.clone()))
        .with_invoice_issuer(InvoiceIssuer::Single(entity.clone()));
    clock.set(at(2024, 4, 3, 0));
    engine.run_billing_cycle().await.unwrap();
    let mut sequences = Vec::new();
    for (tenant, sub) in &subs {
        let invoices = engine.invoices(*tenant, *sub).await.unwrap();
        let number = invoices[2].number.clone().unwrap();
        assert_eq!(number.issuer, entity);
        sequences.push(number.sequence);
    }
    sequences.sort_unstable();
    assert_eq!(sequences, [1, 2]);
}
