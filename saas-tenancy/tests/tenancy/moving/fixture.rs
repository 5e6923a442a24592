//! The move tests' world: a fresh database on each server as clusters
//! `one` (5432) and `two` (5433), the shared `notes` in their `public`
//! schema, the catalog in `one`; everything dropped at the end, including
//! replication objects a failed test left.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saas_core::{SharedClock, TenantContext, TenantId, TenantSlug};
use saas_tenancy::postgres::{
    PgClusterConfig, PgTenancy, PgTenancyBuilder, ScopeMode, SqlIdent, TenantTable,
};
use saas_tenancy::testing::pg::{NOTES_SHARED, tenant_migrations};
use saas_tenancy::testing::unique_name;
use saas_tenancy::{ClusterName, DynCatalog, NewTenant, PgCatalog, Placement, Strategy};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool};

pub(crate) struct Server {
    pub(crate) name: ClusterName,
    root: PgPool,
    pub(crate) db: String,
    pub(crate) admin: PgPool,
    pub(crate) options: PgConnectOptions,
}

pub(crate) struct MoveEnv {
    pub(crate) one: Server,
    pub(crate) two: Server,
    role: String,
    pub(crate) catalog: DynCatalog,
    tenants: Mutex<Vec<TenantId>>,
    /// Tenancies built from now on give each cluster a replication
    /// connection info: its host and port and these keywords (a user and
    /// password, or `sslmode=require`, which subscriptions can use and
    /// the mover's own replication connection cannot).
    pub(crate) replication_login: Option<String>,
}

async fn server(url: &str, name: &str) -> Server {
    let base = PgConnectOptions::from_str(url).unwrap();
    let root = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(base.clone())
        .await
        .unwrap();
    let db = unique_name("saas_mv");
    root.execute(AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
        .await
        .unwrap();
    let options = base.database(&db);
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone())
        .await
        .unwrap();
    admin.execute(NOTES_SHARED).await.unwrap();
    Server {
        name: ClusterName::new(name).unwrap(),
        root,
        db,
        admin,
        options,
    }
}

/// Both servers prepared, or `None` when skipped.
pub(crate) async fn env(test: &str) -> Option<MoveEnv> {
    let (url1, url2) = crate::two_servers::urls(test)?;
    let one = server(&url1, "one").await;
    let two = server(&url2, "two").await;
    let catalog = PgCatalog::new(one.admin.clone());
    catalog.migrate().await.unwrap();
    let env = MoveEnv {
        one,
        two,
        role: unique_name("saas_mvrt"),
        catalog: Arc::new(catalog),
        tenants: Mutex::new(Vec::new()),
        replication_login: None,
    };
    env.tenancy(Duration::from_secs(1), true)
        .setup()
        .await
        .unwrap();
    Some(env)
}

impl MoveEnv {
    /// A tenancy over both clusters ("a process"): records cached for
    /// `ttl`, following moves by notification when `follow`.
    pub(crate) fn tenancy(&self, ttl: Duration, follow: bool) -> PgTenancy {
        self.build(ttl, follow, Duration::from_secs(20), ScopeMode::Shared)
    }

    /// As [`tenancy`](Self::tenancy), in scope mode `mode`.
    pub(crate) fn tenancy_in(&self, ttl: Duration, follow: bool, mode: ScopeMode) -> PgTenancy {
        self.build(ttl, follow, Duration::from_secs(20), mode)
    }

    /// A tenancy whose new handles wait `wait` at most for a move's fence.
    pub(crate) fn tenancy_with_wait(&self, wait: Duration) -> PgTenancy {
        self.build(Duration::from_secs(1), true, wait, ScopeMode::Shared)
    }

    /// A following tenancy reading time from `clock`.
    pub(crate) fn tenancy_with_clock(&self, clock: SharedClock) -> PgTenancy {
        self.builder(
            Duration::from_secs(1),
            true,
            Duration::from_secs(20),
            ScopeMode::Shared,
        )
        .clock(clock)
        .build()
        .unwrap()
    }

