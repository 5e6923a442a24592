//! The whole foundation opened in one call: tables migrated, tenancy set
//! up, the relay delivering every tenant's events, everything stopped by
//! one handle — and opened again over the same files.

use std::sync::Arc;
use std::time::Duration;

use saas_core::{TenantId, TenantSlug};
use saas_events::router::{ReceivedEvent, Router, handler_fn};
use saas_events::sqlite::{RelayConfig, SqliteOutbox};
use saas_events::{Event, EventError, InMemoryBus, SubscribeOptions, Subscriber};
use saas_foundation::consumers::tenant_handler;
use saas_foundation::services::Services;
use saas_foundation::stack::SqliteStack;
use saas_tenancy::{NewTenant, Strategy, Tenancy, TenantTable};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};

fn migrator(sql: String) -> Migrator {
    let sql = AssertSqlSafe(sql).into_sql_str();
    Migrator::with_migrations(vec![Migration::new(
        1,
        "outbox".into(),
        MigrationType::Simple,
        sql,
        false,
    )])
}

async fn open(dir: &std::path::Path, services: &mut Services) -> SqliteStack {
    let outbox = SqliteOutbox::new();
    let shared = migrator(
        outbox
            .create_table_sql_as("saas_events_outbox_rows")
            .unwrap(),
    );
    let tenant = migrator(outbox.create_table_sql());
    SqliteStack::open(dir, services, |b| {
        b.tenant_table(TenantTable::new("saas_events_outbox").unwrap())
            .shared_migrations(shared)
            .tenant_migrations(tenant)
    })
    .await
    .unwrap()
}

