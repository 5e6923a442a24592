//! Lifecycle events written by triggers on the tenant catalog, on
//! PostgreSQL (each test in a schema and with roles of its own): the real
//! `PgTenancy` writes exactly its rows, a rolled-back change none, the
//! insert works for a writer with no right on the outbox and under forced
//! row-level security, and a killed "server" loses no event.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use saas_core::{TenantSlug, TenantStatus};
use saas_foundation::catalog_events::{
    PgCatalogEvents, TENANT_CREATED, TENANT_DELETED, TENANT_PROVISIONED, TENANT_STATUS_CHANGED,
    TENANT_TOPIC,
};
use saas_foundation::events::middleware::TxHandler;
use saas_foundation::events::postgres::{OutboxRelay, PgInbox, RelayConfig, StaticLocations};
use saas_foundation::events::router::{ReceivedEvent, Router, RunningRouter};
use saas_foundation::events::{Data, Event, EventError, InMemoryBus, SubscribeOptions};
use saas_tenancy::postgres::{PgClusterConfig, PgTenancy};
use saas_tenancy::testing::pg::tenant_migrations;
use saas_tenancy::{ClusterName, NewTenant, PgCatalog, SqlIdent, Strategy, TenantTable};
use saas_test_support::{Service, service_url, unique_name};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, PgPool};

use crate::catalog_events::{Handled, HandledRow, Step, owned, step};

/// Records each handled event in the inbox's transaction, slowly.
#[derive(Debug, Clone)]
struct PgRecorder {
    delay: Duration,
}

#[async_trait]
impl TxHandler<PgConnection> for PgRecorder {
    async fn handle(&self, e: &ReceivedEvent, tx: &mut PgConnection) -> Result<(), EventError> {
        let event = e.event();
        let (ty, from, to) = step(event);
        sqlx::query(
            "INSERT INTO handled (event_id, tenant, type, status_from, status_to) \
             VALUES ($1, $2, $3, $4, $5)",
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

/// One "deployment": a schema holding catalog, outbox and the consumer's
/// inbox, a runtime role, and the tenancy over them.
pub(crate) struct PgSite {
    url: String,
    pub(crate) schema: String,
    pub(crate) role: String,
    pub(crate) admin: PgPool,
    pub(crate) tenancy: PgTenancy,
    cluster: ClusterName,
}

/// The catalog's schema, with the outbox in a schema of its own (the
/// catalog's is the shared schema of row tenants here).
fn events(schema: &str) -> PgCatalogEvents {
    PgCatalogEvents::new(schema, &format!("{schema}_ev")).unwrap()
}

/// Opens (creating on first use) the schema `schema`, installing the
/// triggers again as every start does.
pub(crate) async fn open(url: &str, schema: &str, role: &str) -> PgSite {
    let base = PgConnectOptions::from_str(url).unwrap();
    let bootstrap = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(base.clone())
        .await
        .unwrap();
    bootstrap
        .execute(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
        )))
        .await
        .unwrap();
    bootstrap.close().await;
    let admin_options = base.options([("search_path", schema)]);
    let admin = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(admin_options.clone())
        .await
        .unwrap();
    admin
        .execute(
            "CREATE TABLE IF NOT EXISTS notes (tenant_id uuid NOT NULL, id bigserial, \
             body text NOT NULL, PRIMARY KEY (tenant_id, id))",
        )
        .await
        .unwrap();
    let catalog = PgCatalog::new(admin.clone());
    catalog.migrate().await.unwrap();
    let mut conn = admin.acquire().await.unwrap();
    events(schema)
        .install_tenant_events(&mut conn)
        .await
        .unwrap();
    PgInbox::new().create_table(&mut conn).await.unwrap();
    conn.execute(
        "CREATE TABLE IF NOT EXISTS handled (n bigserial PRIMARY KEY, event_id text NOT NULL, \
         tenant text, type text NOT NULL, status_from text, status_to text)",
    )
    .await
    .unwrap();
    drop(conn);
    let cluster = ClusterName::new("main").unwrap();
    let mut config =
        PgClusterConfig::new(cluster.clone(), admin_options, SqlIdent::new(role).unwrap());
    config.max_connections = 2;
    let tenancy = PgTenancy::builder(Arc::new(catalog))
        .cluster(config)
        .tenant_table(TenantTable::new("notes").unwrap())
        .tenant_migrations(Migrator::with_migrations(tenant_migrations()))
        .build()
        .unwrap();
    tenancy.setup().await.unwrap();
    PgSite {
        url: url.to_owned(),
        schema: schema.to_owned(),
        role: role.to_owned(),
        admin,
        tenancy,
        cluster,
    }
}

impl PgSite {
    pub(crate) async fn new_tenant(&self, slug: &str) -> saas_tenancy::TenantRecord {
        let slug = TenantSlug::parse(slug).unwrap();
        let new = NewTenant::new(slug, "events", Strategy::Shared, self.cluster.clone()).unwrap();
        self.tenancy.provision(new).await.unwrap()
    }

    pub(crate) fn events(&self) -> PgCatalogEvents {
        events(&self.schema)
    }

