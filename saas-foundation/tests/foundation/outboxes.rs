//! Outbox locations from the tenant catalog: ten database tenants over a
//! pool budget of two — every tenant's events are delivered, the relay
//! never holds more tenant connections than the budget, and a tenant's
//! file cannot speak for another tenant.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use saas_core::{TenantContext, TenantId, TenantSlug};
use saas_events::{Event, InMemoryBus, SubscribeOptions, Subscriber, Subscription};
use saas_foundation::outboxes::{PgTenantOutboxes, SqliteTenantOutboxes};
use saas_tenancy::Strategy;
use saas_tenancy::postgres::{PoolLimits, ScopeMode};
use saas_tenancy::testing::pg::PgSandbox;
use saas_tenancy::testing::sqlite::{SQLITE_NOTES, SqliteSandbox};
use saas_test_support::{Service, require_service};
use sqlx::migrate::{Migration, MigrationType};
use sqlx::{AssertSqlSafe, SqlSafeStr};

const TOPIC: &str = "notes";
const TENANTS: usize = 10;
const EVENTS_EACH: u32 = 5;

fn limits() -> PoolLimits {
    PoolLimits::new(2, 1).with_acquire_timeout(Duration::from_secs(30))
}

fn migration(sql: String) -> Vec<Migration> {
    vec![Migration::new(
        1,
        "notes and outbox".into(),
        MigrationType::Simple,
        AssertSqlSafe(sql).into_sql_str(),
        false,
    )]
}

fn event(ctx: &TenantContext, n: u32) -> Event {
    Event::new(ctx.tenant_id(), "note.added", "/tests", &n).unwrap()
}

/// Receives until every tenant's `EVENTS_EACH` events have arrived (or 60
/// s pass), calling `sample` between deliveries; returns the numbers
/// received per tenant.
async fn collect(
    sub: &mut Subscription,
    mut sample: impl AsyncFnMut(),
) -> BTreeMap<TenantId, BTreeSet<u32>> {
    let mut got: BTreeMap<TenantId, BTreeSet<u32>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.values().map(BTreeSet::len).sum::<usize>() < TENANTS * EVENTS_EACH as usize {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some(delivery)) = tokio::time::timeout(left, sub.next()).await else {
            break;
        };
        let delivery = delivery.unwrap();
        let tenant = delivery.event().tenant_id().unwrap();
        let n: u32 = delivery.event().data_as().unwrap();
        got.entry(tenant).or_default().insert(n);
        delivery.ack().await.unwrap();
        sample().await;
    }
    got
}

