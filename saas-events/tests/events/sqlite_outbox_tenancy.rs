//! The SQLite outbox inside saas-tenancy's SQLite tenant transactions:
//! row tenants in a shared file (the outbox a tenant table behind the
//! tenant view) and database tenants (the outbox in each tenant's file,
//! found through locations asked again on every pass).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use saas_core::{TenantContext, TenantId, TenantSlug};
use saas_events::middleware::InboxClaim;
use saas_events::sqlite::{
    OutboxLocation, OutboxLocations, OutboxRelay, RelayConfig, SqliteOutbox,
};
use saas_events::{Event, EventError};
use saas_tenancy::sqlite::{SqliteClusterConfig, SqliteTenancy};
use saas_tenancy::testing::sqlite::{SQLITE_NOTES_SHARED, sqlite_migrations};
use saas_tenancy::{
    ClusterName, DynCatalog, ListOptions, NewTenant, Placement, SqliteCatalog, Strategy,
    TenantTable,
};
use saas_test_support::unique_name;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Executor, SqlSafeStr, SqlitePool};

use crate::support::Recorder;

/// The physical table behind the `saas_events_outbox` tenant view.
const OUTBOX_ROWS: &str = "saas_events_outbox_rows";

fn file_options(file: PathBuf) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
}

/// A SQLite tenancy whose shared file and tenant files both hold the
/// outbox, declared a tenant table next to `notes`.
struct Setup {
    dir: PathBuf,
    tenancy: SqliteTenancy,
    catalog: DynCatalog,
    cluster: ClusterName,
    shared: SqlitePool,
}

impl Setup {
    async fn new() -> Self {
        let outbox = SqliteOutbox::new();
        let dir = std::env::temp_dir().join(unique_name("saas_events_tenancy"));
        std::fs::create_dir_all(&dir).unwrap();
        let shared_file = dir.join("shared.sqlite");
        let shared = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(file_options(shared_file.clone()))
            .await
            .unwrap();
        shared.execute(SQLITE_NOTES_SHARED).await.unwrap();
        let physical = outbox.create_table_sql_as(OUTBOX_ROWS).unwrap();
        shared.execute(AssertSqlSafe(physical)).await.unwrap();
        let catalog_pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(file_options(dir.join("catalog.sqlite")))
            .await
            .unwrap();
        let catalog = SqliteCatalog::new(catalog_pool);
        catalog.migrate().await.unwrap();
        let catalog: DynCatalog = Arc::new(catalog);
        let mut migrations = sqlite_migrations();
        migrations.push(Migration::new(
            2,
            "outbox".into(),
            MigrationType::Simple,
            AssertSqlSafe(outbox.create_table_sql()).into_sql_str(),
            false,
        ));
        let cluster = ClusterName::new("local").unwrap();
        let tenancy = SqliteTenancy::builder(Arc::clone(&catalog))
            .cluster(SqliteClusterConfig::new(
                cluster.clone(),
                shared_file,
                dir.clone(),
            ))
            .tenant_table(TenantTable::new("notes").unwrap())
            .tenant_table(TenantTable::new(outbox.table()).unwrap())
            .tenant_migrations(Migrator::with_migrations(migrations))
            .build()
            .unwrap();
        tenancy.setup().await.unwrap();
        Self {
            dir,
            tenancy,
            catalog,
            cluster,
            shared,
        }
    }

    async fn tenant(&self, slug: &str, strategy: Strategy) -> TenantContext {
        let slug = TenantSlug::parse(slug).unwrap();
        let new = NewTenant::new(slug, "test tenant", strategy, self.cluster.clone()).unwrap();
        let record = self.tenancy.provision(new).await.unwrap();
        TenantContext::new(record.id, record.slug)
    }

    fn locations(&self) -> Arc<CatalogLocations> {
        Arc::new(CatalogLocations {
            catalog: Arc::clone(&self.catalog),
            dir: self.dir.clone(),
            shared: OutboxLocation::new("shared", self.shared.clone())
                .with_table(OUTBOX_ROWS)
                .unwrap(),
            files: Mutex::default(),
        })
    }

