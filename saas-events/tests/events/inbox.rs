//! The idempotent consumer: in memory, on PostgreSQL and on SQLite. A
//! redelivered event runs its effect once, a failed handler records
//! nothing and its retry runs, two consumers each run once, concurrent
//! duplicates run once, and one event id under two tenants runs twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use saas_core::{Clock, ManualClock, TenantId};
use saas_events::middleware::{InMemoryInbox, InboxClaim, InboxLayer, TxHandler};
use saas_events::postgres::PgInbox;
use saas_events::router::{Handler, ReceivedEvent, Router, handler_fn};
use saas_events::sqlite::SqliteInbox;
use saas_events::{Event, EventError, InMemoryBus, Publisher, SubscribeOptions};
use saas_test_support::{Service, service_url};
use sqlx::{PgConnection, SqliteConnection};

use crate::sqlite_outbox::SqliteScratch;
use crate::support::PgScratch;

fn event(tenant: TenantId) -> Event {
    Event::new(tenant, "invoice.paid", "/billing", &1).unwrap()
}

fn received(event: &Event, attempt: u32) -> ReceivedEvent {
    ReceivedEvent::new(Arc::new(event.clone()), "invoices", attempt)
}

fn failure() -> EventError {
    EventError::handler("effect failed on purpose")
}

// ---- in memory ----------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct Counting {
    runs: Arc<AtomicUsize>,
    fail_next: Arc<AtomicBool>,
}

#[async_trait]
impl Handler for Counting {
    async fn handle(&self, _: ReceivedEvent) -> Result<(), EventError> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(failure());
        }
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn deduplicated(consumer: &str, inbox: &InMemoryInbox, inner: &Counting) -> Arc<dyn Handler> {
    Router::new()
        .layer(InboxLayer::new(consumer, inbox.clone()).unwrap())
        .fallback(inner.clone())
        .into_handler()
}

#[tokio::test]
async fn in_memory_inbox_runs_each_event_once_per_consumer() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let inbox = InMemoryInbox::with_clock(clock.clone());
    let effect = Counting::default();
    let handler = deduplicated("audit", &inbox, &effect);
    let first = event(TenantId::new());

    // A failed attempt records nothing; its retry runs the handler.
    effect.fail_next.store(true, Ordering::SeqCst);
    assert!(handler.handle(received(&first, 1)).await.is_err());
    assert!(!inbox.contains("audit", &first));
    handler.handle(received(&first, 2)).await.unwrap();
    // Redelivered: acknowledged without running.
    handler.handle(received(&first, 3)).await.unwrap();
    assert_eq!(effect.runs.load(Ordering::SeqCst), 1);

    // Another consumer runs it once too.
    let other = Counting::default();
    let other_handler = deduplicated("billing", &inbox, &other);
    other_handler.handle(received(&first, 1)).await.unwrap();
    other_handler.handle(received(&first, 2)).await.unwrap();
    assert_eq!(other.runs.load(Ordering::SeqCst), 1);

    // The same id under another tenant is another event.
    let forged = first.clone().with_tenant(TenantId::new());
    handler.handle(received(&forged, 1)).await.unwrap();
    assert_eq!(effect.runs.load(Ordering::SeqCst), 2);

    // Concurrent duplicates: one effect.
    let second = event(TenantId::new());
    let a = tokio::spawn({
        let (h, e) = (handler.clone(), second.clone());
        async move { h.handle(received(&e, 1)).await }
    });
    let b = tokio::spawn({
        let (h, e) = (handler.clone(), second.clone());
        async move { h.handle(received(&e, 1)).await }
    });
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(effect.runs.load(Ordering::SeqCst), 3);

    // Retention: records older than the cutoff go; newer ones stay.
    assert_eq!(inbox.len(), 4);
    clock.advance(chrono::Duration::hours(2));
    let third = event(TenantId::new());
    handler.handle(received(&third, 1)).await.unwrap();
    assert_eq!(
        inbox.purge_before(clock.now() - chrono::Duration::hours(1)),
        4
    );
    assert_eq!(inbox.len(), 1);
    assert!(inbox.contains("audit", &third));
    assert!(InboxLayer::new("bad consumer", inbox).is_err());
}