fn assert_all_delivered(got: &BTreeMap<TenantId, BTreeSet<u32>>, tenants: &[TenantContext]) {
    let expected: BTreeSet<u32> = (0..EVENTS_EACH).collect();
    assert_eq!(got.len(), TENANTS, "events from every tenant");
    for ctx in tenants {
        assert_eq!(
            got.get(&ctx.tenant_id()),
            Some(&expected),
            "all of {}'s events",
            ctx.slug()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_database_tenants_are_relayed_within_the_pool_budget() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let outbox = saas_events::sqlite::SqliteOutbox::new();
    let tenancy = sandbox
        .builder(migration(format!(
            "{SQLITE_NOTES}; {};",
            outbox.create_table_sql()
        )))
        .unwrap()
        .pool_limits(limits())
        .build()
        .unwrap();
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        let new = tenancy
            .new_tenant(
                TenantSlug::parse(&format!("t{i}")).unwrap(),
                "tenant",
                Strategy::Database,
            )
            .await
            .unwrap();
        let record = tenancy.provision(new).await.unwrap();
        tenants.push(TenantContext::new(record.id, record.slug));
    }
    for ctx in &tenants {
        let mut tx = tenancy.begin(ctx).await.unwrap();
        let events = (0..EVENTS_EACH).map(|n| event(ctx, n)).collect();
        outbox.publish_batch(&mut tx, TOPIC, events).await.unwrap();
        tx.commit().await.unwrap();
    }
    let bus = InMemoryBus::new();
    let mut sub = bus
        .subscribe(TOPIC, SubscribeOptions::new().with_group("audit"))
        .await
        .unwrap();
    let outboxes = Arc::new(SqliteTenantOutboxes::new(&tenancy));
    // Evictions from here on are the relay's: the publishing above took
    // turns in the registry too.
    let evictions_before = tenancy.pool_stats().await.evictions;
    let relay = saas_events::sqlite::OutboxRelay::new(
        outboxes.clone(),
        Arc::new(bus.clone()),
        saas_events::sqlite::RelayConfig::default().with_poll_interval(Duration::from_millis(20)),
    )
    .spawn();
    let mut most_reserved = 0;
    let got = collect(&mut sub, async || {
        most_reserved = most_reserved.max(tenancy.pool_stats().await.reserved);
    })
    .await;
    assert_all_delivered(&got, &tenants);
    assert!(most_reserved <= 2, "at most the budget: {most_reserved}");
    assert!(
        tenancy.pool_stats().await.evictions > evictions_before,
        "ten tenants took turns in two slots"
    );
    // The first tenant's file claims to speak for the second: refused (the
    // row stays, holding back that file's later rows, as a stall to see).
    let mut tx = tenancy.begin(&tenants[0]).await.unwrap();
    let forged = Event::new(tenants[1].tenant_id(), "note.added", "/tests", &99u32).unwrap();
    outbox.publish(&mut tx, TOPIC, forged).await.unwrap();
    tx.commit().await.unwrap();
    let more = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
    assert!(more.is_err(), "the forged event must not be delivered");
    assert_eq!(
        relay.relay().pending().await.unwrap(),
        1,
        "only the forged row is left"
    );
    relay.shutdown().await;
    outboxes.close().await;
    drop(tenancy);
    sandbox.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_database_tenants_are_relayed_within_the_pool_budget() {
    let url = require_service!(Service::Postgres);
    let sandbox = PgSandbox::new(&url, ScopeMode::Shared).await.unwrap();
    let outbox = saas_events::postgres::PgOutbox::new();
    let tenant_sql = format!(
        "{}; {};",
        saas_tenancy::testing::pg::NOTES_TENANT,
        outbox.create_table_sql()
    );
    let tenancy = sandbox
        .tenancy_with(|b| {
            b.tenant_migrations(sqlx::migrate::Migrator::with_migrations(migration(
                tenant_sql,
            )))
            .pool_limits(limits())
        })
        .unwrap();
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        let new = tenancy
            .new_tenant(
                TenantSlug::parse(&format!("t{i}")).unwrap(),
                "tenant",
                Strategy::Database,
            )
            .await
            .unwrap();
        let record = tenancy.provision(new).await.unwrap();
        tenants.push(TenantContext::new(record.id, record.slug));
    }
    for ctx in &tenants {
        let mut tx = tenancy.begin(ctx).await.unwrap();
        let events = (0..EVENTS_EACH).map(|n| event(ctx, n)).collect();
        outbox.publish_batch(&mut tx, TOPIC, events).await.unwrap();
        tx.commit().await.unwrap();
    }
    let bus = InMemoryBus::new();
    let mut sub = bus
        .subscribe(TOPIC, SubscribeOptions::new().with_group("audit"))
        .await
        .unwrap();
    // The sandbox's shared tables do not declare an outbox: only the
    // tenant databases are drained.
    let evictions_before = tenancy.pool_stats().await.evictions;
    let relay = saas_events::postgres::OutboxRelay::new(
        Arc::new(PgTenantOutboxes::new(&tenancy)),
        Arc::new(bus.clone()),
        saas_events::postgres::RelayConfig::default().with_poll_interval(Duration::from_millis(20)),
    )
    .spawn();
    let mut most_reserved = 0;
    let mut most_connections = 0;
    let got = collect(&mut sub, async || {
        most_reserved = most_reserved.max(tenancy.pool_stats().await.reserved);
        most_connections = most_connections.max(open_tenant_connections(&sandbox, &tenants).await);
    })
    .await;
    assert_all_delivered(&got, &tenants);
    assert!(most_reserved <= 2, "at most the budget: {most_reserved}");
    assert!(
        most_connections <= 2,
        "tenant-database connections: {most_connections}"
    );
    assert!(
        tenancy.pool_stats().await.evictions > evictions_before,
        "ten tenants took turns in two slots"
    );
    relay.shutdown().await;
    for ctx in &tenants {
        tenancy.delete_tenant(ctx.tenant_id()).await.unwrap();
    }
    drop(tenancy);
    sandbox.cleanup().await;
}

/// Server connections open to the tenants' databases, not counting
/// backends still exiting after their client closed them: a count over
/// the budget is looked at again 100 ms later, and the lower one is kept.
/// (Pools opened outside the budget would hold their connections and show
/// in both.)
async fn open_tenant_connections(sandbox: &PgSandbox, tenants: &[TenantContext]) -> i64 {
    let now = tenant_connections(sandbox, tenants).await;
    if now <= 2 {
        return now;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    now.min(tenant_connections(sandbox, tenants).await)
}

/// Server connections to the tenants' databases now.
async fn tenant_connections(sandbox: &PgSandbox, tenants: &[TenantContext]) -> i64 {
    let ids: Vec<String> = tenants.iter().map(|c| c.tenant_id().to_string()).collect();
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity a JOIN pg_database d ON d.oid = a.datid \
         WHERE d.datname IN (SELECT object_name FROM saas_tenants WHERE id::text = ANY($1))",
    )
    .bind(&ids)
    .fetch_one(&sandbox.admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn only_a_database_tenant_lends_its_own_pool() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    let row = sandbox.tenant("rows", Strategy::Shared).await.unwrap();
    let file = sandbox.tenant("file", Strategy::Database).await.unwrap();
    // A row tenant has no file of its own: lending the shared file would
    // hand out every tenant's rows.
    let refused = sandbox
        .tenancy
        .lease_database_pool(row.tenant_id())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, saas_tenancy::TenancyError::Unsupported(_)),
        "{refused}"
    );
    sandbox
        .tenancy
        .lease_database_pool(file.tenant_id())
        .await
        .unwrap();
    // A suspended tenant's pool is not lent either.
    sandbox.tenancy.suspend(file.tenant_id()).await.unwrap();
    assert!(
        sandbox
            .tenancy
            .lease_database_pool(file.tenant_id())
            .await
            .is_err()
    );
    sandbox.cleanup().await;
}