    async fn cleanup(self, locations: Arc<CatalogLocations>) {
        let pools: Vec<SqlitePool> = locations.files.lock().unwrap().values().cloned().collect();
        for pool in pools {
            pool.close().await;
        }
        self.shared.close().await;
        drop(self.tenancy);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a host would write: the shared file once, plus every database
/// tenant's file from the catalog — read again on each call, with one pool
/// per file kept between calls.
#[derive(Debug)]
struct CatalogLocations {
    catalog: DynCatalog,
    dir: PathBuf,
    shared: OutboxLocation,
    files: Mutex<HashMap<TenantId, SqlitePool>>,
}

#[async_trait]
impl OutboxLocations for CatalogLocations {
    async fn locations(&self) -> Result<Vec<OutboxLocation>, EventError> {
        let mut out = vec![self.shared.clone()];
        let options = ListOptions::default().with_strategy(Strategy::Database);
        let page = self.catalog.list(&options).await.unwrap();
        assert!(page.next.is_none(), "the test stays within one page");
        for record in page.tenants {
            let Placement::Database { database, .. } = &record.placement else {
                continue;
            };
            let pool = self
                .files
                .lock()
                .unwrap()
                .entry(record.id)
                .or_insert_with(|| {
                    let file = self.dir.join(format!("{database}.sqlite"));
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_lazy_with(file_options(file).create_if_missing(false))
                })
                .clone();
            out.push(OutboxLocation::new(record.slug.to_string(), pool).with_tenant(record.id));
        }
        Ok(out)
    }
}

fn note(tenant: impl Into<Option<TenantId>>) -> Event {
    Event::new(tenant, "note.added", "/notes", &1).unwrap()
}

/// Row tenants in the shared file: the outbox is a tenant table, so a
/// tenant's transaction cannot write an event of another tenant, a
/// tenant-less event gets the transaction's tenant, rows land in the one
/// physical table and the relay delivers each with its tenant.
#[tokio::test]
async fn sqlite_outbox_in_a_shared_file_is_bound_to_the_transactions_tenant() {
    let setup = Setup::new().await;
    let outbox = SqliteOutbox::new();
    let a = setup.tenant("sq-ev-a", Strategy::Shared).await;
    let b = setup.tenant("sq-ev-b", Strategy::Shared).await;

    let mut tx = setup.tenancy.begin(&a).await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 1, 'paid')")
        .bind(a.tenant_id())
        .execute(&mut *tx)
        .await
        .unwrap();
    outbox
        .publish(&mut tx, "notes", note(a.tenant_id()))
        .await
        .unwrap();
    let unowned = note(None);
    outbox
        .publish(&mut tx, "notes", unowned.clone())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Tenant A forging an event of tenant B: refused, nothing written.
    let mut tx = setup.tenancy.begin(&a).await.unwrap();
    let forged = note(b.tenant_id());
    let refused = outbox.publish(&mut tx, "notes", forged).await;
    assert!(
        matches!(
            refused,
            Err(EventError::Backend {
                backend: "sqlite",
                retryable: false,
                ..
            })
        ),
        "{refused:?}"
    );
    // Nor can a batch smuggle one in after a legitimate event.
    let batch = vec![note(a.tenant_id()), note(b.tenant_id())];
    assert!(outbox.publish_batch(&mut tx, "notes", batch).await.is_err());
    tx.commit().await.unwrap();

    // B sees none of A's outbox rows through its view.
    let mut conn = setup.tenancy.acquire(&b).await.unwrap();
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM saas_events_outbox")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(visible, 0);
    drop(conn);

    let locations = setup.locations();
    let sink = Recorder::default();
    let relay = OutboxRelay::new(
        locations.clone(),
        Arc::new(sink.clone()),
        RelayConfig::default(),
    );
    assert_eq!(relay.pending().await.unwrap(), 2);
    assert_eq!(relay.relay_once().await.unwrap(), 2);
    let seen = sink.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (topic, event) in &seen {
        assert_eq!(topic, "notes");
        assert_eq!(event.tenant_id(), Some(a.tenant_id()));
    }
    assert_eq!(
        seen[1].1.id(),
        unowned.id(),
        "the unowned event got A's tenant"
    );
    assert_eq!(relay.pending().await.unwrap(), 0);
    setup.cleanup(locations).await;
}

/// Database tenants: each event sits in its tenant's file, the relay finds
/// tenant files provisioned after it started, stamps the file's tenant on
/// tenant-less events and refuses to forward an event claiming another
/// tenant (which stays pending, visibly).
#[tokio::test]
async fn sqlite_outbox_in_tenant_files_is_found_and_bound_to_the_files_tenant() {
    let setup = Setup::new().await;
    let outbox = SqliteOutbox::new();
    let d1 = setup.tenant("sq-ev-d1", Strategy::Database).await;
    let locations = setup.locations();
    let sink = Recorder::default();
    let relay = OutboxRelay::new(
        locations.clone(),
        Arc::new(sink.clone()),
        RelayConfig::default(),
    );
    assert_eq!(relay.relay_once().await.unwrap(), 0);

    // A tenant provisioned after the relay's first pass.
    let d2 = setup.tenant("sq-ev-d2", Strategy::Database).await;
    for ctx in [&d1, &d2] {
        let mut tx = setup.tenancy.begin(ctx).await.unwrap();
        sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 1, 'paid')")
            .bind(ctx.tenant_id())
            .execute(&mut *tx)
            .await
            .unwrap();
        outbox
            .publish(&mut tx, "notes", note(ctx.tenant_id()))
            .await
            .unwrap();
        outbox.publish(&mut tx, "notes", note(None)).await.unwrap();
        tx.commit().await.unwrap();
    }
    // Each tenant's file holds its own two events.
    for ctx in [&d1, &d2] {
        let mut conn = setup.tenancy.acquire(ctx).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM saas_events_outbox")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(n, 2);
    }
    assert_eq!(relay.pending().await.unwrap(), 4);
    assert_eq!(relay.relay_once().await.unwrap(), 4);
    let mut per_tenant: HashMap<TenantId, usize> = HashMap::new();
    for (_, event) in sink.seen.lock().unwrap().iter() {
        *per_tenant.entry(event.tenant_id().unwrap()).or_default() += 1;
    }
    assert_eq!(per_tenant.get(&d1.tenant_id()), Some(&2));
    assert_eq!(per_tenant.get(&d2.tenant_id()), Some(&2));