/// Through a router on the in-memory bus: the same event published twice
/// reaches the handler once.
#[tokio::test]
async fn in_memory_inbox_under_a_router_acks_a_republished_event() {
    let bus = InMemoryBus::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let router = Router::new()
        .layer(InboxLayer::new("audit", InMemoryInbox::new()).unwrap())
        .route(
            "invoice.paid",
            handler_fn(move |e: ReceivedEvent| {
                let tx = tx.clone();
                async move {
                    tx.send(e.event().id().to_owned()).ok();
                    Ok(())
                }
            }),
        );
    let running = router
        .run(
            &bus,
            "invoices",
            SubscribeOptions::new().with_group("audit"),
        )
        .await
        .unwrap();
    let once = event(TenantId::new());
    let marker = event(TenantId::new());
    bus.publish("invoices", once.clone()).await.unwrap();
    bus.publish("invoices", once.clone()).await.unwrap();
    bus.publish("invoices", marker.clone()).await.unwrap();
    let mut seen = Vec::new();
    while seen.last() != Some(&marker.id().to_owned()) {
        let id = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        seen.push(id);
    }
    assert_eq!(seen, vec![once.id().to_owned(), marker.id().to_owned()]);
    running.shutdown().await;
}

// ---- PostgreSQL -----------------------------------------------------------

/// Writes the effect row in the inbox's transaction; fails on demand after
/// writing, so a rollback must undo the effect too.
#[derive(Debug, Default, Clone)]
struct PgEffect {
    fail_next: Arc<AtomicBool>,
}

#[async_trait]
impl TxHandler<PgConnection> for PgEffect {
    async fn handle(&self, event: &ReceivedEvent, tx: &mut PgConnection) -> Result<(), EventError> {
        sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
            .bind(event.event().id())
            .execute(&mut *tx)
            .await
            .map_err(EventError::handler)?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(failure());
        }
        Ok(())
    }
}

