//! The SQL stores in use: database-level guards, and a billing scenario
//! run over in-memory, SQLite and PostgreSQL stores that must produce the
//! same invoices on all three.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use saas_billing::testing::BillingHarness;
use saas_billing::{
    BillingConfig, BillingStores, Currency, Invoice, InvoiceStatus, InvoiceStore, LineKind, Money,
    NewSubscription, PlanChange, SubscriptionId, UsageEvent, dec,
};
use saas_billing::{MeterKey, testing::fixtures};
use saas_core::TenantId;
use sqlx::Executor;

use crate::fixtures::{at, catalog, plan};
use crate::sql_stores::{pg_stores, sqlite_stores};

/// What the scenario's invoices say, without their random ids.
type Summary = Vec<(i64, InvoiceStatus, Money, Vec<(LineKind, String, Money)>)>;

fn summary(invoices: &[Invoice]) -> Summary {
    invoices
        .iter()
        .map(|i| {
            let lines = i
                .lines
                .iter()
                .map(|l| (l.kind.clone(), l.quantity.normalize().to_string(), l.amount))
                .collect();
            (i.period_index, i.status, i.total, lines)
        })
        .collect()
}

/// Two subscriptions over three months: one upgraded mid-January with
/// seats, one pay-as-you-go with batched, duplicate, late (within grace)
/// and very late (after finalization) usage.
async fn scenario(stores: BillingStores) -> (Summary, Summary) {
    let calls = MeterKey::new("calls").unwrap();
    let start: DateTime<Utc> = at(2024, 1, 1, 0);
    let mut h = BillingHarness::with_stores(catalog(), start, BillingConfig::default(), stores);
    let (a, b) = (TenantId::new(), TenantId::new());
    let upgraded = h
        .engine()
        .create_subscription(NewSubscription::new(a, plan("basic", 1), Currency::USD))
        .await
        .unwrap();
    let payg = h
        .engine()
        .create_subscription(NewSubscription::new(b, plan("payg", 1), Currency::USD))
        .await
        .unwrap();
    let event = |sub: SubscriptionId, t, key: &str| {
        let tenant = if sub == upgraded.id() { a } else { b };
        UsageEvent::new(tenant, sub, calls.clone(), dec!(1), t, key)
    };
    h.set_time(at(2024, 1, 16, 0));
    let batch: Vec<_> = (0..1500)
        .map(|i| event(upgraded.id(), at(2024, 1, 15, 0), &format!("a-{i}")))
        .chain((0..10).map(|i| event(payg.id(), at(2024, 1, 15, 0), &format!("b-{i}"))))
        .chain([event(payg.id(), at(2024, 1, 15, 0), "b-0")])
        .collect();
    let out = h.engine().record_usage_batch(batch).await.unwrap();
    assert!(out.iter().all(Result::is_ok));
    let pro = PlanChange {
        plan: plan("pro", 1),
        seats: 2,
    };
    h.engine().change_plan(a, upgraded.id(), pro).await.unwrap();
    h.advance_to(at(2024, 2, 1, 0)).await.unwrap();
    h.set_time(at(2024, 2, 1, 12));
    h.engine()
        .record_usage(event(payg.id(), at(2024, 1, 31, 23), "late-1"))
        .await
        .unwrap();
    h.advance_to(at(2024, 2, 2, 0)).await.unwrap();
    h.set_time(at(2024, 2, 3, 0));
    h.engine()
        .record_usage(event(payg.id(), at(2024, 1, 20, 0), "late-2"))
        .await
        .unwrap();
    h.advance_to(at(2024, 3, 2, 0)).await.unwrap();
    h.advance_to(at(2024, 4, 2, 0)).await.unwrap();
    let invoices_a = h.engine().invoices(a, upgraded.id()).await.unwrap();
    let invoices_b = h.engine().invoices(b, payg.id()).await.unwrap();
    (summary(&invoices_a), summary(&invoices_b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_postgres_bill_like_memory() {
    let expected = scenario(BillingStores::in_memory()).await;
    assert_eq!(expected.0.len(), 3);
    assert_eq!(expected.1.len(), 3);
    let (sqlite, cleanup) = sqlite_stores().await;
    assert_eq!(scenario(sqlite.billing_stores()).await, expected);
    cleanup.run().await;
    if let Some((pg, cleanup)) = pg_stores("sqlite_and_postgres_bill_like_memory").await {
        assert_eq!(scenario(pg.billing_stores()).await, expected);
        cleanup.run().await;
    }
}

/// Finalizes a draft of one 10.00 line through the store.
async fn finalized(store: &dyn InvoiceStore) -> Invoice {
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    let invoice = store.create(fixtures::draft(tenant, sub, 0)).await.unwrap();
    store
        .finalize(
            tenant,
            invoice.id,
            fixtures::finalization(
                vec![fixtures::line(saas_billing::dec!(10.00))],
                fixtures::start(),
                &fixtures::issuer(),
            ),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn postgres_refuses_sql_changes_to_finalized_invoices() {
    let Some((pg, cleanup)) = pg_stores("postgres_refuses_sql_changes_to_finalized_invoices").await
    else {
        return;
    };
    let invoice = finalized(&pg.invoices()).await;
    for change in [
        "total = 0",
        "number = number + 1",
        "body = body || '{\"lines\": []}'::jsonb",
    ] {
        let update = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE billing_invoices SET {change} WHERE id = $1"
        )))
        .bind(invoice.id.as_uuid())
        .execute(pg.pool())
        .await;
        assert!(update.is_err(), "the trigger refuses {change}");
    }
    // Its payment state alone may change.
    sqlx::query(
        "UPDATE billing_invoices SET payment_status = 'paid', \
         body = jsonb_set(body, '{payment,status}', '\"paid\"') WHERE id = $1",
    )
    .bind(invoice.id.as_uuid())
    .execute(pg.pool())
    .await
    .unwrap();
    let delete = sqlx::query("DELETE FROM billing_invoices WHERE id = $1")
        .bind(invoice.id.as_uuid())
        .execute(pg.pool())
        .await;
    assert!(delete.is_err(), "the trigger refuses the delete");
    cleanup.run().await;
}

#[tokio::test]
async fn sqlite_refuses_sql_changes_to_finalized_invoices() {
    let (sqlite, cleanup) = sqlite_stores().await;
    let invoice = finalized(&sqlite.invoices()).await;
    for change in [
        "total = '0'",
        "number = number + 1",
        "body = json_set(body, '$.lines', json('[]'))",
    ] {
        let update = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE billing_invoices SET {change} WHERE id = ?1"
        )))
        .bind(invoice.id.to_string())
        .execute(sqlite.pool())
        .await;
        assert!(update.is_err(), "the trigger refuses {change}");
    }
    // Its payment state alone may change.
    sqlx::query(
        "UPDATE billing_invoices SET payment_status = 'paid', \
         body = json_set(body, '$.payment.status', 'paid') WHERE id = ?1",
    )
    .bind(invoice.id.to_string())
    .execute(sqlite.pool())
    .await
    .unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM billing_invoices")
        .fetch_one(sqlite.pool())
        .await
        .unwrap();
    assert_eq!(count, 1);
    sqlite.pool().execute("SELECT 1").await.unwrap();
    cleanup.run().await;
}

