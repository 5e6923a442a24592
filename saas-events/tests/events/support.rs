//! Shared fixtures: scratch PostgreSQL schemas, recording sinks, cleanup
//! guards and the stress knob.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use saas_events::postgres::{OutboxLocation, PgOutbox};
use saas_events::{Capabilities, Event, EventError, Publisher};
use saas_test_support::unique_name;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool};

/// Runs `cleanup` on its own thread and runtime when dropped, so fixtures
/// handed out as `Arc<dyn Publisher>` still clean up after the test.
pub(crate) struct OnDrop(std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>);

impl OnDrop {
    pub(crate) fn new<F, Fut>(cleanup: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        Self(std::sync::Mutex::new(Some(Box::new(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(cleanup());
        }))))
    }
}

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(cleanup) = self.0.get_mut().ok().and_then(Option::take) {
            let _ = std::thread::spawn(cleanup).join();
        }
    }
}

impl std::fmt::Debug for OnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnDrop")
    }
}

/// A publisher that runs a cleanup when the test drops it.
#[derive(Debug)]
pub(crate) struct Guarded<P> {
    pub(crate) inner: P,
    pub(crate) _guard: OnDrop,
}

#[async_trait]
impl<P: Publisher> Publisher for Guarded<P> {
    async fn publish(&self, topic: &str, event: Event) -> Result<(), EventError> {
        self.inner.publish(topic, event).await
    }
    async fn publish_batch(&self, topic: &str, events: Vec<Event>) -> Result<(), EventError> {
        self.inner.publish_batch(topic, events).await
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

/// A schema of its own in the test database, with an outbox table.
#[derive(Debug, Clone)]
pub(crate) struct PgScratch {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) pool: PgPool,
}

impl PgScratch {
    pub(crate) async fn new(url: &str) -> Self {
        let schema = unique_name("saas_events");
        let base: PgConnectOptions = url.parse().unwrap();
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(base.clone())
            .await
            .unwrap();
        admin
            .execute(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .await
            .unwrap();
        admin.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(base.options([("search_path", schema.as_str())]))
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        PgOutbox::new().create_table(&mut conn).await.unwrap();
        drop(conn);
        Self {
            url: url.to_owned(),
            schema,
            pool,
        }
    }

    pub(crate) fn location(&self) -> OutboxLocation {
        OutboxLocation::new(&self.schema, self.pool.clone(), Some(self.schema.clone())).unwrap()
    }

    pub(crate) async fn cleanup(self) {
        self.pool.close().await;
        drop_schema(&self.url, &self.schema).await;
    }
}

pub(crate) async fn drop_schema(url: &str, schema: &str) {
    let base: PgConnectOptions = url.parse().unwrap();
    if let Ok(pool) = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(base)
        .await
    {
        let _ = pool
            .execute(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .await;
        pool.close().await;
    }
}

/// A sink that records what it is given, in order.
#[derive(Debug, Default, Clone)]
pub(crate) struct Recorder {
    pub(crate) seen: Arc<Mutex<Vec<(String, Event)>>>,
}

impl Recorder {
    pub(crate) fn ids(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.id().to_owned())
            .collect()
    }
    pub(crate) fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

#[async_trait]
impl Publisher for Recorder {
    async fn publish(&self, topic: &str, event: Event) -> Result<(), EventError> {
        self.seen.lock().unwrap().push((topic.to_owned(), event));
        Ok(())
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}

/// The restart scenario both brokers run: three rounds of publishing 50
/// events to a durable group and taking 10, with `restart` (kill the
/// server, start it again on the same store) after the first two; then a
/// fresh connection must deliver every event published in any round.
pub(crate) async fn loses_nothing_across_two_restarts<B>(
    connect: impl AsyncFn() -> B,
    mut restart: impl FnMut(),
) where
    B: Publisher + saas_events::Subscriber,
{
    use std::collections::HashSet;
    use std::time::Duration;

    let topic = saas_events::testing::unique_topic("restart");
    let options = saas_events::SubscribeOptions::new().with_group("survivor");
    let tenant = saas_core::TenantId::new();
    let mut expected = HashSet::new();
    let mut received = HashSet::new();
    for round in 0..3u32 {
        let bus = connect().await;
        let mut sub = bus.subscribe(&topic, options.clone()).await.unwrap();
        let events: Vec<Event> = (0..50)
            .map(|n| Event::new(tenant, "test.restart", "/tests", &(round * 100 + n)).unwrap())
            .collect();
        expected.extend(events.iter().map(|e| e.id().to_owned()));
        bus.publish_batch(&topic, events).await.unwrap();
        // Take a few, then the broker dies with the rest stored.
        for _ in 0..10 {
            let delivery = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            received.insert(delivery.event().id().to_owned());
            delivery.ack().await.unwrap();
        }
        drop(sub);
        drop(bus);
        if round < 2 {
            restart();
        }
    }
    let bus = connect().await;
    let mut sub = bus.subscribe(&topic, options).await.unwrap();
    while !expected.is_subset(&received) {
        let delivery = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("every stored event after the restarts")
            .unwrap()
            .unwrap();
        received.insert(delivery.event().id().to_owned());
        delivery.ack().await.unwrap();
    }
}
