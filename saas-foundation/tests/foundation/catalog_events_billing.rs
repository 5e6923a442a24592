//! Subscription events written by triggers on billing's
//! `billing_subscriptions`, through billing's own SQL stores: created,
//! and status changed (a pause); an unchanged status and a rolled-back
//! change write nothing.

use chrono::Duration;
use saas_billing::testing::fixtures;
use saas_billing::{RoundingMode, Subscription, SubscriptionStore};
use saas_core::TenantId;
use saas_foundation::catalog_events::{
    BILLING_SOURCE, BILLING_TOPIC, SUBSCRIPTION_CREATED, SUBSCRIPTION_STATUS_CHANGED,
    SqliteCatalogEvents,
};
use saas_foundation::events::{Data, Event};
use sqlx::Connection;

use crate::catalog_events::{Step, owned, step};

/// Creates, pauses and saves again (unchanged) a subscription of a new
/// tenant through `store`; returns the tenant and the subscription.
async fn create_and_pause(store: &dyn SubscriptionStore) -> (TenantId, Subscription) {
    let tenant = TenantId::new();
    let created = store
        .insert(fixtures::subscription(tenant, fixtures::start()))
        .await
        .unwrap();
    let mut paused = created.clone();
    paused
        .pause(
            &fixtures::catalog(),
            fixtures::start() + Duration::days(14),
            RoundingMode::HalfUp,
        )
        .unwrap();
    let paused = store.update(paused).await.unwrap();
    store.update(paused.clone()).await.unwrap();
    (tenant, created)
}

/// The rows as expected: created then paused, for `tenant`.
fn check(rows: &[(Option<uuid::Uuid>, String, Event)], tenant: TenantId, sub: &Subscription) {
    let steps: Vec<Step> = rows.iter().map(|(_, _, e)| step(e)).collect();
    assert_eq!(
        steps,
        vec![
            owned(SUBSCRIPTION_CREATED, None, Some("active")),
            owned(SUBSCRIPTION_STATUS_CHANGED, Some("active"), Some("paused")),
        ]
    );
    for (row_tenant, topic, event) in rows {
        assert_eq!(*row_tenant, Some(*tenant.as_uuid()));
        assert_eq!(topic, BILLING_TOPIC);
        assert_eq!(event.source(), BILLING_SOURCE);
        assert_eq!(event.tenant_id(), Some(tenant));
        let id = sub.id().as_uuid().to_string();
        assert_eq!(event.subject(), Some(id.as_str()));
        let Some(Data::Json(data)) = event.data() else {
            panic!("no data")
        };
        assert_eq!(data["id"], id);
        assert_eq!(data["tenant_id"], tenant.to_string());
        assert_eq!(
            data["plan"],
            serde_json::json!({"plan": "basic", "version": 1})
        );
    }
}

#[tokio::test]
async fn sqlite_subscription_changes_write_their_events() {
    use saas_billing::store::sqlite::SqliteBillingStores;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    let dir = std::env::temp_dir().join(saas_test_support::unique_name("saas_billing_events"));
    std::fs::create_dir_all(&dir).unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.join("billing.sqlite"))
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    let stores = SqliteBillingStores::new(pool.clone());
    stores.migrate().await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    SqliteCatalogEvents::new()
        .install_billing_events(&mut conn)
        .await
        .unwrap();
    let (tenant, sub) = create_and_pause(&stores.subscriptions()).await;

    // A status change rolled back writes nothing.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("UPDATE billing_subscriptions SET state = json_set(state, '$.status', 'active')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let rows: Vec<(Option<uuid::Uuid>, String, String)> =
        sqlx::query_as("SELECT tenant_id, topic, event FROM saas_events_outbox ORDER BY seq")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let rows: Vec<_> = rows
        .into_iter()
        .map(|(t, topic, body)| (t, topic, Event::from_json_str(&body).unwrap()))
        .collect();
    check(&rows, tenant, &sub);
    drop(conn);
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn pg_subscription_changes_write_their_events() {
    use std::str::FromStr;

    use saas_billing::store::postgres::PgBillingStores;
    use saas_foundation::catalog_events::PgCatalogEvents;
    use saas_test_support::{Service, service_url, unique_name};
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use sqlx::{AssertSqlSafe, Executor};

    let Some(url) = service_url(Service::Postgres, "pg_subscription_changes_write_events") else {
        return;
    };
    let schema = unique_name("saas_billing_events");
    let base = PgConnectOptions::from_str(&url).unwrap();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(base.clone())
        .await
        .unwrap();
    admin
        .execute(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .await
        .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(base.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    let stores = PgBillingStores::new(pool.clone());
    stores.migrate().await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    // No row tenant's tables here: the outbox may share the schema.
    PgCatalogEvents::new(&schema, &schema)
        .unwrap()
        .install_billing_events(&mut conn)
        .await
        .unwrap();
    let (tenant, sub) = create_and_pause(&stores.subscriptions()).await;

    let mut tx = conn.begin().await.unwrap();
    sqlx::query(
        "UPDATE billing_subscriptions SET state = jsonb_set(state, '{status}', '\"active\"')",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();

    let rows: Vec<(Option<uuid::Uuid>, String, String)> =
        sqlx::query_as("SELECT tenant_id, topic, event FROM saas_events_outbox ORDER BY seq")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let rows: Vec<_> = rows
        .into_iter()
        .map(|(t, topic, body)| (t, topic, Event::from_json_str(&body).unwrap()))
        .collect();
    check(&rows, tenant, &sub);
    drop(conn);
    pool.close().await;
    let _ = admin
        .execute(AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
        .await;
    admin.close().await;
}
