//! SQLite placements: rows in a shared database file, or a database file
//! per tenant.
//!
//! SQLite has no row-level security, so isolation is built into the
//! connections a tenant gets: every scoped connection belongs to the
//! tenant's own small pool and `ATTACH` is refused on it. In a shared file
//! the rows of a declared table `notes` live in a physical table
//! (`notes_rows` by default, see [`TenantTable::stored_as`]), and each
//! tenant connection gets a temporary view `notes` of its own rows with
//! `INSTEAD OF` triggers that keep writes inside the tenant. Application
//! SQL names `notes` as usual — the same SQL as for a tenant database file
//! — and cannot forget the tenant filter.
//!
//! **Not protected:** SQL that names the physical table (`notes_rows`)
//! bypasses the view, and `DROP VIEW temp.notes` removes it for the rest of
//! the connection's life. SQLite has no privileges: every table of the
//! shared file that is *not* declared as a tenant table — a lookup table,
//! or the catalog and library tables if the host keeps them in that file —
//! is readable and writable in full from every tenant connection, and a
//! tenant connection can create tables (the audit reports undeclared
//! tables with a tenant column). Never build table names from request
//! data; reserve the physical names for migrations, and keep the catalog
//! in a file of its own. Two SQLite limitations of
//! views with `INSTEAD OF` triggers apply to shared placements: `RETURNING`
//! is not available, and `rows_affected()` of an `UPDATE`/`DELETE` is 0 —
//! count with `SELECT total_changes()` before and after if you need it.

mod audit;
mod builder;
mod clusters;
mod gate;
mod guard;
mod ledger;
mod lifecycle;
mod lock;
mod migrate;
mod moving;
mod ops;
mod shared;
mod transfer;

pub use crate::audit::{AuditFinding, AuditObject, Weakness};
pub use crate::hooks::{LifecycleEvent, LifecycleHooks, NoHooks};
pub use builder::SqliteTenancyBuilder;
pub use moving::SqliteMoveOptions;
#[cfg(feature = "postgres")]
pub(crate) use moving::{Cell, Incoming, IncomingTable};

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use saas_core::{TenantContext, TenantId, TenantStatus};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Sqlite, SqliteConnection, Transaction};

use crate::catalog::DynCatalog;
use crate::error::TenancyError;
use crate::ident::TenantTable;
use crate::observe;
use crate::placement::{ClusterName, Placement};
use crate::record::TenantRecord;
use crate::registry::PoolLease;
// The builder and `pool_stats` use them: nameable without the `postgres` feature.
pub use crate::registry::{PoolLimits, PoolStats};

/// A SQLite tenant file's pool checked out of the registry (see
/// [`SqliteTenancy::lease_database_pool`]).
pub type SqlitePoolLease = PoolLease<Sqlite>;

/// One SQLite "cluster": a shared database file for row tenants and a
/// directory for tenant database files.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteClusterConfig {
    /// The name placements refer to.
    pub name: ClusterName,
    /// The shared database file (its tables are created by the host's
    /// shared migrations).
    pub shared_file: PathBuf,
    /// Where `t_<id>.sqlite` files of database tenants live.
    pub tenant_dir: PathBuf,
}

impl SqliteClusterConfig {
    /// A cluster named `name`: row tenants in `shared_file`, database
    /// tenants' files in `tenant_dir`.
    pub fn new(
        name: ClusterName,
        shared_file: impl Into<PathBuf>,
        tenant_dir: impl Into<PathBuf>,
    ) -> Self {
        SqliteClusterConfig {
            name,
            shared_file: shared_file.into(),
            tenant_dir: tenant_dir.into(),
        }
    }
}

