//! Building a [`PgTenancy`]: clusters, tenant tables, migrations, scope
//! mode, limits, policies, hooks and clock, validated by `build`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use saas_core::SharedClock;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use super::affinity::Affinity;
use super::cache::RecordCache;
use super::session;
use super::{Cluster, PgClusterConfig, PgState, PgTenancy, ScopeMode};
use crate::catalog::DynCatalog;
use crate::error::TenancyError;
use crate::hooks::LifecycleHooks;
use crate::ident::TenantTable;
use crate::placement::{ClusterName, PlacementPolicy};
use crate::registry::PoolLimits;
use crate::tenancy_core::{BuilderCore, ClusterConfig};

/// Builds a [`PgTenancy`]. Its `Debug` output shows the clusters without
/// their admin passwords.
pub struct PgTenancyBuilder {
    /// The settings every backend's builder has (see `tenancy_core.rs`).
    core: BuilderCore<PgClusterConfig>,
    mode: ScopeMode,
    record_ttl: Duration,
    /// `None`: the default window (off in transaction-pooling mode).
    affinity: Option<Duration>,
    transaction_pooling: bool,
    move_wait: Duration,
    follow_moves: bool,
}

impl ClusterConfig for PgClusterConfig {
    fn cluster_name(&self) -> &ClusterName {
        &self.name
    }
}

impl PgTenancy {
    /// Starts a builder over `catalog`.
    pub fn builder(catalog: DynCatalog) -> PgTenancyBuilder {
        PgTenancyBuilder {
            core: BuilderCore::new(catalog, PoolLimits::default()),
            mode: ScopeMode::default(),
            record_ttl: Duration::from_secs(1),
            affinity: None,
            transaction_pooling: false,
            move_wait: Duration::from_secs(10),
            follow_moves: true,
        }
    }
}

impl std::fmt::Debug for PgTenancyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTenancyBuilder")
            .field("clusters", &self.core.clusters)
            .field("tables", &self.core.tables)
            .finish_non_exhaustive()
    }
}

impl PgTenancyBuilder {
    /// Adds a cluster.
    pub fn cluster(mut self, config: PgClusterConfig) -> Self {
        self.core.clusters.push(config);
        self
    }

    /// Declares a shared table of row-strategy tenants.
    pub fn tenant_table(mut self, table: TenantTable) -> Self {
        self.core.tables.push(table);
        self
    }