    fn build(&self, ttl: Duration, follow: bool, wait: Duration, mode: ScopeMode) -> PgTenancy {
        self.builder(ttl, follow, wait, mode).build().unwrap()
    }

    fn builder(
        &self,
        ttl: Duration,
        follow: bool,
        wait: Duration,
        mode: ScopeMode,
    ) -> PgTenancyBuilder {
        let mut builder = PgTenancy::builder(Arc::clone(&self.catalog))
            .tenant_table(TenantTable::new("notes").unwrap())
            .tenant_migrations(Migrator::with_migrations(tenant_migrations()))
            .record_ttl(ttl)
            .follow_moves(follow)
            .move_wait(wait)
            .scope_mode(mode);
        for s in [&self.one, &self.two] {
            let mut config = PgClusterConfig::new(
                s.name.clone(),
                s.options.clone(),
                SqlIdent::new(&self.role).unwrap(),
            );
            config.max_connections = 8;
            if let Some(login) = &self.replication_login {
                let o = &s.options;
                config = config.with_replication_conninfo(format!(
                    "host={} port={} {login}",
                    o.get_host(),
                    o.get_port(),
                ));
            }
            builder = builder.cluster(config);
        }
        builder
    }

    pub(crate) fn server(&self, cluster: &ClusterName) -> &Server {
        if *cluster == self.one.name {
            &self.one
        } else {
            &self.two
        }
    }

    /// Provisions an active tenant placed by `strategy` on `cluster`.
    pub(crate) async fn tenant(
        &self,
        tenancy: &PgTenancy,
        slug: &str,
        strategy: Strategy,
        cluster: &ClusterName,
    ) -> TenantContext {
        let new = NewTenant::new(
            TenantSlug::parse(slug).unwrap(),
            slug,
            strategy,
            cluster.clone(),
        )
        .unwrap();
        let record = tenancy.provision(new).await.unwrap();
        self.tenants.lock().unwrap().push(record.id);
        TenantContext::new(record.id, record.slug)
    }