/// Scoped access to tenants on SQLite.
///
/// Two row tenants in one shared file: what one writes through its scoped
/// transaction, the other does not see, and cannot write in its name.
///
/// ```
/// use std::sync::Arc;
///
/// use saas_core::{TenantContext, TenantSlug};
/// use saas_tenancy::sqlite::{SqliteClusterConfig, SqliteTenancy};
/// use saas_tenancy::{ClusterName, NewTenant, SqliteCatalog, Strategy, TenantTable};
/// use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// let dir = std::env::temp_dir().join(uuid::Uuid::new_v4().to_string());
/// std::fs::create_dir_all(&dir)?;
/// let file = |name: &str| {
///     SqliteConnectOptions::new()
///         .filename(dir.join(name))
///         .create_if_missing(true)
/// };
///
/// // The shared file keeps every row tenant's notes in `notes_rows`
/// // (normally created by your shared migrations).
/// let shared = SqlitePool::connect_with(file("shared.sqlite")).await?;
/// sqlx::raw_sql(
///     "CREATE TABLE notes_rows (tenant_id BLOB NOT NULL, id INTEGER NOT NULL, \
///      body TEXT NOT NULL, PRIMARY KEY (tenant_id, id))",
/// )
/// .execute(&shared)
/// .await?;
/// shared.close().await;
///
/// // The catalog lives in a file of its own.
/// let catalog = SqliteCatalog::new(SqlitePool::connect_with(file("catalog.sqlite")).await?);
/// catalog.migrate().await?;
/// let local = ClusterName::new("local")?;
/// let tenancy = SqliteTenancy::builder(Arc::new(catalog))
///     .cluster(SqliteClusterConfig::new(local.clone(), dir.join("shared.sqlite"), &dir))
///     .tenant_table(TenantTable::new("notes")?)
///     .build()?;
/// tenancy.setup().await?;
///
/// let mut tenants = Vec::new();
/// for slug in ["acme", "globex"] {
///     let new = NewTenant::new(TenantSlug::parse(slug)?, slug, Strategy::Shared, local.clone())?;
///     let record = tenancy.provision(new).await?;
///     tenants.push(TenantContext::new(record.id, record.slug));
/// }
/// let (acme, globex) = (&tenants[0], &tenants[1]);
///
/// // No tenant in the SQL: `notes` is the tenant's own view.
/// let mut tx = tenancy.begin(acme).await?;
/// sqlx::query("INSERT INTO notes (id, body) VALUES (1, 'acme only')")
///     .execute(&mut *tx)
///     .await?;
/// tx.commit().await?;
///
/// let count = "SELECT count(*) FROM notes";
/// let mut as_acme = tenancy.acquire(acme).await?;
/// assert_eq!(sqlx::query_scalar::<_, i64>(count).fetch_one(&mut *as_acme).await?, 1);
/// let mut as_globex = tenancy.acquire(globex).await?;
/// assert_eq!(sqlx::query_scalar::<_, i64>(count).fetch_one(&mut *as_globex).await?, 0);
///
/// // A row claiming another tenant is refused by the view's trigger.
/// let forged = sqlx::query("INSERT INTO notes (tenant_id, id, body) VALUES (?, 2, 'forged')")
///     .bind(acme.tenant_id())
///     .execute(&mut *as_globex)
///     .await;
/// assert!(forged.is_err());
///
/// drop((as_acme, as_globex, tenancy));
/// std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SqliteTenancy {
    inner: Arc<Inner>,
}

/// The shared state (see `tenancy_core.rs`) with SQLite's clusters.
type Inner = crate::tenancy_core::Core<SqliteClusterConfig, Sqlite, SqliteState>;

/// What only SQLite tenancies hold.
struct SqliteState {
    locks: lock::TenantLocks,
    gates: gate::Gates,
    /// How long a new handle of a moving tenant waits for the cut-over.
    move_wait: Duration,
    /// The placement each tenant's pool in the registry was opened on: a
    /// pool opened before a move is never used after it.
    pool_placements: crate::registry::PoolPlacements,
}

/// A scoped SQLite connection (statements commit on their own).
pub struct SqliteTenantConn {
    conn: PoolConnection<Sqlite>,
    record: TenantRecord,
    _lease: PoolLease<Sqlite>,
    // Dropped last, once the connection has been handed back.
    _pass: gate::Pass,
}

/// A scoped SQLite transaction; dropped without commit, it rolls back.
pub struct SqliteTenantTx {
    tx: Transaction<'static, Sqlite>,
    record: TenantRecord,
    _lease: PoolLease<Sqlite>,
    _pass: gate::Pass,
}

impl SqliteTenancy {
    fn cluster(&self, name: &ClusterName) -> Result<&SqliteClusterConfig, TenancyError> {
        self.inner.cluster(name)
    }

    async fn servable(&self, tenant: TenantId) -> Result<TenantRecord, TenancyError> {
        crate::catalog::servable(&*self.inner.catalog, tenant).await
    }

