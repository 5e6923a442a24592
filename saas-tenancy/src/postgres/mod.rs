//! PostgreSQL placements: rows with RLS, a schema per tenant, a database
//! per tenant — chosen per tenant, on one or several clusters.

mod affinity;
mod audit;
mod builder;
mod cache;
mod clusters;
mod conn;
mod fence;
mod lifecycle;
mod migrate;
mod moving;
mod pooling;
mod provision;
mod records;
mod redact;
mod session;
mod shared;
mod spares;
mod sql;
mod tenant_lock;
mod transfer;
mod tx;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use saas_core::{TenantContext, TenantId};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Executor, PgPool, Postgres, SqlSafeStr};

pub use crate::ident::{SqlIdent, TenantTable};
pub use crate::migration::{MigrationOptions, MigrationProgress, MigrationReport, ProgressFn};
pub use crate::registry::{PoolLimits, PoolStats};
pub use audit::{AuditFinding, AuditObject, Weakness};
pub use builder::PgTenancyBuilder;
pub use conn::PgTenantConn;
pub use fence::handle_lock_key;
#[cfg(feature = "sqlite")]
pub(crate) use moving::IncomingTable;
pub use moving::{
    KeptSource, MOVE_CHANNEL, MoveMethod, MoveOptions, MovePhase, MoveProgress, MoveProgressFn,
    MoveReport, SourcePurge,
};

/// A PostgreSQL tenant pool checked out of the registry.
pub type PgPoolLease = crate::registry::PoolLease<Postgres>;
pub use spares::SpareReport;
pub use sql::{POLICY_NAME, TENANT_SETTING, current_tenant_expr, row_security_statements};
pub use transfer::IMPORT_CHUNK_ROWS;
pub use tx::PgTenantTx;

use affinity::{Affinity, SharedCheckout};
use cache::RecordCache;

use crate::catalog::DynCatalog;
use crate::error::TenancyError;
use crate::observe;
use crate::placement::{ClusterName, Placement, TenantObjectName};
use crate::record::TenantRecord;

/// One PostgreSQL server (cluster) and how to reach it. Its `Debug`
/// output never shows the admin password.
#[derive(Clone)]
#[non_exhaustive]
pub struct PgClusterConfig {
    /// The name placements refer to.
    pub name: ClusterName,
    /// Connection to the shared database as a role that may create roles,
    /// schemas and databases (used for setup and provisioning only).
    pub admin: PgConnectOptions,
    /// The role scoped transactions run as: it owns nothing and cannot
    /// bypass RLS ([`PgTenancy::setup`] creates it).
    pub runtime_role: SqlIdent,
    /// Connections of the shared runtime pool (row and schema tenants).
    pub max_connections: u32,
    /// Where the shared runtime pool connects when the cluster sits behind
    /// a transaction pooler (PgBouncer `pool_mode = transaction`): host,
    /// port and database of the pooler, the runtime role as user, no
    /// startup `options`. `None`: the runtime pool connects as `admin`
    /// does. Requires [`PgTenancyBuilder::transaction_pooling`]; see
    /// [`PgClusterConfig::with_transaction_pooler`].
    pub transaction_pooler: Option<PgConnectOptions>,
    /// How a replication client reaches this cluster when a tenant moves
    /// away from it ([`PgTenancy::move_tenant`]): another server's
    /// subscription, and the mover's own replication connection (which
    /// creates the move's slot and exports the snapshot the rows are
    /// copied under). libpq connection keywords (`host=… port=… user=…
    /// password=… sslmode=…`), the database added per move. `None`: host,
    /// port and user of `admin`, with no password (trust, or a `.pgpass`
    /// on the target server). The mover's connection speaks plain text and
    /// SCRAM-SHA-256, MD5 or cleartext passwords; where it cannot connect
    /// (`sslmode=require`, a password it is not given) the subscription's
    /// table sync copies instead ([`MoveReport::copied_by_table_sync`](crate::postgres::MoveReport::copied_by_table_sync)
    /// says why), a few hundred milliseconds slower to start. The role
    /// needs `REPLICATION` (or is a superuser). Shown redacted by `Debug`;
    /// PostgreSQL keeps it in the subscription
    /// (`pg_subscription.subconninfo`, readable by superusers) while the
    /// move runs.
    pub replication_conninfo: Option<String>,
}