    pub(crate) async fn consume(&self, bus: &InMemoryBus, delay: Duration) -> RunningRouter {
        let handler = PgInbox::new()
            .handler("audit", self.admin.clone(), PgRecorder { delay })
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
        let location = self
            .events()
            .location("catalog", self.admin.clone())
            .unwrap();
        OutboxRelay::new(
            Arc::new(StaticLocations(vec![location])),
            Arc::new(bus.clone()),
            RelayConfig::default().with_poll_interval(Duration::from_millis(10)),
        )
    }

    pub(crate) async fn outbox(&self) -> Vec<(Option<uuid::Uuid>, Event)> {
        let rows: Vec<(Option<uuid::Uuid>, String, String)> =
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT tenant_id, topic, event FROM \"{}_ev\".saas_events_outbox ORDER BY seq",
                self.schema
            )))
            .fetch_all(&self.admin)
            .await
            .unwrap();
        rows.into_iter()
            .map(|(tenant, topic, body)| {
                assert_eq!(topic, TENANT_TOPIC);
                (tenant, Event::from_json_str(&body).unwrap())
            })
            .collect()
    }

    pub(crate) async fn handled(&self) -> Vec<Handled> {
        let rows: Vec<HandledRow> = sqlx::query_as(
            "SELECT event_id, tenant, type, status_from, status_to FROM handled ORDER BY n",
        )
        .fetch_all(&self.admin)
        .await
        .unwrap();
        rows.into_iter().map(Handled::from).collect()
    }

    pub(crate) async fn catalog_statuses(&self) -> Vec<(String, String)> {
        sqlx::query_as("SELECT id::text, status FROM saas_tenants")
            .fetch_all(&self.admin)
            .await
            .unwrap()
    }

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

    /// Drops the schema and the roles the test made.
    pub(crate) async fn cleanup(self, extra_roles: &[&str]) {
        let PgSite {
            url,
            schema,
            role,
            admin,
            tenancy,
            ..
        } = self;
        tenancy.release_kept_connections();
        drop(tenancy);
        admin.close().await;
        let base = PgConnectOptions::from_str(&url).unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(base)
            .await
            .unwrap();
        let _ = pool
            .execute(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\", \"{schema}_ev\" CASCADE"
            )))
            .await;
        for r in extra_roles.iter().copied().chain([role.as_str()]) {
            let _ = pool
                .execute(AssertSqlSafe(format!("DROP OWNED BY \"{r}\"")))
                .await;
            let _ = pool
                .execute(AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{r}\"")))
                .await;
        }
        pool.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_tenancy_changes_write_their_events_in_the_same_transaction() {
    let Some(url) = service_url(Service::Postgres, "pg_tenancy_changes_write_their_events") else {
        return;
    };
    let schema = unique_name("saas_cat_events");
    let site = open(&url, &schema, &unique_name("saas_rt")).await;
    let record = site.new_tenant("acme").await;
    site.tenancy
        .set_status(record.id, TenantStatus::Suspended)
        .await
        .unwrap();
    site.tenancy
        .set_status(record.id, TenantStatus::Active)
        .await
        .unwrap();
    site.tenancy
        .set_status(record.id, TenantStatus::Active)
        .await
        .unwrap();
    site.tenancy.delete_tenant(record.id).await.unwrap();

    let rows = site.outbox().await;
    let steps: Vec<Step> = rows.iter().map(|(_, e)| step(e)).collect();
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
    for (tenant, event) in &rows {
        assert_eq!(*tenant, Some(*record.id.as_uuid()));
        assert_eq!(event.tenant_id(), Some(record.id));
        assert_eq!(event.source(), "/saas/tenancy");
        assert_eq!(event.subject(), Some(record.id.to_string().as_str()));
        assert!(event.time().is_some());
        let Some(Data::Json(data)) = event.data() else {
            panic!("no data")
        };
        assert_eq!(data["slug"], "acme");
        assert_eq!(data["cluster"], "main");
    }

    // Rolled back: no event. Committed: its event, with it.
    let other = site.new_tenant("globex").await;
    let before = site.outbox().await.len();
    let mut conn = site.admin.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("UPDATE saas_tenants SET status = 'suspended' WHERE id = $1")
        .bind(other.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(site.outbox().await.len(), before);

    // Installed again, by two processes at once (each does at start):
    // replaced, not doubled.
    let events = site.events();
    let (mut a, mut b) = (
        site.admin.acquire().await.unwrap(),
        site.admin.acquire().await.unwrap(),
    );
    let (first, second) = tokio::join!(
        events.install_tenant_events(&mut a),
        events.install_tenant_events(&mut b)
    );
    first.unwrap();
    second.unwrap();
    drop((a, b));

    // Committed: its event, once (not once per install).
    sqlx::query("UPDATE saas_tenants SET status = 'suspended' WHERE id = $1")
        .bind(other.id)
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let rows = site.outbox().await;
    assert_eq!(rows.len(), before + 1, "one event, not one per install");
    let (tenant, event) = &rows[before];
    assert_eq!(*tenant, Some(*other.id.as_uuid()));
    assert_eq!(
        step(event),
        owned(TENANT_STATUS_CHANGED, Some("active"), Some("suspended"))
    );
    site.cleanup(&[]).await;
}