    /// The record of a servable tenant, and a pass through its gate that
    /// the handle keeps (see `gate.rs`). The pass is taken first: a
    /// deletion that closes the gate after it waits for the handle, and
    /// one that closed it before marked the tenant `deleting`, which the
    /// record read after says.
    ///
    /// A tenant being moved (`moving`, or its gate held by this process's
    /// mover) is waited for, up to the builder's `move_wait`, and then
    /// served from the placement the catalog names after the cut-over.
    async fn admit(&self, tenant: TenantId) -> Result<(TenantRecord, gate::Pass), TenancyError> {
        let deadline = tokio::time::Instant::now() + self.inner.backend.move_wait;
        loop {
            let pass = match self.inner.backend.gates.enter(tenant) {
                gate::Entry::Open(pass) => pass,
                gate::Entry::Closing(gate) => {
                    // A deletion holds or awaits the gate: refused at once.
                    // A move holds it: wait for the cut-over.
                    match self.servable(tenant).await {
                        Err(TenancyError::TenantNotServable {
                            status: TenantStatus::Moving,
                            ..
                        })
                        | Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                    tokio::time::timeout_at(deadline, gate::enter_after(gate))
                        .await
                        .map_err(|_| self.still_moving(tenant))?
                }
            };
            let record = self.inner.record(tenant).await?;
            if record.status != TenantStatus::Moving {
                let record = crate::catalog::check_servable(record)?;
                if matches!(record.placement, Placement::Schema { .. })
                    || !self.inner.clusters.contains_key(record.placement.cluster())
                {
                    return Err(TenancyError::PlacementNotServedHere {
                        tenant,
                        placement: record.placement,
                    });
                }
                return Ok((record, pass));
            }
            drop(pass);
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(self.still_moving(tenant));
            }
            // Other processes' movers are seen through the catalog only.
            tokio::time::sleep_until((now + moving::MOVE_POLL).min(deadline)).await;
        }
    }

    fn still_moving(&self, tenant: TenantId) -> TenancyError {
        TenancyError::TenantMoving {
            tenant,
            detail: format!(
                "the move had not cut over after the {:?} a new handle waits \
                 (SqliteTenancyBuilder::move_wait)",
                self.inner.backend.move_wait
            ),
        }
    }

    async fn lease(&self, record: &TenantRecord) -> Result<PoolLease<Sqlite>, TenancyError> {
        let cluster = self.cluster(record.placement.cluster())?.clone();
        let (file, shared) = match &record.placement {
            Placement::Shared { .. } => (cluster.shared_file.clone(), true),
            Placement::Database { database, .. } => {
                (cluster.tenant_dir.join(format!("{database}.sqlite")), false)
            }
            Placement::Schema { .. } => {
                return Err(TenancyError::Unsupported(
                    "SQLite has no schemas".to_owned(),
                ));
            }
        };
        let tenant = record.id;
        self.forget_stale_pool(record).await;
        let tables: Vec<guard::ViewSpec> = if shared {
            self.view_specs()?
        } else {
            Vec::new()
        };
        let options = SqliteConnectOptions::new()
            .filename(file)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        self.inner
            .registry
            .lease(tenant, move |limits| {
                SqlitePoolOptions::new()
                    .max_connections(limits.per_tenant)
                    .min_connections(0)
                    .acquire_timeout(limits.acquire_timeout)
                    .idle_timeout(Some(limits.idle_pool_timeout))
                    .after_connect(move |conn, _| {
                        let tables = tables.clone();
                        Box::pin(async move {
                            guard::forbid_attach(conn).await?;
                            guard::install_tenant_views(conn, tenant, &tables)
                                .await
                                .map_err(|e| sqlx::Error::Configuration(e.to_string().into()))
                        })
                    })
                    .connect_lazy_with(options)
            })
            .await
    }

    /// Closes `record`'s tenant pool if it was opened on another
    /// placement (before a move), so no connection of it is used again:
    /// new connections open on the placement the record names.
    async fn forget_stale_pool(&self, record: &TenantRecord) {
        let stale = self
            .inner
            .backend
            .pool_placements
            .moved(record.id, &record.placement);
        if stale {
            // Checked-out connections finish on their own (the source's
            // lock-out refuses their writes); the pool hands out no more.
            self.inner
                .registry
                .close_within(record.id, Duration::ZERO)
                .await;
        }
    }

    fn view_specs(&self) -> Result<Vec<guard::ViewSpec>, TenancyError> {
        self.inner
            .tables
            .iter()
            .map(|t| Ok((t.table.clone(), t.physical()?, t.tenant_column.clone())))
            .collect()
    }