    // D1 writes an event claiming D2 into its own file: never forwarded.
    let mut tx = setup.tenancy.begin(&d1).await.unwrap();
    outbox
        .publish(&mut tx, "notes", note(d2.tenant_id()))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(
        relay.relay_once().await,
        Err(EventError::InvalidAttribute { .. })
    ));
    assert_eq!(sink.len(), 4);
    assert_eq!(relay.pending().await.unwrap(), 1);
    assert!(relay.oldest_pending_age().await.unwrap().is_some());
    assert_eq!(relay.stats().errors(), 1);
    setup.cleanup(locations).await;
}

/// The SQLite inbox inside a tenant transaction on the shared file: the
/// claim rolls back with the handler's writes and commits with them, and
/// another tenant's event with the same id is not a duplicate.
#[tokio::test]
async fn sqlite_inbox_claims_inside_a_tenant_transaction() {
    let setup = Setup::new().await;
    let inbox = saas_events::sqlite::SqliteInbox::new();
    inbox
        .create_table(&mut setup.shared.acquire().await.unwrap())
        .await
        .unwrap();
    let a = setup.tenant("sq-in-a", Strategy::Shared).await;
    let b = setup.tenant("sq-in-b", Strategy::Shared).await;
    let paid = note(a.tenant_id());
    let claim = |ctx: TenantContext, event: Event, commit: bool| {
        let (tenancy, inbox) = (setup.tenancy.clone(), inbox.clone());
        async move {
            let mut tx = tenancy.begin(&ctx).await.unwrap();
            let claim = inbox.claim(&mut tx, "audit", &event).await.unwrap();
            if claim == InboxClaim::First {
                sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 1, 'seen')")
                    .bind(ctx.tenant_id())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            if commit {
                tx.commit().await.unwrap();
            } else {
                tx.rollback().await.unwrap();
            }
            claim
        }
    };
    assert_eq!(
        claim(a.clone(), paid.clone(), false).await,
        InboxClaim::First
    );
    assert_eq!(
        claim(a.clone(), paid.clone(), true).await,
        InboxClaim::First
    );
    assert_eq!(
        claim(a.clone(), paid.clone(), true).await,
        InboxClaim::Duplicate
    );
    let reused = paid.clone().with_tenant(b.tenant_id());
    assert_eq!(claim(b.clone(), reused, true).await, InboxClaim::First);
    let notes: i64 = sqlx::query_scalar("SELECT count(*) FROM notes_rows")
        .fetch_one(&setup.shared)
        .await
        .unwrap();
    assert_eq!(
        notes, 2,
        "one effect per tenant, none from the rolled-back try"
    );
    let locations = setup.locations();
    setup.cleanup(locations).await;
}
