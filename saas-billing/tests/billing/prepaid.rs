//! Prepaid credits through the engine: the worked example, the low
//! balance event, and the ledger's append-only rows in SQL.

use saas_billing::{
    BillingEvent, CreditGrant, Currency, InvoiceStore, NewSubscription, PaymentStatus, TenantId,
    Trial, dec,
};

use crate::fixtures::{at, harness, plan, usd};

/// Worked example (README): `pro` with one seat bills 95.00 a month. The
/// tenant holds grant A of 100.00 (priority 0, no expiry) and grant B of
/// 20.00 (priority 1, expiring 2024-02-15). January, finalized Feb 2:
/// A covers 95.00 (priority before expiry), paid; 25.00 is left, below
/// the 50.00 threshold: `CreditBalanceLow`. February, finalized Mar 2: A's
/// last 5.00; B expired unused; 90.00 remains due.
#[tokio::test]
async fn worked_example_a_grant_of_100_over_two_invoices_and_an_expiring_grant() {
    let mut h =
        harness(at(2024, 1, 1, 0)).map_engine(|e| e.with_low_credit_threshold(usd(dec!(50.00))));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("pro", 1), Currency::USD)
        .seats(1)
        .trial(Trial::None);
    let sub = h.engine().create_subscription(new).await.unwrap();
    let a = CreditGrant::new(tenant, usd(dec!(100.00)), h.now()).unwrap();
    let b = CreditGrant::new(tenant, usd(dec!(20.00)), h.now())
        .unwrap()
        .with_priority(1)
        .expiring_at(at(2024, 2, 15, 0));
    h.engine().grant_credit(a.clone()).await.unwrap();
    h.engine().grant_credit(b.clone()).await.unwrap();
    assert_eq!(
        h.engine()
            .credit_balance(tenant, Currency::USD)
            .await
            .unwrap(),
        usd(dec!(120.00))
    );

    h.advance_to(at(2024, 2, 2, 0)).await.unwrap();
    let january = h
        .engine()
        .invoices(tenant, sub.id())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(january.total, usd(dec!(95.00)));
    let state = january.payment_state().unwrap();
    assert_eq!(
        (state.status, state.prepaid()),
        (PaymentStatus::Paid, usd(dec!(95.00)))
    );
    assert_eq!(
        h.engine()
            .credit_balance(tenant, Currency::USD)
            .await
            .unwrap(),
        usd(dec!(25.00))
    );
    let low: Vec<_> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            BillingEvent::CreditBalanceLow {
                balance, threshold, ..
            } => Some((balance, threshold)),
            _ => None,
        })
        .collect();
    assert_eq!(low, [(usd(dec!(25.00)), usd(dec!(50.00)))]);

    h.advance_to(at(2024, 3, 2, 0)).await.unwrap();
    let february = h
        .engine()
        .invoices(tenant, sub.id())
        .await
        .unwrap()
        .remove(1);
    let state = february.payment_state().unwrap();
    assert_eq!(state.prepaid(), usd(dec!(5.00)));
    assert_eq!(state.amount_remaining().unwrap(), usd(dec!(90.00)));
    assert_eq!(state.status, PaymentStatus::Open);
    assert!(
        h.engine()
            .credit_balance(tenant, Currency::USD)
            .await
            .unwrap()
            .is_zero()
    );
    let draws: Vec<_> = h
        .engine()
        .stores()
        .invoices
        .credit_consumptions(tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.grant_id, c.amount))
        .collect();
    assert_eq!(draws, [(a.id, usd(dec!(95.00))), (a.id, usd(dec!(5.00)))]);
    let balances = h
        .engine()
        .stores()
        .invoices
        .credit_balances(tenant, Currency::USD)
        .await
        .unwrap();
    let b_left = balances.iter().find(|x| x.grant.id == b.id).unwrap();
    assert_eq!(
        b_left.remaining,
        usd(dec!(20.00)),
        "expired unused, still on the ledger"
    );
    // Only one crossing, one event.
    let crossings = h
        .events()
        .iter()
        .filter(|e| matches!(e, BillingEvent::CreditBalanceLow { .. }))
        .count();
    assert_eq!(crossings, 1);
}

/// Grants and consumptions cannot be changed or deleted by SQL.
#[tokio::test]
async fn sql_credit_ledgers_are_append_only() {
    async fn grant(store: &dyn InvoiceStore) -> CreditGrant {
        let grant = CreditGrant::new(TenantId::new(), usd(dec!(10)), at(2024, 1, 1, 0)).unwrap();
        store.grant_credit(grant).await.unwrap()
    }
    let (sqlite, cleanup) = crate::sql_stores::sqlite_stores().await;
    let g = grant(&sqlite.invoices()).await;
    for sql in [
        "UPDATE billing_credit_grants SET currency = 'EUR' WHERE id = ?1",
        "DELETE FROM billing_credit_grants WHERE id = ?1",
    ] {
        let done = sqlx::query(sql)
            .bind(g.id.to_string())
            .execute(sqlite.pool())
            .await;
        assert!(done.is_err(), "refused: {sql}");
    }
    cleanup.run().await;
    if let Some((pg, cleanup)) =
        crate::sql_stores::pg_stores("sql_credit_ledgers_are_append_only").await
    {
        let g = grant(&pg.invoices()).await;
        for sql in [
            "UPDATE billing_credit_grants SET currency = 'EUR' WHERE id = $1",
            "DELETE FROM billing_credit_grants WHERE id = $1",
        ] {
            let done = sqlx::query(sql)
                .bind(g.id.as_uuid())
                .execute(pg.pool())
                .await;
            assert!(done.is_err(), "refused: {sql}");
        }
        cleanup.run().await;
    }
}

/// A lagging billing cycle draws the same grants as a punctual one: a
/// grant expiring Feb 10 still covers January when the cycle first runs
/// on Feb 20, since January was due for finalization on Feb 2.
#[tokio::test]
async fn a_lagging_cycle_draws_the_grants_a_punctual_one_would() {
    for run_on in [at(2024, 2, 2, 0), at(2024, 2, 20, 0)] {
        let mut h = harness(at(2024, 1, 1, 0));
        let tenant = TenantId::new();
        let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD).trial(Trial::None);
        let sub = h.engine().create_subscription(new).await.unwrap();
        let grant = CreditGrant::new(tenant, usd(dec!(30.00)), h.now())
            .unwrap()
            .expiring_at(at(2024, 2, 10, 0));
        h.engine().grant_credit(grant).await.unwrap();
        h.advance_to(run_on).await.unwrap();
        let january = h
            .engine()
            .invoices(tenant, sub.id())
            .await
            .unwrap()
            .remove(0);
        let state = january.payment_state().unwrap();
        assert_eq!(
            (state.status, state.prepaid()),
            (PaymentStatus::Paid, usd(dec!(30.00))),
            "cycle run on {run_on}"
        );
    }
}
