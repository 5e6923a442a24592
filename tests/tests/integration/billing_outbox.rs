//! saas-billing and saas-events in one PostgreSQL transaction: a business
//! row, its usage (`record_usage_in`), its quota grant (`try_consume_in`)
//! and a billing event in saas-events' outbox commit together and the
//! relay delivers the event exactly once; a transaction that rolls back
//! leaves none of them, and the relay delivers nothing for it.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use saas_billing::quota::{PgQuotaStore, QuotaKey, QuotaStore};
use saas_billing::store::postgres::PgBillingStores;
use saas_billing::testing::{BillingHarness, fixtures};
use saas_billing::{
    BillingConfig, Currency, IngestOutcome, MeterKey, NewSubscription, PlanId, PlanRef, UsageEvent,
    dec,
};
use saas_core::TenantId;
use saas_events::postgres::{OutboxLocation, OutboxRelay, PgOutbox, RelayConfig, StaticLocations};
use saas_events::{Event, InMemoryBus, SubscribeOptions, Subscriber, Subscription};
use saas_test_support::{Service, service_url, unique_name};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool};

const TOPIC: &str = "billing";

/// A pool whose `search_path` is a fresh schema, and that schema's name.
async fn scratch(url: &str) -> (PgPool, String) {
    let schema = unique_name("billing_outbox");
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    admin
        .execute(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .await
        .unwrap();
    admin.close().await;
    let options = PgConnectOptions::from_str(url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    (pool, schema)
}

async fn drop_schema(url: &str, pool: PgPool, schema: &str) {
    pool.close().await;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    let _ = admin
        .execute(AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
        .await;
    admin.close().await;
}

/// Nothing more arrives within 200 ms.
async fn assert_quiet(sub: &mut Subscription) {
    let next = tokio::time::timeout(Duration::from_millis(200), sub.next()).await;
    assert!(next.is_err(), "nothing more may arrive");
}

#[tokio::test]
async fn usage_quota_and_billing_event_commit_together_and_are_relayed_once() {
    let test = "usage_quota_and_billing_event_commit_together_and_are_relayed_once";
    let Some(url) = service_url(Service::Postgres, test) else {
        return;
    };
    let (pool, schema) = scratch(&url).await;
    let stores = PgBillingStores::new(pool.clone());
    stores.migrate().await.unwrap();
    let quotas = PgQuotaStore::new(pool.clone());
    quotas.migrate().await.unwrap();
    let outbox = PgOutbox::new();
    outbox
        .create_table(&mut pool.acquire().await.unwrap())
        .await
        .unwrap();
    sqlx::query("CREATE TABLE orders (id text PRIMARY KEY, tenant_id uuid NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();

    let h = BillingHarness::with_stores(
        fixtures::catalog(),
        fixtures::start(),
        BillingConfig::default(),
        stores.billing_stores(),
    );
    let engine = h.engine();
    let tenant = TenantId::new();
    let basic = PlanRef::new(PlanId::new("basic").unwrap(), 1);
    let sub = engine
        .create_subscription(NewSubscription::new(tenant, basic, Currency::USD))
        .await
        .unwrap();
    let quota = QuotaKey::new(tenant, "calls", "2024-01").unwrap();
    let call = |key: &str| {
        let calls = MeterKey::new("calls").unwrap();
        UsageEvent::new(tenant, sub.id(), calls, dec!(1), fixtures::start(), key)
    };

    // The bus and its consumer exist before anything is relayed.
    let bus = InMemoryBus::new();
    let mut consumer = bus
        .subscribe(TOPIC, SubscribeOptions::new().with_group("invoicing"))
        .await
        .unwrap();
    let location = OutboxLocation::new("shared", pool.clone(), Some(schema.clone())).unwrap();
    let relay = OutboxRelay::new(
        Arc::new(StaticLocations(vec![location])),
        Arc::new(bus.clone()),
        RelayConfig::default(),
    );

    // One order per transaction: usage, quota grant and billing event with it.
    for (key, commit) in [("rolled-back", false), ("committed", true)] {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO orders (id, tenant_id) VALUES ($1, $2)")
            .bind(key)
            .bind(tenant.as_uuid())
            .execute(&mut *tx)
            .await
            .unwrap();
        let usage = engine.record_usage_in(&mut *tx, call(key)).await.unwrap();
        assert_eq!(usage.outcome(), &IngestOutcome::Recorded { billed_in: 0 });
        let granted = quotas.try_consume_in(&mut tx, &quota, 1, 100).await;
        assert!(granted.unwrap().is_granted());
        let billing_event =
            Event::new(tenant, "billing.usage.recorded", "/billing", &call(key)).unwrap();
        outbox.publish(&mut tx, TOPIC, billing_event).await.unwrap();
        if commit {
            tx.commit().await.unwrap();
            engine.usage_committed(usage).await;
        } else {
            tx.rollback().await.unwrap();
        }
    }

    let orders: Vec<String> = sqlx::query_scalar("SELECT id FROM orders")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(orders, ["committed"]);
    let usage = stores.billing_stores().usage;
    let stored = usage
        .for_period(tenant, sub.id(), 0, i64::MAX)
        .await
        .unwrap();
    let keys: Vec<&str> = stored
        .iter()
        .map(|u| u.event.idempotency_key.as_str())
        .collect();
    assert_eq!(keys, ["committed"]);
    assert_eq!(quotas.used(&quota).await.unwrap(), 1);

    // Relayed once: the committed transaction's event, and nothing else.
    assert_eq!(relay.relay_once().await.unwrap(), 1);
    let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("a delivery within 5 s")
        .expect("open")
        .unwrap();
    assert_eq!(
        delivery.event().data_as::<UsageEvent>().unwrap(),
        call("committed")
    );
    delivery.ack().await.unwrap();
    // The next passes delete the confirmed row and forward nothing.
    assert_eq!(relay.relay_once().await.unwrap(), 0);
    assert_eq!(relay.relay_once().await.unwrap(), 0);
    assert_eq!(relay.pending().await.unwrap(), 0);
    assert_quiet(&mut consumer).await;

    drop(consumer);
    drop(relay);
    drop_schema(&url, pool, &schema).await;
}