/// Amounts are exact: a value with many decimals reads back unchanged.
#[tokio::test]
async fn usage_values_and_instants_round_trip_exactly() {
    let (sqlite, cleanup) = sqlite_stores().await;
    let pg = pg_stores("usage_values_and_instants_round_trip_exactly").await;
    let mut stores: Vec<Arc<dyn saas_billing::UsageStore>> = vec![Arc::new(sqlite.usage())];
    if let Some((pg, _)) = &pg {
        stores.push(Arc::new(pg.usage()));
    }
    for store in stores {
        let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
        let mut record = fixtures::usage(tenant, sub, "exact", 0);
        record.event.value = dec!(0.000000000123456789);
        record.event.timestamp = DateTime::from_timestamp(1_704_067_200, 123_456_789).unwrap();
        record.event = record.event.with_property("region", "eu");
        store.ingest(vec![record.clone()]).await.unwrap();
        let stored = store.billed_in(tenant, sub, 0).await.unwrap();
        assert_eq!(stored[0].event, record.event);
        let again = store.ingest(vec![record]).await.unwrap();
        assert!(matches!(
            again[0],
            Ok(saas_billing::IngestOutcome::Duplicate { billed_in: 0 })
        ));
    }
    cleanup.run().await;
    if let Some((_, cleanup)) = pg {
        cleanup.run().await;
    }
}
