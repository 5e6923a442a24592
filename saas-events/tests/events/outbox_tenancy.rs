//! The outbox under every tenancy placement: published inside a
//! `PgTenantTx`, stored where the tenant's data lives, found by the relay.

use std::sync::Arc;
use std::time::Duration;

use saas_core::TenantContext;
use saas_events::postgres::{
    DEFAULT_OUTBOX_TABLE, OutboxLocation, OutboxRelay, PgOutbox, RelayConfig, StaticLocations,
};
use saas_events::{Event, InMemoryBus, SubscribeOptions, Subscriber};
use saas_tenancy::Strategy;
use saas_tenancy::postgres::{ScopeMode, SqlIdent, TenantTable, row_security_statements};
use saas_tenancy::testing::pg::PgSandbox;
use saas_test_support::{Service, service_url};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool};

async fn object_name(sandbox: &PgSandbox, ctx: &TenantContext) -> String {
    let tx = sandbox.tenancy.begin(ctx).await.unwrap();
    let name = tx.placement().object_name().unwrap().as_str().to_owned();
    tx.rollback().await.unwrap();
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_follows_every_tenancy_placement() {
    let Some(url) = service_url(Service::Postgres, "outbox_follows_every_tenancy_placement") else {
        return;
    };
    let outbox = PgOutbox::new();
    let mut sandbox = PgSandbox::new(&url, ScopeMode::Shared).await.unwrap();
    let row = sandbox.tenant("ev-row", Strategy::Shared).await.unwrap();
    let other_row = sandbox.tenant("ev-row2", Strategy::Shared).await.unwrap();
    let schema = sandbox.tenant("ev-schema", Strategy::Schema).await.unwrap();
    let database = sandbox.tenant("ev-db", Strategy::Database).await.unwrap();

    // Shared table for row tenants, covered by the tenancy's RLS policy.
    let mut admin = sandbox.admin.acquire().await.unwrap();
    outbox.create_table(&mut admin).await.unwrap();
    let runtime = SqlIdent::new(sandbox.runtime_role.clone()).unwrap();
    let table = TenantTable::new(DEFAULT_OUTBOX_TABLE).unwrap();
    for statement in row_security_statements(&table, &runtime) {
        admin.execute(AssertSqlSafe(statement)).await.unwrap();
    }
    admin
        .execute(AssertSqlSafe(format!(
            "GRANT USAGE, SELECT ON SEQUENCE saas_events_outbox_seq_seq TO {}",
            runtime.quoted()
        )))
        .await
        .unwrap();
    // In the schema tenant's schema (its role gets the table through the
    // tenancy's default privileges)…
    let tenant_schema = object_name(&sandbox, &schema).await;
    {
        let mut tx = sqlx::Connection::begin(&mut *admin).await.unwrap();
        tx.execute(AssertSqlSafe(format!(
            "SET LOCAL search_path TO \"{tenant_schema}\""
        )))
        .await
        .unwrap();
        outbox.create_table(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    drop(admin);
    // …and in the tenant database.
    let tenant_db = object_name(&sandbox, &database).await;
    let base: PgConnectOptions = url.parse().unwrap();
    let db_pool: PgPool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(base.database(&tenant_db))
        .await
        .unwrap();
    let mut conn = db_pool.acquire().await.unwrap();
    outbox.create_table(&mut conn).await.unwrap();
    drop(conn);

    for ctx in [&row, &schema, &database] {
        let mut tx = sandbox.tenancy.begin(ctx).await.unwrap();
        sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, 'paid')")
            .bind(ctx.tenant_id())
            .execute(&mut *tx)
            .await
            .unwrap();
        let event = Event::new(ctx.tenant_id(), "note.added", "/notes", &1).unwrap();
        outbox.publish(&mut tx, "notes", event).await.unwrap();
        tx.commit().await.unwrap();
    }
    // RLS: a row tenant cannot write another tenant's event.
    let mut tx = sandbox.tenancy.begin(&row).await.unwrap();
    let forged = Event::new(other_row.tenant_id(), "note.added", "/notes", &1).unwrap();
    assert!(outbox.publish(&mut tx, "notes", forged).await.is_err());
    tx.rollback().await.unwrap();

    // Each event sits where its tenant's data lives.
    let count = |sql: String, pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let shared = &sandbox.shared_schema;
    let in_shared = format!("SELECT count(*) FROM \"{shared}\".saas_events_outbox");
    let in_schema = format!("SELECT count(*) FROM \"{tenant_schema}\".saas_events_outbox");
    assert_eq!(count(in_shared, sandbox.admin.clone()).await, 1);
    assert_eq!(count(in_schema, sandbox.admin.clone()).await, 1);
    let in_db = "SELECT count(*) FROM saas_events_outbox".to_owned();
    assert_eq!(count(in_db, db_pool.clone()).await, 1);

    let locations = StaticLocations(vec![
        OutboxLocation::new("shared", sandbox.admin.clone(), Some(shared.clone())).unwrap(),
        OutboxLocation::new("schema", sandbox.admin.clone(), Some(tenant_schema)).unwrap(),
        OutboxLocation::new("database", db_pool.clone(), None).unwrap(),
    ]);
    let bus = InMemoryBus::new();
    let mut subs = Vec::new();
    for ctx in [&row, &schema, &database] {
        let options = SubscribeOptions::new().with_tenant(ctx.tenant_id());
        subs.push(bus.subscribe("notes", options).await.unwrap());
    }
    let relay = OutboxRelay::new(
        Arc::new(locations),
        Arc::new(bus.clone()),
        RelayConfig::default(),
    );
    assert_eq!(relay.pending().await.unwrap(), 3);
    assert_eq!(relay.relay_once().await.unwrap(), 3);
    // The bus holds them only in memory: the rows stay until consumed.
    assert_eq!(relay.pending().await.unwrap(), 3);
    for (ctx, sub) in [&row, &schema, &database].into_iter().zip(subs.iter_mut()) {
        let delivery = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(delivery.event().tenant_id(), Some(ctx.tenant_id()));
        delivery.ack().await.unwrap();
    }
    // The next pass deletes what the consumers acknowledged, forwarding
    // nothing again.
    assert_eq!(relay.relay_once().await.unwrap(), 0);
    assert_eq!(relay.pending().await.unwrap(), 0);
    db_pool.close().await;
    sandbox.cleanup().await;
}