async fn pg_count(scratch: &PgScratch, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&scratch.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_inbox_runs_each_event_once_per_consumer() {
    let Some(url) = service_url(Service::Postgres, "pg_inbox_runs_each_event_once") else {
        return;
    };
    let scratch = PgScratch::new(&url).await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let inbox = PgInbox::new().with_clock(clock.clone());
    let mut conn = scratch.pool.acquire().await.unwrap();
    inbox.create_table(&mut conn).await.unwrap();
    sqlx::query("CREATE TABLE effects (event_id text NOT NULL)")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let effect = PgEffect::default();
    let handler = inbox
        .handler("audit", scratch.pool.clone(), effect.clone())
        .unwrap();
    let first = event(TenantId::new());

    // Failed: the effect and the inbox row roll back; the retry runs.
    effect.fail_next.store(true, Ordering::SeqCst);
    assert!(handler.handle(received(&first, 1)).await.is_err());
    assert_eq!(pg_count(&scratch, "SELECT count(*) FROM effects").await, 0);
    assert_eq!(
        pg_count(&scratch, "SELECT count(*) FROM saas_events_inbox").await,
        0
    );
    handler.handle(received(&first, 2)).await.unwrap();
    handler.handle(received(&first, 3)).await.unwrap();
    assert_eq!(pg_count(&scratch, "SELECT count(*) FROM effects").await, 1);

    // A second consumer processes it once as well.
    let billing = inbox
        .handler("billing", scratch.pool.clone(), effect.clone())
        .unwrap();
    billing.handle(received(&first, 1)).await.unwrap();
    billing.handle(received(&first, 2)).await.unwrap();
    assert_eq!(pg_count(&scratch, "SELECT count(*) FROM effects").await, 2);

    // The same id claimed by another tenant does not suppress the event.
    let forged = first.clone().with_tenant(TenantId::new());
    handler.handle(received(&forged, 1)).await.unwrap();
    assert_eq!(pg_count(&scratch, "SELECT count(*) FROM effects").await, 3);

    // Concurrent duplicates on two tasks: exactly one effect.
    let second = event(TenantId::new());
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (h, e) = (handler.clone(), second.clone());
            tokio::spawn(async move { h.handle(received(&e, 1)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(pg_count(&scratch, "SELECT count(*) FROM effects").await, 4);

    // claim() in a transaction of the caller's own.
    let mut conn = scratch.pool.acquire().await.unwrap();
    let claim = inbox.claim(&mut conn, "audit", &second).await.unwrap();
    assert_eq!(claim, InboxClaim::Duplicate);
    assert!(
        inbox
            .claim(&mut conn, "bad consumer", &second)
            .await
            .is_err()
    );

    // Retention.
    clock.advance(chrono::Duration::hours(2));
    let third = event(TenantId::new());
    handler.handle(received(&third, 1)).await.unwrap();
    let cutoff = clock.now() - chrono::Duration::hours(1);
    assert_eq!(inbox.purge_before(&mut conn, cutoff).await.unwrap(), 4);
    assert_eq!(
        pg_count(&scratch, "SELECT count(*) FROM saas_events_inbox").await,
        1
    );
    assert_eq!(
        inbox.claim(&mut conn, "audit", &third).await.unwrap(),
        InboxClaim::Duplicate
    );
    drop(conn);
    scratch.cleanup().await;
}

// ---- SQLite ---------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct SqliteEffect {
    fail_next: Arc<AtomicBool>,
}

#[async_trait]
impl TxHandler<SqliteConnection> for SqliteEffect {
    async fn handle(
        &self,
        event: &ReceivedEvent,
        tx: &mut SqliteConnection,
    ) -> Result<(), EventError> {
        sqlx::query("INSERT INTO effects (event_id) VALUES (?)")
            .bind(event.event().id())
            .execute(&mut *tx)
            .await
            .map_err(EventError::handler)?;
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(failure());
        }
        Ok(())
    }
}

async fn sqlite_count(scratch: &SqliteScratch, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&scratch.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_inbox_runs_each_event_once_per_consumer() {
    let scratch = SqliteScratch::new().await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let inbox = SqliteInbox::new().with_clock(clock.clone());
    let mut conn = scratch.pool.acquire().await.unwrap();
    inbox.create_table(&mut conn).await.unwrap();
    sqlx::query("CREATE TABLE effects (event_id TEXT NOT NULL)")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let effect = SqliteEffect::default();
    let handler = inbox
        .handler("audit", scratch.pool.clone(), effect.clone())
        .unwrap();
    let first = event(TenantId::new());

    effect.fail_next.store(true, Ordering::SeqCst);
    assert!(handler.handle(received(&first, 1)).await.is_err());
    assert_eq!(
        sqlite_count(&scratch, "SELECT count(*) FROM effects").await,
        0
    );
    assert_eq!(
        sqlite_count(&scratch, "SELECT count(*) FROM saas_events_inbox").await,
        0
    );
    handler.handle(received(&first, 2)).await.unwrap();
    handler.handle(received(&first, 3)).await.unwrap();
    assert_eq!(
        sqlite_count(&scratch, "SELECT count(*) FROM effects").await,
        1
    );

    let billing = inbox
        .handler("billing", scratch.pool.clone(), effect.clone())
        .unwrap();
    billing.handle(received(&first, 1)).await.unwrap();
    billing.handle(received(&first, 2)).await.unwrap();
    assert_eq!(
        sqlite_count(&scratch, "SELECT count(*) FROM effects").await,
        2
    );

    let forged = first.clone().with_tenant(TenantId::new());
    handler.handle(received(&forged, 1)).await.unwrap();
    assert_eq!(
        sqlite_count(&scratch, "SELECT count(*) FROM effects").await,
        3
    );

    // Concurrent duplicates: SQLite serialises the two transactions.
    let second = event(TenantId::new());
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (h, e) = (handler.clone(), second.clone());
            tokio::spawn(async move { h.handle(received(&e, 1)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        sqlite_count(&scratch, "SELECT count(*) FROM effects").await,
        4
    );

    let mut conn = scratch.pool.acquire().await.unwrap();
    clock.advance(chrono::Duration::hours(2));
    let third = event(TenantId::new());
    assert_eq!(
        inbox.claim(&mut conn, "audit", &third).await.unwrap(),
        InboxClaim::First
    );
    let cutoff = clock.now() - chrono::Duration::hours(1);
    assert_eq!(inbox.purge_before(&mut conn, cutoff).await.unwrap(), 4);
    assert_eq!(
        sqlite_count(&scratch, "SELECT count(*) FROM saas_events_inbox").await,
        1
    );
    drop(conn);
    scratch.cleanup().await;
}