    /// Checks every cluster's shared file: each declared table's physical
    /// table exists, has the tenant column and a primary key. Run it at
    /// startup, after the shared migrations, so a mistake is reported here
    /// rather than as a connection that cannot be opened.
    pub async fn setup(&self) -> Result<(), TenancyError> {
        let specs = self.view_specs()?;
        for cluster in self.inner.clusters.values() {
            if !cluster.shared_file.is_file() {
                return Err(TenancyError::InvalidInput(format!(
                    "the shared file {} of cluster {} does not exist: create it (run the \
                     shared migrations, or open it once with create_if_missing) before setup",
                    cluster.shared_file.display(),
                    cluster.name
                )));
            }
            let options = SqliteConnectOptions::new()
                .filename(&cluster.shared_file)
                .create_if_missing(false);
            let mut conn = <SqliteConnection as sqlx::Connection>::connect_with(&options).await?;
            // Installing the views on a throw-away connection checks
            // exactly what tenant connections will do.
            let checked =
                guard::install_tenant_views(&mut conn, saas_core::TenantId::new(), &specs).await;
            <SqliteConnection as sqlx::Connection>::close(conn).await?;
            checked?;
        }
        Ok(())
    }

    /// A scoped connection for single statements.
    #[tracing::instrument(name = "tenancy.acquire", level = "debug", skip_all, fields(tenant_id = %ctx.tenant_id(), backend = "sqlite"))]
    pub async fn acquire(&self, ctx: &TenantContext) -> Result<SqliteTenantConn, TenancyError> {
        let timer = observe::Scope::start("acquire", "sqlite");
        let result = self.acquire_scoped(ctx).await;
        timer.done(ctx.tenant_id(), &result);
        result
    }

    async fn acquire_scoped(&self, ctx: &TenantContext) -> Result<SqliteTenantConn, TenancyError> {
        let (record, pass) = self.admit(ctx.tenant_id()).await?;
        let lease = self.lease(&record).await?;
        let conn = lease.pool().acquire().await?;
        Ok(SqliteTenantConn {
            conn,
            record,
            _lease: lease,
            _pass: pass,
        })
    }

    /// A scoped transaction.
    #[tracing::instrument(name = "tenancy.begin", level = "debug", skip_all, fields(tenant_id = %ctx.tenant_id(), backend = "sqlite"))]
    pub async fn begin(&self, ctx: &TenantContext) -> Result<SqliteTenantTx, TenancyError> {
        let timer = observe::Scope::start("begin", "sqlite");
        let result = self.begin_scoped(ctx).await;
        timer.done(ctx.tenant_id(), &result);
        result
    }

    async fn begin_scoped(&self, ctx: &TenantContext) -> Result<SqliteTenantTx, TenancyError> {
        let (record, pass) = self.admit(ctx.tenant_id()).await?;
        let lease = self.lease(&record).await?;
        let tx = lease.pool().begin().await?;
        Ok(SqliteTenantTx {
            tx,
            record,
            _lease: lease,
            _pass: pass,
        })
    }

    /// A scoped transaction that holds the file's write lock from its
    /// start (`BEGIN IMMEDIATE`), for work that reads and then writes.
    ///
    /// A [`SqliteTenancy::begin`] transaction is deferred: it reads from a
    /// snapshot and takes the write lock at its first write. If another
    /// writer committed in between — another request, an outbox relay —
    /// SQLite cannot upgrade the stale snapshot and the write fails at once
    /// with "database is locked", whatever the busy timeout. An immediate
    /// transaction instead waits its turn (up to the busy timeout) before
    /// reading, so a check-then-insert (a plan limit, a next number) is
    /// both safe and free of that error. Writers of one file run one at a
    /// time either way; readers are not blocked (WAL).
    #[tracing::instrument(name = "tenancy.begin_for_write", level = "debug", skip_all, fields(tenant_id = %ctx.tenant_id(), backend = "sqlite"))]
    pub async fn begin_immediate(
        &self,
        ctx: &TenantContext,
    ) -> Result<SqliteTenantTx, TenancyError> {
        let timer = observe::Scope::start("begin_for_write", "sqlite");
        let result = self.begin_immediate_scoped(ctx).await;
        timer.done(ctx.tenant_id(), &result);
        result
    }