impl PgClusterConfig {
    /// A cluster named `name` reached with `admin`, running tenant work as
    /// `runtime_role`.
    pub fn new(name: ClusterName, admin: PgConnectOptions, runtime_role: SqlIdent) -> Self {
        Self {
            name,
            admin,
            runtime_role,
            max_connections: 10,
            transaction_pooler: None,
            replication_conninfo: None,
        }
    }

    /// Sets [`replication_conninfo`](Self::replication_conninfo).
    ///
    /// ```
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use saas_tenancy::ClusterName;
    /// use saas_tenancy::postgres::{PgClusterConfig, SqlIdent};
    ///
    /// let cluster = PgClusterConfig::new(
    ///     ClusterName::new("main")?,
    ///     "postgres://admin@db.internal:5432/app".parse()?,
    ///     SqlIdent::new("app_runtime")?,
    /// )
    /// .with_replication_conninfo("host=db.internal port=5432 user=replicator password=secret");
    /// assert!(!format!("{cluster:?}").contains("secret"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_replication_conninfo(mut self, conninfo: impl Into<String>) -> Self {
        self.replication_conninfo = Some(conninfo.into());
        self
    }

    /// Serves row and schema tenants through a transaction pooler reached
    /// with `pooler` (its user must be the runtime role; no startup
    /// `options`), while setup, provisioning and migrations keep using
    /// `admin`, which must reach PostgreSQL directly (they hold session
    /// advisory locks). Database tenants' pools also connect directly.
    ///
    /// ```
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use saas_tenancy::ClusterName;
    /// use saas_tenancy::postgres::{PgClusterConfig, SqlIdent};
    /// use sqlx::postgres::PgConnectOptions;
    ///
    /// let admin: PgConnectOptions = "postgres://admin@db.internal:5432/app".parse()?;
    /// let pgbouncer: PgConnectOptions = "postgres://app_runtime@pgbouncer.internal:6432/app".parse()?;
    /// let cluster = PgClusterConfig::new(ClusterName::new("main")?, admin, SqlIdent::new("app_runtime")?)
    ///     .with_transaction_pooler(pgbouncer);
    /// # let _ = cluster; Ok(())
    /// # }
    /// ```
    pub fn with_transaction_pooler(mut self, pooler: PgConnectOptions) -> Self {
        self.transaction_pooler = Some(pooler);
        self
    }
}

/// How tenant scopes are attached to connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ScopeMode {
    /// Row and schema tenants share one runtime pool per cluster; the scope
    /// is set per transaction (in the `BEGIN` round trip) or per checkout
    /// (reset before reuse). Scales to any number of active tenants; a
    /// scoped single statement costs one round trip for the scope, which
    /// replaces sqlx's liveness ping (a prepared statement, about as cheap).
    /// A connection goes back to the pool through a full reset (one more
    /// round trip, off the request path: see [`PgTenantConn`]) — unless it
    /// is kept for its tenant's next handle
    /// ([`PgTenancyBuilder::connection_affinity`], on by default), which
    /// then only sets its scope. Schema tenants give up sqlx's per-connection statement and
    /// type caches whenever a connection comes from the pool (same-named
    /// types in two schemas would clash there), so their statements are
    /// prepared again; on a kept connection the caches are their own.
    #[default]
    Shared,
    /// Every active tenant gets a small pool whose connections carry its
    /// scope from their startup packet, so scoped work costs what unscoped
    /// work costs. Pools share the [`PoolLimits`] budget. Past it there is
    /// no cliff: a row or schema tenant without a pool is served on the
    /// shared runtime pool as in [`ScopeMode::Shared`] (no eviction, no
    /// connect), and a tenant that becomes busy replaces the pool of one
    /// that has gone idle ([`PoolLimits::promote_after`],
    /// [`PoolLimits::min_pool_idle`]) — so hot tenants keep their pools. A
    /// database tenant always needs a pool of its own: it evicts the least
    /// recently used idle pool, or waits for one up to the acquire
    /// timeout. Server connections stay within the budget plus the runtime
    /// pool's `max_connections`.
    TenantPools,
}

