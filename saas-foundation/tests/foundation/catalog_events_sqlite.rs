//! Lifecycle events written by triggers on the tenant catalog, on SQLite:
//! each change through the real `SqliteTenancy` writes exactly its outbox
//! row, a rolled-back change writes none, and a "server" process killed
//! mid-way loses no event — the restarted relay delivers each committed
//! change once to an inbox-deduplicated consumer, also when the rows are
//! relayed twice.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use saas_core::TenantSlug;
use saas_foundation::catalog_events::{
    SqliteCatalogEvents, TENANT_CREATED, TENANT_DELETED, TENANT_PROVISIONED, TENANT_STATUS_CHANGED,
    TENANT_TOPIC,
};
use saas_foundation::events::middleware::TxHandler;
use saas_foundation::events::router::{ReceivedEvent, Router, RunningRouter};
use saas_foundation::events::sqlite::{OutboxRelay, RelayConfig, SqliteInbox, StaticLocations};
use saas_foundation::events::{Data, Event, EventError, InMemoryBus, SubscribeOptions};
use saas_tenancy::sqlite::{SqliteClusterConfig, SqliteTenancy};
use saas_tenancy::testing::sqlite::sqlite_migrations;
use saas_tenancy::{ClusterName, NewTenant, SqliteCatalog, Strategy, TenantTable};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Connection, Executor, SqliteConnection, SqlitePool};

use crate::catalog_events::{Handled, HandledRow, Step, owned, step};

/// Records each event it handles (no uniqueness here: the inbox must
/// prevent duplicates), slowly, so a backlog builds up before the kill.
#[derive(Debug, Clone)]
struct Recorder {
    delay: Duration,
}

#[async_trait]
impl TxHandler<SqliteConnection> for Recorder {
    async fn handle(&self, e: &ReceivedEvent, tx: &mut SqliteConnection) -> Result<(), EventError> {
        let event = e.event();
        let (ty, from, to) = step(event);
        sqlx::query(
            "INSERT INTO handled (event_id, tenant, type, status_from, status_to) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(event.id())
        .bind(event.tenant_id().map(|t| t.to_string()))
        .bind(ty)
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await
        .map_err(EventError::handler)?;
        tokio::time::sleep(self.delay).await;
        Ok(())
    }
}

/// The catalog, tenancy and consumer files of one "deployment".
pub(crate) struct Site {
    pub(crate) tenancy: SqliteTenancy,
    pub(crate) catalog: SqlitePool,
    consumer: SqlitePool,
    cluster: ClusterName,
}

async fn pool(file: PathBuf, connections: u32) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    SqlitePoolOptions::new()
        .max_connections(connections)
        .connect_with(options)
        .await
        .unwrap()
}

/// Opens (creating on first use) everything in `dir`, installing the
/// triggers again as every start does.
pub(crate) async fn open(dir: &Path) -> Site {
    std::fs::create_dir_all(dir).unwrap();
    let shared_file = dir.join("shared.sqlite");
    let shared = pool(shared_file.clone(), 1).await;
    shared
        .execute(
            "CREATE TABLE IF NOT EXISTS notes_rows (tenant_id BLOB NOT NULL, \
             id INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant_id, id))",
        )
        .await
        .unwrap();
    shared.close().await;
    let catalog = pool(dir.join("catalog.sqlite"), 4).await;
    let store = SqliteCatalog::new(catalog.clone());
    store.migrate().await.unwrap();
    let mut conn = catalog.acquire().await.unwrap();
    SqliteCatalogEvents::new()
        .install_tenant_events(&mut conn)
        .await
        .unwrap();
    drop(conn);
    let cluster = ClusterName::new("local").unwrap();
    let tenancy = SqliteTenancy::builder(Arc::new(store))
        .cluster(SqliteClusterConfig::new(cluster.clone(), shared_file, dir))
        .tenant_table(TenantTable::new("notes").unwrap())
        .tenant_migrations(Migrator::with_migrations(sqlite_migrations()))
        .build()
        .unwrap();
    tenancy.setup().await.unwrap();
    let consumer = pool(dir.join("consumer.sqlite"), 2).await;
    let mut conn = consumer.acquire().await.unwrap();
    SqliteInbox::new().create_table(&mut conn).await.unwrap();
    conn.execute(
        "CREATE TABLE IF NOT EXISTS handled (n INTEGER PRIMARY KEY, event_id TEXT NOT NULL, \
         tenant TEXT, type TEXT NOT NULL, status_from TEXT, status_to TEXT)",
    )
    .await
    .unwrap();
    drop(conn);
    Site {
        tenancy,
        catalog,
        consumer,
        cluster,
    }
}

impl Site {
    pub(crate) async fn new_tenant(&self, slug: &str) -> saas_tenancy::TenantRecord {
        let slug = TenantSlug::parse(slug).unwrap();
        let new = NewTenant::new(slug, "events", Strategy::Shared, self.cluster.clone()).unwrap();
        self.tenancy.provision(new).await.unwrap()
    }