/// A row tenant in the shared file and a tenant with a file of its own.
async fn two_tenants(stack: &SqliteStack) -> Vec<TenantId> {
    let mut tenants = Vec::new();
    for (slug, strategy) in [("rows", Strategy::Shared), ("file", Strategy::Database)] {
        let parsed = TenantSlug::parse(slug).unwrap();
        let new = NewTenant::new(parsed, slug, strategy, stack.cluster().clone()).unwrap();
        tenants.push(stack.tenancy().provision(new).await.unwrap().id);
    }
    tenants
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_stack_relays_every_placements_events_and_reopens() {
    let dir = std::env::temp_dir().join(saas_test_support::unique_name("saas_stack"));
    let mut services = Services::new();
    let stack = open(&dir, &mut services).await;
    let tenancy = stack.tenancy();
    let mut tenants = two_tenants(&stack).await;
    let bus = InMemoryBus::new();
    let mut sub = bus
        .subscribe("notes", SubscribeOptions::new().with_group("audit"))
        .await
        .unwrap();
    let config = RelayConfig::default().with_poll_interval(Duration::from_millis(20));
    stack.start_relay(Arc::new(bus.clone()), config, &mut services);
    for &id in &tenants {
        let ctx = tenancy.context(id).await.unwrap();
        let mut tx = tenancy.begin(&ctx).await.unwrap();
        let event = Event::new(id, "note.added", "/tests", &1u32).unwrap();
        SqliteOutbox::new()
            .publish(&mut tx, "notes", event)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let mut seen: Vec<TenantId> = Vec::new();
    for _ in &tenants {
        let delivery = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        seen.push(delivery.event().tenant_id().unwrap());
        delivery.ack().await.unwrap();
    }
    seen.sort();
    tenants.sort();
    assert_eq!(
        seen, tenants,
        "the shared file's and the tenant file's events"
    );
    services.shutdown().await;

    // Opened again over the same files: migrations already applied, the
    // tenants still there.
    let mut services = Services::new();
    let again = open(&dir, &mut services).await;
    for &id in &tenants {
        let ctx = again.tenancy().context(id).await.unwrap();
        again.tenancy().begin(&ctx).await.unwrap();
    }
    services.shutdown().await;
    drop((stack, again));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `Stack::in_process`: handlers subscribed before the relay starts get
/// every tenant's events, each in the context of the event's own tenant;
/// a handler failing once has the event again (nothing is lost to a
/// failed handler); a second group gets its own copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_consumers_get_each_event_in_its_tenant_until_handled() {
    let dir = std::env::temp_dir().join(saas_test_support::unique_name("saas_in_process"));
    let mut services = Services::new();
    let stack = open(&dir, &mut services).await;
    let tenancy = stack.tenancy();
    let mut tenants = two_tenants(&stack).await;
    // (tenant of the context, tenant of the event, attempt) per call.
    let (calls_tx, mut calls) = tokio::sync::mpsc::unbounded_channel();
    let audit = tenant_handler(Arc::clone(tenancy), move |ctx, received| {
        let calls = calls_tx.clone();
        async move {
            let event_tenant = received.event().tenant_id();
            calls
                .send((ctx.tenant_id(), event_tenant, received.attempt()))
                .ok();
            match received.attempt() {
                1 => Err(EventError::handler("the first attempt fails")),
                _ => Ok(()),
            }
        }
    });
    let (copies_tx, mut copies) = tokio::sync::mpsc::unbounded_channel();
    let billing = Router::new().fallback(handler_fn(move |received: ReceivedEvent| {
        let copies = copies_tx.clone();
        async move {
            copies.send(received.event().tenant_id()).ok();
            Ok(())
        }
    }));
    let config = RelayConfig::default().with_poll_interval(Duration::from_millis(20));
    stack
        .in_process()
        .handler("notes", "audit", audit)
        .consumer("notes", "billing", billing)
        .relay_config(config)
        .start(&mut services)
        .await
        .unwrap();
    for &id in &tenants {
        let ctx = tenancy.context(id).await.unwrap();
        let mut tx = tenancy.begin(&ctx).await.unwrap();
        let event = Event::new(id, "note.added", "/tests", &1u32).unwrap();
        stack.publish(&mut tx, "notes", event).await.unwrap();
        tx.commit().await.unwrap();
    }
    let mut handled = Vec::new();
    while handled.len() < tenants.len() {
        let (ctx_tenant, event_tenant, attempt) =
            tokio::time::timeout(Duration::from_secs(10), calls.recv())
                .await
                .expect("a handler call within 10 s")
                .unwrap();
        assert_eq!(Some(ctx_tenant), event_tenant, "handled in another tenant");
        if attempt > 1 {
            handled.push(ctx_tenant);
        }
    }
    let mut billed = Vec::new();
    for _ in &tenants {
        let copy = tokio::time::timeout(Duration::from_secs(10), copies.recv())
            .await
            .expect("the second group's copy within 10 s")
            .unwrap();
        billed.push(copy.unwrap());
    }
    handled.sort();
    billed.sort();
    tenants.sort();
    assert_eq!(
        handled, tenants,
        "each tenant's event handled after its retry"
    );
    assert_eq!(
        billed, tenants,
        "each tenant's event given to the second group"
    );
    services.shutdown().await;
    drop(stack);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `Stack::in_process` without a consumer is refused: the relay would
/// drop every event it forwards.
#[tokio::test]
async fn in_process_without_consumers_is_refused() {
    let dir = std::env::temp_dir().join(saas_test_support::unique_name("saas_no_consumer"));
    let mut services = Services::new();
    let stack = open(&dir, &mut services).await;
    let refused = stack.in_process().start(&mut services).await;
    assert!(
        matches!(refused, Err(EventError::Unsupported { .. })),
        "{refused:?}"
    );
    assert_eq!(services.len(), 1, "only the stack's own pools, no relay");
    services.shutdown().await;
    drop(stack);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `Stack::serialize_writes` on PostgreSQL: a second transaction of the
/// same tenant waits for the first to end; another tenant's does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_serialize_writes_makes_a_tenants_writers_take_turns() {
    use saas_foundation::stack::StackBackend;
    use saas_tenancy::postgres::{PgTenancy, ScopeMode};
    use saas_tenancy::testing::pg::PgSandbox;
    use saas_test_support::{Service, require_service};

    let url = require_service!(Service::Postgres);
    let mut sandbox = PgSandbox::new(&url, ScopeMode::Shared).await.unwrap();
    let acme = sandbox.tenant("acme", Strategy::Shared).await.unwrap();
    let globex = sandbox.tenant("globex", Strategy::Shared).await.unwrap();
    let tenancy = Arc::new(sandbox.tenancy.clone());

    let mut first = tenancy.begin(&acme).await.unwrap();
    PgTenancy::serialize_writes(&mut first, acme.tenant_id())
        .await
        .unwrap();
    // Another tenant's writer is not held up.
    let mut other = tenancy.begin(&globex).await.unwrap();
    PgTenancy::serialize_writes(&mut other, globex.tenant_id())
        .await
        .unwrap();
    other.commit().await.unwrap();
    // The same tenant's second writer waits until the first commits.
    let (second_tenancy, ctx) = (Arc::clone(&tenancy), acme.clone());
    let second = tokio::spawn(async move {
        let mut tx = second_tenancy.begin(&ctx).await.unwrap();
        PgTenancy::serialize_writes(&mut tx, ctx.tenant_id())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second writer did not wait");
    first.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second writer went on after the first committed")
        .unwrap();
    drop(tenancy);
    sandbox.cleanup().await;
}