    /// Declares shared tables of row tenants by name, as
    /// [`tenant_table`](Self::tenant_table) with `TenantTable::new(name)`
    /// for each; an invalid name makes [`build`](Self::build) fail.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use saas_tenancy::{DynCatalog, InMemoryCatalog};
    /// # let catalog: DynCatalog = Arc::new(InMemoryCatalog::default());
    /// let builder = saas_tenancy::postgres::PgTenancy::builder(catalog)
    ///     .tenant_tables(["projects", "notes"]);
    /// # let _ = builder;
    /// ```
    pub fn tenant_tables<S: AsRef<str>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.core.add_tables(names);
        self
    }

    /// The shared migration set: tables every row tenant shares, and the
    /// host's other non-tenant tables, applied to each cluster's shared
    /// database by [`PgTenancy::migrate_shared`] (the migrator's own
    /// database-wide lock stays on). Typically
    /// `sqlx::migrate!("migrations/shared")` or
    /// `Migrator::new(Path::new("migrations/shared"))`.
    pub fn shared_migrations(mut self, migrator: Migrator) -> Self {
        self.core.shared_migrator = Some(Arc::new(migrator));
        self
    }

    /// The migrations applied to every schema and database tenant, inside
    /// the provisioning transaction (each tenant has its own
    /// `_sqlx_migrations` ledger). The migrator's own database-wide lock is
    /// turned off: provisioning and fleet migrations hold the tenant's own
    /// lock instead, so tenants of one database do not wait for each other.
    pub fn tenant_migrations(mut self, mut migrator: Migrator) -> Self {
        migrator.set_locking(false);
        self.core.tenant_migrator = Some(Arc::new(migrator));
        self
    }

    /// How scopes are attached to connections (default
    /// [`ScopeMode::Shared`]).
    pub fn scope_mode(mut self, mode: ScopeMode) -> Self {
        self.mode = mode;
        self
    }

    /// Limits for per-tenant pools (database tenants, and with
    /// [`ScopeMode::TenantPools`] the row and schema tenants that fit the
    /// budget or are busy enough to replace an idle pool; the others are
    /// served on the shared runtime pool).
    pub fn pool_limits(mut self, limits: PoolLimits) -> Self {
        self.core.limits = limits;
        self
    }

    /// How long a tenant's catalog record (placement and status) is reused
    /// before it is read again (default 1 s; zero reads it on every
    /// `begin`/`acquire`). A suspension or deletion made through another
    /// process takes effect here within this time; through
    /// [`PgTenancy::set_status`] or [`PgTenancy::delete_tenant`], at once.
    /// It bounds how long after a deletion started another process may
    /// still open handles for the tenant (see `delete_tenant`).
    pub fn record_ttl(mut self, ttl: Duration) -> Self {
        self.record_ttl = ttl;
        self
    }

    /// How [`PgTenancy::new_tenant`] chooses a cluster (default
    /// round-robin).
    pub fn placement_policy(mut self, policy: PlacementPolicy) -> Self {
        self.core.policy = policy;
        self
    }

    /// Host code run after each lifecycle step (default: none).
    pub fn hooks(mut self, hooks: Arc<dyn LifecycleHooks>) -> Self {
        self.core.hooks = hooks;
        self
    }

    /// How long [`PgTenancy::delete_tenant`] waits for scoped handles
    /// still open on the tenant to end before it cuts them (default 5 s;
    /// at most an hour; zero cuts them at once). See `delete_tenant`.
    pub fn deletion_grace(mut self, grace: Duration) -> Self {
        self.core.deletion_grace = grace;
        self
    }

    /// How long a shared runtime connection may stay with one tenant
    /// between full resets (default 1 s, at most 10 s, zero turns it off):
    /// in [`ScopeMode::Shared`], and in [`ScopeMode::TenantPools`] for the
    /// tenants served on the shared pool past the budget.
    ///
    /// A connection a tenant's handle has finished with (a committed
    /// [`PgTenantTx`](super::PgTenantTx), or a dropped
    /// [`PgTenantConn`](super::PgTenantConn)) is kept for that tenant instead
    /// of going back to the pool, and its next handle takes it again: no
    /// full reset, no release ping, and a schema tenant keeps its statement
    /// cache. The handle only sets its scope (role, schema, tenant, handle
    /// lock) in the round trip it needs anyway, and otherwise meets the
    /// session as the tenant's last handle left it (settings, temporary
    /// objects…), as on a tenant pool or any plain sqlx pool. Another
    /// tenant never gets the connection without the full reset. At most half the pool is kept, and only while the pool can
    /// still serve others at once; see the `affinity` notes in
    /// [`ScopeMode::Shared`].
    ///
    /// ```
    /// # fn run(catalog: saas_tenancy::DynCatalog) -> Result<(), saas_tenancy::TenancyError> {
    /// use std::time::Duration;
    /// // Every handle starts from a fully reset connection.
    /// let builder = saas_tenancy::postgres::PgTenancy::builder(catalog)
    ///     .connection_affinity(Duration::ZERO);
    /// # let _ = builder; Ok(())
    /// # }
    /// ```
    pub fn connection_affinity(mut self, window: Duration) -> Self {
        self.affinity = Some(window);
        self
    }

    /// Runs row and schema tenants behind a transaction pooler —
    /// PgBouncer with `pool_mode = transaction`, as most PostgreSQL SaaS
    /// deploy it — where each transaction may run on another server
    /// connection and each server connection serves every client in turn.
    /// Every scope is then transaction-local, set in the `BEGIN` round
    /// trip together with an in-band reset of what earlier clients left on
    /// the server connection; runtime connections keep no prepared
    /// statements; [`PgTenancy::acquire`] (a session scope) is refused and
    /// connection affinity is off. Point each cluster's runtime pool at the
    /// pooler with [`PgClusterConfig::with_transaction_pooler`]; setup,
    /// provisioning and migrations keep the direct admin connection.
    ///
    /// [`build`](Self::build) refuses a cluster with a pooler without
    /// this mode (session scopes would leak through it), this mode with
    /// [`ScopeMode::TenantPools`] (its scopes live in startup options,
    /// which PgBouncer does not pass on) or with a non-zero
    /// [`connection_affinity`](Self::connection_affinity). Plain use of
    /// [`PgTenancy::runtime_pool`] must stay inside transactions.
    ///
    /// The PgBouncer settings it is tested with (`pgbouncer.ini`):
    ///
    /// ```ini
    /// pool_mode = transaction
    /// ; every server connection starts each transaction clean, for every client
    /// server_reset_query = DISCARD ALL
    /// server_reset_query_always = 1
    /// ; sqlx sends it at startup; PgBouncer 1.18 refuses unknown parameters
    /// ignore_startup_parameters = extra_float_digits
    /// ```
    ///
    /// ```
    /// # fn run(catalog: saas_tenancy::DynCatalog) -> Result<(), Box<dyn std::error::Error>> {
    /// use saas_tenancy::ClusterName;
    /// use saas_tenancy::postgres::{PgClusterConfig, PgTenancy, SqlIdent};
    ///
    /// let cluster = PgClusterConfig::new(
    ///     ClusterName::new("main")?,
    ///     "postgres://admin@db.internal:5432/app".parse()?,
    ///     SqlIdent::new("app_runtime")?,
    /// )
    /// .with_transaction_pooler("postgres://app_runtime@pgbouncer.internal:6432/app".parse()?);
    /// let tenancy = PgTenancy::builder(catalog)
    ///     .cluster(cluster)
    ///     .transaction_pooling(true)
    ///     .build()?;
    /// assert!(tenancy.transaction_pooling());
    /// # Ok(())
    /// # }
    /// ```
    pub fn transaction_pooling(mut self, on: bool) -> Self {
        self.transaction_pooling = on;
        self
    }

    /// How long a new scoped handle of a tenant that a move has fenced
    /// waits for the move to cut over (then it runs on the new placement)
    /// or to be aborted, before it fails with
    /// [`TenancyError::TenantMoving`] (default 10 s; at most an hour).
    /// See [`PgTenancy::move_tenant`].
    pub fn move_wait(mut self, wait: Duration) -> Self {
        self.move_wait = wait;
        self
    }

    /// Whether this tenancy listens for other processes' moves (default
    /// on, when the catalog is a [`PgCatalog`](crate::PgCatalog)): one
    /// connection to the catalog's server, `LISTEN`ing on
    /// [`MOVE_CHANNEL`](super::MOVE_CHANNEL), drops a tenant's cached
    /// record at a move's fence and cut-over, so this process follows the
    /// move at once rather than after [`record_ttl`](Self::record_ttl).
    /// Turned off, a cached record can name the old placement for up to
    /// the TTL — and is refused there (a move locks its source out). The
    /// catalog's pool must reach PostgreSQL directly: a transaction
    /// pooler does not deliver notifications (moves stay safe, through
    /// the lock-out, but are followed only after the TTL).
    pub fn follow_moves(mut self, on: bool) -> Self {
        self.follow_moves = on;
        self
    }

    /// The clock the record cache and export timestamps read.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.core.clock = clock;
        self
    }

    /// Connects the pools (lazily) and validates the configuration.
    pub fn build(self) -> Result<PgTenancy, TenancyError> {
        let record_ttl = chrono::Duration::from_std(self.record_ttl).map_err(|_| {
            TenancyError::InvalidInput(format!(
                "record TTL {:?} is too long; use seconds to minutes",
                self.record_ttl
            ))
        })?;
        crate::catalog::check_deletion_grace(self.core.deletion_grace)?;
        if self.move_wait > Duration::from_secs(3600) {
            return Err(TenancyError::InvalidInput(format!(
                "move wait {:?} is longer than the hour allowed",
                self.move_wait
            )));
        }
        let pooled = self.transaction_pooling;
        let affinity = match self.affinity {
            Some(window) if pooled && !window.is_zero() => {
                return Err(TenancyError::InvalidInput(format!(
                    "connection affinity ({window:?}) keeps a session for its tenant, which \
                     a transaction pooler cannot: leave it unset with transaction_pooling"
                )));
            }
            Some(window) => window,
            None if pooled => Duration::ZERO,
            None => super::affinity::DEFAULT_AFFINITY,
        };
        super::affinity::check_window(affinity)?;
        if pooled && self.mode == ScopeMode::TenantPools {
            return Err(TenancyError::InvalidInput(
                "ScopeMode::TenantPools scopes connections in their startup options, which a \
                 transaction pooler does not pass on: use ScopeMode::Shared with \
                 transaction_pooling"
                    .to_owned(),
            ));
        }
        for cluster in &self.core.clusters {
            super::pooling::check_cluster(cluster, pooled)?;
        }
        // Scoped handles use the shared runtime pool in both modes (in
        // TenantPools mode, the tenants past the budget): connections are
        // kept for their tenant's next handle in both.
        let open = |config: PgClusterConfig| {
            let admin = PgPoolOptions::new()
                .max_connections(4)
                .connect_lazy_with(config.admin.clone());
            let options = match pooled {
                true => super::pooling::runtime_options(&config),
                false => super::runtime_options(&config),
            };
            let runtime = session::runtime_pool_options(config.max_connections, pooled)
                .connect_lazy_with(options);
            // Affinity keeps sessions, which a transaction pooler has not.
            let affinity =
                (!pooled).then(|| Affinity::new(runtime.clone(), config.max_connections, affinity));
            Cluster {
                locks: super::tenant_lock::lock_pool(&config.admin),
                config,
                search_path: tokio::sync::OnceCell::new(),
                admin,
                runtime,
                affinity,
                spares: Default::default(),
            }
        };
        let state = PgState {
            mode: self.mode,
            transaction_pooling: pooled,
            records: Arc::new(RecordCache::new(record_ttl, Arc::clone(&self.core.clock))),
            fences: Arc::new(AtomicU64::new(0)),
            follower: super::moving::Follower::new(self.follow_moves),
            move_wait: self.move_wait,
            pool_placements: Default::default(),
        };
        Ok(PgTenancy {
            inner: Arc::new(self.core.build(open, state)?),
        })
    }
}