    /// The tenant's `(id, body)` rows as stored at `placement`, read as the
    /// admin (not through the tenancy), sorted.
    pub(crate) async fn stored(
        &self,
        placement: &Placement,
        tenant: TenantId,
    ) -> Vec<(i64, String)> {
        let server = self.server(placement.cluster());
        let (pool, sql) = match placement {
            Placement::Shared { .. } => (
                server.admin.clone(),
                "SELECT id, body FROM public.notes WHERE tenant_id = $1 ORDER BY id".to_owned(),
            ),
            Placement::Schema { schema, .. } => (
                server.admin.clone(),
                format!(
                    "SELECT id, body FROM {}.notes WHERE $1::uuid IS NOT NULL ORDER BY id",
                    schema.quoted()
                ),
            ),
            // A database placement.
            _ => {
                let database = placement.object_name().unwrap();
                let options = server.options.clone().database(database.as_str());
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await
                    .unwrap();
                (
                    pool,
                    "SELECT id, body FROM public.notes WHERE $1::uuid IS NOT NULL ORDER BY id"
                        .to_owned(),
                )
            }
        };
        let rows = sqlx::query_as(AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_all(&pool)
            .await
            .unwrap();
        if placement.strategy() == Strategy::Database {
            pool.close().await;
        }
        rows
    }

    /// Move slots and move subscriptions on either server's databases.
    pub(crate) async fn slots_and_subscriptions(&self) -> (i64, i64) {
        let (mut slots, mut subscriptions) = (0, 0);
        for s in [&self.one, &self.two] {
            let (a, b): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM pg_replication_slots \
                         WHERE slot_name LIKE 'saas\\_mv\\_%' \
                         AND (database = $1 OR database = ANY($2))), \
                        (SELECT count(*) FROM pg_subscription WHERE subname LIKE 'saas\\_mv\\_%' \
                         AND subdbid IN (SELECT oid FROM pg_database WHERE datname = $1 \
                                         OR datname = ANY($2)))",
            )
            .bind(&s.db)
            .bind(self.tenant_databases())
            .fetch_one(&s.admin)
            .await
            .unwrap();
            slots += a;
            subscriptions += b;
        }
        (slots, subscriptions)
    }

    /// Publications, subscriptions and slots of moves left on either
    /// server's databases (a clean move leaves none).
    pub(crate) async fn replication_leftovers(&self) -> i64 {
        let mut n = 0;
        for s in [&self.one, &self.two] {
            let count: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM pg_replication_slots \
                         WHERE slot_name LIKE 'saas\\_mv\\_%' \
                         AND (database = $1 OR database = ANY($2))) \
                      + (SELECT count(*) FROM pg_subscription WHERE subname LIKE 'saas\\_mv\\_%' \
                         AND subdbid IN (SELECT oid FROM pg_database WHERE datname = $1 \
                                         OR datname = ANY($2))) \
                      + (SELECT count(*) FROM pg_publication WHERE pubname LIKE 'saas\\_mv\\_%') \
                      + (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'saas\\_mv\\_%') \
                      + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n \
                         ON n.oid = p.pronamespace WHERE n.nspname = 'saas_tenancy_capture')",
            )
            .bind(&s.db)
            .bind(self.tenant_databases())
            .fetch_one(&s.admin)
            .await
            .unwrap();
            n += count;
            // Keys a capture left in its log.
            let logged: bool = sqlx::query_scalar(
                "SELECT to_regclass('saas_tenancy_capture.changes') IS NOT NULL",
            )
            .fetch_one(&s.admin)
            .await
            .unwrap();
            if logged {
                let keys: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM saas_tenancy_capture.changes")
                        .fetch_one(&s.admin)
                        .await
                        .unwrap();
                n += keys;
            }
        }
        n
    }

    fn tenant_databases(&self) -> Vec<String> {
        self.tenants
            .lock()
            .unwrap()
            .iter()
            .map(|id| format!("t_{}", id.simple()))
            .collect()
    }

    /// Drops both databases, the tenants' databases and roles, and any
    /// subscription or slot left in them.
    pub(crate) async fn cleanup(self) {
        let mut databases = self.tenant_databases();
        databases.sort();
        for s in [&self.one, &self.two] {
            let mut all = databases.clone();
            all.push(s.db.clone());
            for db in &all {
                let exists: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                )
                .bind(db)
                .fetch_one(&s.root)
                .await
                .unwrap();
                if !exists {
                    continue;
                }
                if let Ok(pool) = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(s.options.clone().database(db))
                    .await
                {
                    let subs: Vec<String> = sqlx::query_scalar(
                        "SELECT subname::text FROM pg_subscription \
                         WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    )
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_default();
                    for sub in subs {
                        for sql in [
                            format!("ALTER SUBSCRIPTION \"{sub}\" DISABLE"),
                            format!("ALTER SUBSCRIPTION \"{sub}\" SET (slot_name = NONE)"),
                            format!("DROP SUBSCRIPTION \"{sub}\""),
                        ] {
                            let _ = pool.execute(AssertSqlSafe(sql)).await;
                        }
                    }
                    pool.close().await;
                }
                for _ in 0..50 {
                    let left: Vec<(String, Option<i32>)> = sqlx::query_as(
                        "SELECT slot_name::text, active_pid FROM pg_replication_slots WHERE database = $1",
                    )
                    .bind(db)
                    .fetch_all(&s.root)
                    .await
                    .unwrap();
                    if left.is_empty() {
                        break;
                    }
                    for (slot, pid) in left {
                        match pid {
                            Some(pid) => {
                                let _ = sqlx::query("SELECT pg_terminate_backend($1)")
                                    .bind(pid)
                                    .execute(&s.root)
                                    .await;
                            }
                            None => {
                                let _ = sqlx::query("SELECT pg_drop_replication_slot($1)")
                                    .bind(&slot)
                                    .execute(&s.root)
                                    .await;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                s.root
                    .execute(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
                    )))
                    .await
                    .unwrap();
            }
            for role in databases
                .iter()
                .map(String::as_str)
                .chain([self.role.as_str()])
            {
                let _ = s
                    .root
                    .execute(AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{role}\"")))
                    .await;
            }
        }
    }
}