    async fn begin_immediate_scoped(
        &self,
        ctx: &TenantContext,
    ) -> Result<SqliteTenantTx, TenancyError> {
        let (record, pass) = self.admit(ctx.tenant_id()).await?;
        let lease = self.lease(&record).await?;
        let tx = lease.pool().begin_with("BEGIN IMMEDIATE").await?;
        Ok(SqliteTenantTx {
            tx,
            record,
            _lease: lease,
            _pass: pass,
        })
    }

    /// **Escape hatch**: an unscoped connection to a cluster's shared file
    /// (every tenant's rows, no views) for cross-tenant admin work. Logged
    /// at `warn` with `reason` so every use is visible and greppable
    /// (`unscoped_admin_connection`).
    pub async fn unscoped_admin_connection(
        &self,
        cluster: &ClusterName,
        reason: &str,
    ) -> Result<SqliteConnection, TenancyError> {
        tracing::warn!(cluster = %cluster, reason, "unscoped_admin_connection");
        let options = SqliteConnectOptions::new()
            .filename(&self.cluster(cluster)?.shared_file)
            .create_if_missing(false);
        Ok(<SqliteConnection as sqlx::Connection>::connect_with(&options).await?)
    }

    /// The pool on a database tenant's own file, lent from the tenant pool
    /// registry: it counts against [`PoolLimits::budget`] like a
    /// request's, the registry does not evict it while the lease lives,
    /// and a deletion of the tenant waits for the lease to be dropped. For
    /// background work that reads the tenant's file as a whole — an outbox
    /// relay pass over the tenant's outbox (see `saas_events::PoolSource`).
    /// Hold the lease only as long as the work, so requests keep their
    /// budget.
    ///
    /// # Errors
    /// [`TenancyError::TenantNotFound`] or a status error for a tenant that
    /// is not servable, [`TenancyError::Unsupported`] for a row tenant
    /// (it has no file of its own), [`TenancyError::Timeout`] when the
    /// budget stays taken.
    pub async fn lease_database_pool(
        &self,
        tenant: TenantId,
    ) -> Result<SqlitePoolLease, TenancyError> {
        let (record, pass) = self.admit(tenant).await?;
        if !matches!(record.placement, Placement::Database { .. }) {
            return Err(TenancyError::Unsupported(format!(
                "tenant {tenant} has no database file of its own; reach the shared file \
                 through unscoped_admin_connection"
            )));
        }
        Ok(self
            .lease(&record)
            .await?
            .holding(pass)
            .at(record.placement.clone()))
    }

    /// Closes tenant pools unused for longer than
    /// [`PoolLimits::idle_pool_timeout`] (call it periodically, e.g. from a
    /// background task); returns how many were closed. Pools are also
    /// evicted least-recently-used whenever the budget is needed.
    pub async fn evict_idle_pools(&self) -> usize {
        self.inner.registry.evict_idle().await
    }

    /// Gauges of the tenant pool registry.
    pub async fn pool_stats(&self) -> PoolStats {
        self.inner.registry.stats().await
    }

    /// The catalog.
    pub fn catalog(&self) -> &DynCatalog {
        &self.inner.catalog
    }

    /// The declared tenant tables.
    pub fn tenant_tables(&self) -> &[TenantTable] {
        &self.inner.tables
    }
}

macro_rules! scoped_handle {
    ($ty:ident, $field:ident) => {
        impl $ty {
            /// The tenant's catalog record.
            pub fn record(&self) -> &TenantRecord {
                &self.record
            }
        }

        impl Deref for $ty {
            type Target = SqliteConnection;
            fn deref(&self) -> &SqliteConnection {
                &self.$field
            }
        }

        impl DerefMut for $ty {
            fn deref_mut(&mut self) -> &mut SqliteConnection {
                &mut self.$field
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("tenant", &self.record.id)
                    .finish_non_exhaustive()
            }
        }
    };
}

scoped_handle!(SqliteTenantConn, conn);
scoped_handle!(SqliteTenantTx, tx);

impl SqliteTenantTx {
    /// Commits.
    pub async fn commit(self) -> Result<(), TenancyError> {
        Ok(self.tx.commit().await?)
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), TenancyError> {
        Ok(self.tx.rollback().await?)
    }
}

impl std::fmt::Debug for SqliteTenancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTenancy")
            .field("clusters", &self.inner.clusters)
            .field("tables", &self.inner.tables)
            .finish_non_exhaustive()
    }
}