struct Cluster {
    config: PgClusterConfig,
    /// Connections that hold tenant locks (see `tenant_lock`).
    locks: PgPool,
    /// The search path of the admin connection, read once: what the runtime
    /// connections' startup options give them, set per transaction in
    /// transaction-pooling mode (a pooler does not pass startup options).
    search_path: tokio::sync::OnceCell<String>,
    admin: PgPool,
    runtime: PgPool,
    /// Connections of `runtime` kept for their tenant (a non-zero affinity
    /// window).
    affinity: Option<Affinity>,
    /// Whether the cluster's list of spare schemas exists (see `spares`).
    spares: spares::SpareTable,
}

impl Cluster {
    /// Whether a shared checkout whose first round trip failed with
    /// `error` takes another connection: when the connection died while
    /// idle, or was a kept one (closed), nothing of the request ran on it.
    /// Each failed connection is closed, so one more attempt than the pool
    /// holds reaches a new one.
    fn may_retry(&self, reused: bool, error: &TenancyError, attempts: u32) -> bool {
        (reused || session::is_dead_connection(error)) && attempts < self.config.max_connections + 1
    }

    /// The admin connection's search path (read once; see `search_path`).
    async fn search_path(&self) -> Result<&str, TenancyError> {
        let path = self
            .search_path
            .get_or_try_init(|| async {
                sqlx::query_scalar::<_, String>("SELECT pg_catalog.current_setting('search_path')")
                    .fetch_one(&self.admin)
                    .await
            })
            .await?;
        Ok(path.as_str())
    }

    /// Where a handle on `checkout` may keep its connection afterwards.
    fn keep_for(&self, checkout: &SharedCheckout) -> Option<(Affinity, std::time::Instant)> {
        self.affinity.clone().map(|a| (a, checkout.left_pool))
    }
}

/// Scoped access to tenants on PostgreSQL, for every placement.
///
/// `begin(&ctx)` is the only way to a tenant's data: it reads the tenant
/// from the catalog (a missing, suspended or deleted tenant is a typed
/// error) and opens a [`PgTenantTx`] scoped by its placement, in the same
/// round trip as `BEGIN`.
#[derive(Clone)]
pub struct PgTenancy {
    inner: Arc<Inner>,
}

/// The shared state (see `tenancy_core.rs`) with PostgreSQL's clusters.
type Inner = crate::tenancy_core::Core<Cluster, Postgres, PgState>;

/// What only PostgreSQL tenancies hold.
struct PgState {
    mode: ScopeMode,
    /// Every scope transaction-local (see `pooling`).
    transaction_pooling: bool,
    records: Arc<RecordCache>,
    /// Bumped whenever a deletion or move in this process fences a tenant,
    /// and whenever another process announces a move (see `moving/follow.rs`):
    /// a request that read its tenant's record before and then waited for
    /// a connection checks the record again (see [`PgTenancy::checkout`]).
    fences: Arc<AtomicU64>,
    /// The listener that learns other processes' moves.
    follower: moving::Follower,
    /// How long a new handle of a tenant in a move's fence waits.
    move_wait: std::time::Duration,
    /// The placement each tenant's pool in the registry was opened for:
    /// a pool of a placement the tenant has been moved away from is
    /// closed before the tenant gets one for its new placement.
    pool_placements: crate::registry::PoolPlacements,
}

impl PgTenancy {
    fn cluster(&self, name: &ClusterName) -> Result<&Cluster, TenancyError> {
        self.inner.cluster(name)
    }