    /// The inbox-deduplicated consumer, subscribed before any relay runs
    /// (the in-memory bus confirms events nobody subscribed to at once).
    pub(crate) async fn consume(&self, bus: &InMemoryBus, delay: Duration) -> RunningRouter {
        let handler = SqliteInbox::new()
            .handler("audit", self.consumer.clone(), Recorder { delay })
            .unwrap();
        Router::new()
            .fallback(handler)
            .run(
                bus,
                TENANT_TOPIC,
                SubscribeOptions::new().with_group("audit"),
            )
            .await
            .unwrap()
    }

    pub(crate) fn relay(&self, bus: &InMemoryBus) -> OutboxRelay {
        let location = SqliteCatalogEvents::new()
            .location("catalog", self.catalog.clone())
            .unwrap();
        OutboxRelay::new(
            Arc::new(StaticLocations(vec![location])),
            Arc::new(bus.clone()),
            RelayConfig::default().with_poll_interval(Duration::from_millis(10)),
        )
    }

    pub(crate) async fn outbox(&self) -> Vec<Event> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT topic, event FROM saas_events_outbox ORDER BY seq")
                .fetch_all(&self.catalog)
                .await
                .unwrap();
        rows.iter()
            .map(|(topic, body)| {
                assert_eq!(topic, TENANT_TOPIC);
                Event::from_json_str(body).unwrap()
            })
            .collect()
    }

    pub(crate) async fn handled(&self) -> Vec<Handled> {
        let rows: Vec<HandledRow> = sqlx::query_as(
            "SELECT event_id, tenant, type, status_from, status_to FROM handled ORDER BY n",
        )
        .fetch_all(&self.consumer)
        .await
        .unwrap();
        rows.into_iter().map(Handled::from).collect()
    }

    pub(crate) async fn catalog_statuses(&self) -> Vec<(String, String)> {
        let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as("SELECT id, status FROM saas_tenants")
            .fetch_all(&self.catalog)
            .await
            .unwrap();
        rows.into_iter()
            .map(|(id, status)| (id.to_string(), status))
            .collect()
    }

    /// Relays until the outbox is empty (every event handled and
    /// acknowledged), then stops relay and consumer.
    pub(crate) async fn deliver_all(&self) {
        let bus = InMemoryBus::new();
        let router = self.consume(&bus, Duration::ZERO).await;
        let relay = self.relay(&bus).spawn();
        let deadline = Instant::now() + Duration::from_secs(60);
        while relay.relay().pending().await.unwrap() > 0 {
            assert!(
                Instant::now() < deadline,
                "the relay did not drain the outbox"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        relay.shutdown().await;
        router.shutdown().await;
    }
}

pub(crate) fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(saas_test_support::unique_name("saas_catalog_events"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_tenancy_changes_write_their_events_in_the_same_transaction() {
    let dir = temp_dir();
    let site = open(&dir).await;
    let record = site.new_tenant("acme").await;
    site.tenancy.suspend(record.id).await.unwrap();
    site.tenancy.resume(record.id).await.unwrap();
    // Repeated: the status does not change, so no event.
    site.tenancy.resume(record.id).await.unwrap();
    site.tenancy.delete_tenant(record.id).await.unwrap();

    let events = site.outbox().await;
    let steps: Vec<Step> = events.iter().map(step).collect();
    assert_eq!(
        steps,
        vec![
            owned(TENANT_CREATED, None, Some("provisioning")),
            owned(TENANT_PROVISIONED, Some("provisioning"), Some("active")),
            owned(TENANT_STATUS_CHANGED, Some("active"), Some("suspended")),
            owned(TENANT_STATUS_CHANGED, Some("suspended"), Some("active")),
            owned(TENANT_STATUS_CHANGED, Some("active"), Some("deleting")),
            owned(TENANT_DELETED, Some("deleting"), Some("deleted")),
        ]
    );
    for event in &events {
        assert_eq!(event.tenant_id(), Some(record.id));
        assert_eq!(event.source(), "/saas/tenancy");
        assert_eq!(event.subject(), Some(record.id.to_string().as_str()));
        assert!(event.time().is_some());
        let Some(Data::Json(data)) = event.data() else {
            panic!("no data")
        };
        assert_eq!(data["slug"], "acme");
        assert_eq!(data["id"], record.id.to_string());
        assert_eq!(data["strategy"], "shared");
    }
    let ids: HashSet<&str> = events.iter().map(Event::id).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");

    // A catalog write that rolls back writes no event; one that commits
    // writes its event with it.
    let other = site.new_tenant("globex").await;
    let before = site.outbox().await.len();
    let mut conn = site.catalog.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("UPDATE saas_tenants SET status = 'suspended' WHERE id = ?")
        .bind(other.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(site.outbox().await.len(), before);
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("UPDATE saas_tenants SET status = 'suspended' WHERE id = ?")
        .bind(other.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(site.outbox().await.len(), before + 1);

    // Installing again (every start does) replaces the triggers: still
    // one row per change. A purged record is `removed`.
    SqliteCatalogEvents::new()
        .install_tenant_events(&mut conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM saas_tenants WHERE id = ?")
        .bind(other.id)
        .execute(&mut *conn)
        .await
        .unwrap();
    let events = site.outbox().await;
    assert_eq!(events.len(), before + 2);
    assert_eq!(
        step(&events[before + 1]),
        owned("saas.tenant.removed", Some("suspended"), None)
    );
    drop(conn);
    drop(site);
    let _ = std::fs::remove_dir_all(&dir);
}