    /// Creates the runtime role of every cluster and enforces RLS on the
    /// declared shared tables. Idempotent; run it after the shared
    /// migrations (the tables must exist).
    pub async fn setup(&self) -> Result<(), TenancyError> {
        for cluster in self.inner.clusters.values() {
            let runtime = &cluster.config.runtime_role;
            let mut tx = cluster.admin.begin().await?;
            // Role creation races between processes; serialise it.
            tx.execute("SELECT pg_advisory_xact_lock(hashtext('saas_tenancy.setup'))")
                .await?;
            tx.execute(AssertSqlSafe(sql::create_runtime_role(runtime)))
                .await?;
            for table in &self.inner.tables {
                // The runtime role needs to reach the table's schema.
                let schema: Option<String> = sqlx::query_scalar(
                    "SELECT n.nspname::text FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.oid = to_regclass($1)",
                )
                .bind(table.table.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                let schema = schema.ok_or_else(|| {
                    TenancyError::InvalidInput(format!(
                        "tenant table {} does not exist; run the shared migrations first",
                        table.table
                    ))
                })?;
                let schema = format!("\"{}\"", schema.replace('"', "\"\""));
                tx.execute(AssertSqlSafe(format!(
                    "GRANT USAGE ON SCHEMA {schema} TO {}",
                    runtime.quoted()
                )))
                .await?;
                for statement in sql::row_security_statements(table, runtime) {
                    tx.execute(AssertSqlSafe(statement)).await?;
                }
                // …and the sequences behind its serial/identity columns.
                let sequences: Vec<String> = sqlx::query_scalar(
                    "SELECT s.oid::regclass::text FROM pg_depend d \
                     JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
                     WHERE d.refobjid = to_regclass($1) AND d.deptype IN ('a', 'i')",
                )
                .bind(table.table.as_str())
                .fetch_all(&mut *tx)
                .await?;
                for sequence in sequences {
                    // `regclass::text` is quoted by PostgreSQL itself.
                    tx.execute(AssertSqlSafe(format!(
                        "GRANT USAGE, SELECT, UPDATE ON SEQUENCE {sequence} TO {}",
                        runtime.quoted()
                    )))
                    .await?;
                }
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Opens a transaction scoped to the context's tenant.
    #[tracing::instrument(name = "tenancy.begin", level = "debug", skip_all, fields(tenant_id = %ctx.tenant_id(), backend = "postgres"))]
    pub async fn begin(&self, ctx: &TenantContext) -> Result<PgTenantTx, TenancyError> {
        let timer = observe::Scope::start("begin", "postgres");
        let fences = self.fences();
        let begun = match self.servable(ctx.tenant_id()).await {
            Ok(record) => self.begin_record(&record, fences).await,
            Err(e) => Err(e),
        };
        timer.done(ctx.tenant_id(), &begun);
        begun
    }

    /// Opens a transaction scoped to the tenant of `record`, which the
    /// caller found servable when [`fences`](Self::fences) said `fences`.
    pub(super) async fn begin_record(
        &self,
        record: &TenantRecord,
        fences: u64,
    ) -> Result<PgTenantTx, TenancyError> {
        let tenant = record.id;
        let placement = record.placement.clone();
        if let Some(lease) = self.tenant_pool(record).await? {
            let conn = self
                .checkout(lease.pool(), tenant, &placement, fences)
                .await?;
            return PgTenantTx::begin(
                conn,
                None,
                tenant,
                placement,
                Some(lease),
                None,
                false,
                false,
            )
            .await;
        }
        let cluster = self.cluster(placement.cluster())?;
        let pooled_path = match self.inner.backend.transaction_pooling {
            true => Some(cluster.search_path().await?),
            false => None,
        };
        let begin = |reused: bool| match (&placement, pooled_path) {
            (Placement::Schema { schema, .. }, Some(_)) => pooling::begin_schema(schema, tenant),
            (_, Some(path)) => pooling::begin_row(tenant, path),
            (Placement::Schema { schema, .. }, None) => sql::begin_schema(schema, tenant, reused),
            (_, None) => sql::begin_row(tenant, reused),
        };
        let mut attempts = 0;
        let mut may_reuse = true;
        loop {
            let checkout = self
                .shared_checkout(cluster, tenant, &placement, fences, may_reuse)
                .await?;
            let reused = checkout.reused;
            let statement = AssertSqlSafe(begin(reused)).into_sql_str();
            let affinity = cluster.keep_for(&checkout);
            match PgTenantTx::begin(
                checkout.conn,
                Some(statement),
                tenant,
                placement.clone(),
                None,
                affinity,
                reused,
                pooled_path.is_some(),
            )
            .await
            {
                // Behind a transaction pooler, a connection whose exchange
                // raw SQL left out of step (see `pooling::out_of_step`)
                // shows it here at the latest, before any of the request's
                // SQL: it is closed, another is taken.
                Err(e) if pooled_path.is_some() && pooling::out_of_step(&e) => {
                    attempts += 1;
                    if attempts > cluster.config.max_connections {
                        return Err(e);
                    }
                    may_reuse = false;
                }
                // A connection that died while idle in the pool (see
                // `session`), or a kept one whose first round trip failed
                // (it is closed): nothing ran on it; take another one from
                // the pool — after reading the record again, since a
                // deletion also ends sessions (it cuts the tenant's handles).
                Err(e) if cluster.may_retry(reused, &e, attempts) => {
                    attempts += 1;
                    may_reuse = false;
                    self.forget_record(tenant);
                    self.recheck_placement(tenant, &placement).await?;
                }
                result => return result,
            }
        }
    }

    /// A scoped connection for single statements, each committing on its
    /// own (see [`PgTenantConn`] for how the scope is kept and removed).
    ///
    /// # Errors
    /// [`TenancyError::Unsupported`] in transaction-pooling mode
    /// ([`PgTenancyBuilder::transaction_pooling`]): a session scope cannot
    /// survive a transaction pooler; use [`begin`](Self::begin).
    #[tracing::instrument(name = "tenancy.acquire", level = "debug", skip_all, fields(tenant_id = %ctx.tenant_id(), backend = "postgres"))]
    pub async fn acquire(&self, ctx: &TenantContext) -> Result<PgTenantConn, TenancyError> {
        let timer = observe::Scope::start("acquire", "postgres");
        let acquired = self.acquire_scoped(ctx).await;
        timer.done(ctx.tenant_id(), &acquired);
        acquired
    }

    async fn acquire_scoped(&self, ctx: &TenantContext) -> Result<PgTenantConn, TenancyError> {
        if self.inner.backend.transaction_pooling {
            return Err(TenancyError::Unsupported(
                "acquire() scopes a session, which a transaction pooler hands to other \
                 clients between statements; with transaction_pooling use begin() and commit()"
                    .to_owned(),
            ));
        }
        let fences = self.fences();
        let record = self.servable(ctx.tenant_id()).await?;
        let tenant = record.id;
        let placement = record.placement.clone();
        if let Some(lease) = self.tenant_pool(&record).await? {
            let conn = self
                .checkout(lease.pool(), tenant, &placement, fences)
                .await?;
            return Ok(PgTenantConn::new(
                conn,
                false,
                tenant,
                placement,
                Some(lease),
                None,
            ));
        }
        let cluster = self.cluster(placement.cluster())?;
        let mut attempts = 0;
        let mut may_reuse = true;
        loop {
            let checkout = self
                .shared_checkout(cluster, tenant, &placement, fences, may_reuse)
                .await?;
            let reused = checkout.reused;
            let affinity = cluster.keep_for(&checkout);
            // Wrapped before the scope is set, so that even a cancellation
            // right here resets the connection before another tenant uses it.
            let mut conn = PgTenantConn::new(
                checkout.conn,
                true,
                tenant,
                placement.clone(),
                None,
                affinity,
            );
            // A kept connection's caches are this tenant's already; a
            // schema tenant's connection from the pool has just had them
            // emptied, so its scope is not prepared (see `sql`).
            let scoped = match (&placement, reused) {
                (Placement::Schema { schema, .. }, false) => {
                    match conn.clear_caches_if_shared().await {
                        Ok(()) => conn
                            .execute(AssertSqlSafe(sql::scope_session_schema(schema, tenant)))
                            .await
                            .map(drop),
                        Err(e) => Err(e),
                    }
                }
                _ => scope_prepared(&mut conn, tenant, &placement).await,
            };
            match scoped.map_err(TenancyError::from) {
                Ok(()) => return Ok(conn),
                // A connection that died while idle, or a kept one whose
                // first round trip failed (see `begin_record`).
                Err(e) if cluster.may_retry(reused, &e, attempts) => {
                    conn.abandon(reused);
                    attempts += 1;
                    may_reuse = false;
                    self.forget_record(tenant);
                    self.recheck_placement(tenant, &placement).await?;
                }
                Err(e) => {
                    conn.abandon(reused);
                    return Err(e);
                }
            }
        }
    }

    /// Whether every scope is transaction-local, for a transaction pooler
    /// ([`PgTenancyBuilder::transaction_pooling`]): then
    /// [`acquire`](Self::acquire) is refused.
    pub fn transaction_pooling(&self) -> bool {
        self.inner.backend.transaction_pooling
    }

    /// How many deletions this process has started: read before a
    /// request reads its tenant's record.
    fn fences(&self) -> u64 {
        self.inner.backend.fences.load(Ordering::Acquire)
    }

    /// A connection of `pool` for `tenant`, whose record was found
    /// servable when [`fences`](Self::fences) said `fences`. Waiting for
    /// the connection can take long; if a deletion started here meanwhile
    /// the record is checked again (the catalog is read: a fenced tenant
    /// is not cached), so no handle is handed out for a tenant being
    /// deleted — nor for one whose pool the deletion closed.
    async fn checkout(
        &self,
        pool: &PgPool,
        tenant: TenantId,
        placement: &Placement,
        fences: u64,
    ) -> Result<PoolConnection<Postgres>, TenancyError> {
        let conn = pool.acquire().await;
        if self.fences() != fences {
            self.recheck_placement(tenant, placement).await?;
        }
        Ok(conn?)
    }

    /// A shared runtime connection for `tenant`: one kept for it (when
    /// `may_reuse`), else one from the pool — after handing back the
    /// oldest kept connection if the pool has nothing idle.
    async fn shared_checkout(
        &self,
        cluster: &Cluster,
        tenant: TenantId,
        placement: &Placement,
        fences: u64,
        may_reuse: bool,
    ) -> Result<SharedCheckout, TenancyError> {
        if let Some(affinity) = &cluster.affinity {
            if may_reuse && let Some(kept) = affinity.take(tenant, placement) {
                return Ok(kept);
            }
            affinity.make_room();
        }
        let conn = self
            .checkout(&cluster.runtime, tenant, placement, fences)
            .await?;
        Ok(SharedCheckout::from_pool(conn))
    }

    /// The tenant's own pool, when its placement or the scope mode uses
    /// one. A database tenant always has one (waiting for budget if need
    /// be); a row or schema tenant in [`ScopeMode::TenantPools`] has one
    /// when it fits the budget or the tenant is busy enough to replace an
    /// idle one ([`PoolRegistry::try_lease`](crate::registry::PoolRegistry::try_lease)),
    /// and is served on the shared runtime pool otherwise.
    async fn tenant_pool(
        &self,
        record: &TenantRecord,
    ) -> Result<Option<PgPoolLease>, TenancyError> {
        let placement = &record.placement;
        let dedicated = matches!(placement, Placement::Database { .. })
            || self.inner.backend.mode == ScopeMode::TenantPools;
        if !dedicated {
            return Ok(None);
        }
        let cluster = self.cluster(placement.cluster())?;
        // The options are built only when the pool is opened, not on every
        // checkout of an open pool (this is the request path).
        let open = |limits: &PoolLimits| {
            // The application name lets a deletion find the pool's
            // connections from any process (see `fence.rs`).
            let runtime = cluster
                .config
                .admin
                .clone()
                .username(cluster.config.runtime_role.as_str())
                .application_name(&fence::application_name(record.id));
            let tenant = record.id.to_string();
            // Every role is named in the startup packet: it outranks a
            // default the runtime role may have set on itself.
            let options = match placement {
                Placement::Shared { .. } => {
                    runtime.options([("role", NO_ROLE), (TENANT_SETTING, tenant.as_str())])
                }
                Placement::Schema { schema, .. } => runtime.options([
                    ("role", schema.as_str()),
                    ("search_path", schema.as_str()),
                    (TENANT_SETTING, tenant.as_str()),
                ]),
                Placement::Database { database, .. } => tenant_database_options(runtime, database)
                    .options([("role", NO_ROLE), (TENANT_SETTING, tenant.as_str())]),
            };
            limits.pg_pool(options)
        };
        let registry = &self.inner.registry;
        if self
            .inner
            .backend
            .pool_placements
            .moved(record.id, &record.placement)
        {
            // Its connections reach the old placement, which the move
            // locked out and cut: nothing to wait for long.
            registry
                .close_within(record.id, std::time::Duration::from_secs(1))
                .await;
        }
        if matches!(placement, Placement::Database { .. }) {
            return Ok(Some(registry.lease(record.id, open).await?));
        }
        registry.try_lease(record.id, open).await
    }

    /// The tenant's record if it may be served; while a move fences the
    /// tenant, waits (up to [`PgTenancyBuilder::move_wait`]) for the
    /// move to cut over or be aborted.
    /// Drops the cached catalog record of `id` (after changing it elsewhere).
    pub fn forget_record(&self, id: TenantId) {
        self.inner.backend.records.forget(id);
    }

    /// **Escape hatch**: an unscoped admin connection for cross-tenant
    /// work (reports, fleet operations). Logged at `warn` with `reason` so
    /// every use is visible and greppable (`unscoped_admin_connection`).
    pub async fn unscoped_admin_connection(
        &self,
        cluster: &ClusterName,
        reason: &str,
    ) -> Result<PoolConnection<Postgres>, TenancyError> {
        tracing::warn!(cluster = %cluster, reason, "unscoped_admin_connection");
        Ok(self.cluster(cluster)?.admin.acquire().await?)
    }

    /// The declared tenant tables (shared under row-level security).
    pub fn tenant_tables(&self) -> &[TenantTable] {
        &self.inner.tables
    }

    /// **Escape hatch** for system work that spans tenants by design: a
    /// cluster's administrator pool (every tenant's rows, no scope, no
    /// row-level security) — what an outbox relay drains the shared and
    /// the schema tenants' outboxes with. Never hand it to request code:
    /// use [`PgTenancy::begin`]. Not logged, unlike
    /// [`PgTenancy::unscoped_admin_connection`], since a relay polls it.
    ///
    /// # Errors
    /// [`TenancyError::UnknownCluster`] for a name not configured.
    pub fn admin_pool(&self, cluster: &ClusterName) -> Result<&PgPool, TenancyError> {
        Ok(&self.cluster(cluster)?.admin)
    }

    /// The runtime pool of a cluster, as used by row and schema tenants.
    /// Plain use of it sees no tenant rows: every connection is reset as
    /// it goes back to the pool (see [`PgTenantConn`]), so no scope or other
    /// session state of an earlier user is left on it. Connections kept
    /// for their tenant (see [`PgTenancyBuilder::connection_affinity`])
    /// count as checked out in its `size()` and not as idle; they are
    /// kept only while the pool has an idle connection or room for one. A
    /// connection that came back less than a second ago is handed out
    /// without sqlx's liveness ping (it was just reset and pinged), in
    /// both scope modes; scoped handles skip one that died meanwhile (a
    /// server restart), plain use of this pool sees the error.
    ///
    /// In transaction-pooling mode ([`PgTenancyBuilder::transaction_pooling`])
    /// this pool reaches PgBouncer: run plain statements only inside a
    /// transaction (`pool.begin()`), since outside one a statement's prepare
    /// and execute may reach two server connections; that its sessions start
    /// clean rests on PgBouncer's `server_reset_query = DISCARD ALL` with
    /// `server_reset_query_always = 1` (the documented configuration).
    pub fn runtime_pool(&self, cluster: &ClusterName) -> Result<&PgPool, TenancyError> {
        Ok(&self.cluster(cluster)?.runtime)
    }

    /// How many runtime connections are kept for their tenant right now
    /// (see [`PgTenancyBuilder::connection_affinity`]), over all clusters.
    pub fn kept_connections(&self) -> usize {
        self.inner
            .clusters
            .values()
            .filter_map(|c| c.affinity.as_ref())
            .map(Affinity::len)
            .sum()
    }

    /// Hands every runtime connection kept for its tenant (see
    /// [`PgTenancyBuilder::connection_affinity`]) back to its pool, through
    /// the full reset; returns how many. Call it before closing a runtime
    /// pool at shutdown, so that `close` does not wait for the window.
    pub fn release_kept_connections(&self) -> usize {
        self.inner
            .clusters
            .values()
            .filter_map(|c| c.affinity.as_ref())
            .map(Affinity::release_all)
            .sum()
    }

    /// Closes tenant pools unused for longer than
    /// [`PoolLimits::idle_pool_timeout`] (call it periodically, e.g. from a
    /// background task); returns how many were closed. Pools are also
    /// evicted least-recently-used whenever the budget is needed.
    pub async fn evict_idle_pools(&self) -> usize {
        self.inner.registry.evict_idle().await
    }

    /// The pool on a database tenant's own database, lent from the tenant
    /// pool registry: it counts against [`PoolLimits::budget`] like a
    /// request's, and the registry does not evict it while the lease
    /// lives. For background work that reads the tenant's database as a
    /// whole — an outbox relay pass over the tenant's outbox (see
    /// `saas_events::PoolSource`). Its connections run as the runtime role
    /// with the tenant's setting, as scoped ones do; hold the lease only as
    /// long as the work, so requests keep their budget.
    ///
    /// # Errors
    /// [`TenancyError::TenantNotFound`] or a status error for a tenant that
    /// is not servable, [`TenancyError::Unsupported`] for a tenant that has
    /// no database of its own (row and schema tenants share the cluster's),
    /// [`TenancyError::Timeout`] when the budget stays taken.
    pub async fn lease_database_pool(&self, tenant: TenantId) -> Result<PgPoolLease, TenancyError> {
        let record = self.servable(tenant).await?;
        if !matches!(record.placement, Placement::Database { .. }) {
            return Err(TenancyError::Unsupported(format!(
                "tenant {tenant} has no database of its own (placement {:?}); reach its tables \
                 through the cluster's administrator pool",
                record.placement
            )));
        }
        let lease = self.tenant_pool(&record).await?.ok_or_else(|| {
            TenancyError::Unsupported(format!("tenant {tenant} has no pool of its own"))
        })?;
        Ok(lease.at(record.placement))
    }

    /// Gauges of the tenant-database pool registry.
    pub async fn pool_stats(&self) -> PoolStats {
        self.inner.registry.stats().await
    }

    /// The catalog.
    pub fn catalog(&self) -> &DynCatalog {
        &self.inner.catalog
    }
}

/// The `role` setting's value for "the login role itself" (`SET ROLE NONE`).
const NO_ROLE: &str = "none";

/// Connection options of a cluster's shared runtime pool: the admin
/// options as the runtime role, with the role named in the startup packet.
/// An ordinary role may set defaults on itself (`ALTER ROLE CURRENT_USER
/// SET role = '<a tenant role>'`, which raw SQL through any handle could
/// run); a startup option outranks such a default, so new connections
/// never start as a tenant (`audit` reports the default).
fn runtime_options(config: &PgClusterConfig) -> PgConnectOptions {
    config
        .admin
        .clone()
        .username(config.runtime_role.as_str())
        .options([("role", NO_ROLE)])
}

/// Connection options for a tenant database: its own name, and the default
/// `public` schema whatever search path the shared database uses.
fn tenant_database_options(
    base: PgConnectOptions,
    database: &TenantObjectName,
) -> PgConnectOptions {
    base.database(database.as_str())
        .options([("search_path", "public")])
}

impl std::fmt::Debug for PgTenancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTenancy")
            .field("clusters", &self.inner.clusters.keys().collect::<Vec<_>>())
            .field("tables", &self.inner.tables)
            .finish_non_exhaustive()
    }
}

/// Puts `tenant`'s scope on a shared session with the prepared statement
/// of its placement (`sql::SCOPE_SESSION_ROW` or `_SCHEMA`) and checks
/// that the reply is this statement's: on an exchange left out of step (a
/// refused `COPY … TO STDOUT` through sqlx's raw copy API leaves a reply
/// unread) sqlx could take an earlier reply for it and report success.
async fn scope_prepared(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    placement: &Placement,
) -> Result<(), sqlx::Error> {
    use sqlx::Row;
    let (k1, k2) = fence::handle_lock_key(tenant);
    let id = tenant.to_string();
    let query = match placement {
        Placement::Schema { schema, .. } => sqlx::query(sql::SCOPE_SESSION_SCHEMA)
            .bind(k1)
            .bind(k2)
            .bind(schema.as_str())
            .bind(schema.quoted())
            .bind(&id),
        _ => sqlx::query(sql::SCOPE_SESSION_ROW)
            .bind(k1)
            .bind(k2)
            .bind(&id),
    };
    let rows = query.fetch_all(&mut *conn).await?;
    let echoed: Option<String> = match rows.as_slice() {
        [row] => row.try_get(sql::SCOPE_COLUMN).ok(),
        _ => None,
    };
    if echoed.as_deref() == Some(id.as_str()) {
        Ok(())
    } else {
        Err(sqlx::Error::Protocol(
            "a shared connection's reply to its scope was not its own".to_owned(),
        ))
    }
}
