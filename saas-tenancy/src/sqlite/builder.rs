//! Building a [`SqliteTenancy`]: clusters, tenant tables, migrations,
//! limits, policies, hooks, clock and deletion grace, validated by `build`.

use std::sync::Arc;
use std::time::Duration;

use saas_core::SharedClock;
use sqlx::migrate::Migrator;

use super::{SqliteClusterConfig, SqliteState, SqliteTenancy, gate, lock};
use crate::catalog::DynCatalog;
use crate::error::TenancyError;
use crate::hooks::LifecycleHooks;
use crate::ident::TenantTable;
use crate::placement::{ClusterName, PlacementPolicy};
use crate::registry::PoolLimits;
use crate::tenancy_core::{BuilderCore, ClusterConfig};

/// Builds a [`SqliteTenancy`].
pub struct SqliteTenancyBuilder {
    /// The settings every backend's builder has (see `tenancy_core.rs`).
    core: BuilderCore<SqliteClusterConfig>,
    move_wait: Duration,
}

impl ClusterConfig for SqliteClusterConfig {
    fn cluster_name(&self) -> &ClusterName {
        &self.name
    }
}

impl SqliteTenancy {
    /// Starts a builder over `catalog`.
    pub fn builder(catalog: DynCatalog) -> SqliteTenancyBuilder {
        SqliteTenancyBuilder {
            core: BuilderCore::new(catalog, PoolLimits::new(20, 2)),
            move_wait: super::moving::DEFAULT_MOVE_WAIT,
        }
    }
}

impl SqliteTenancyBuilder {
    /// Adds a cluster.
    pub fn cluster(mut self, config: SqliteClusterConfig) -> Self {
        self.core.clusters.push(config);
        self
    }

    /// Declares a shared table of row tenants (it needs a primary key).
    pub fn tenant_table(mut self, table: TenantTable) -> Self {
        self.core.tables.push(table);
        self
    }

    /// Declares shared tables of row tenants by name (each needs a primary key), as
    /// [`tenant_table`](Self::tenant_table) with `TenantTable::new(name)`
    /// for each; an invalid name makes [`build`](Self::build) fail.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use saas_tenancy::{DynCatalog, InMemoryCatalog};
    /// # let catalog: DynCatalog = Arc::new(InMemoryCatalog::default());
    /// let builder = saas_tenancy::sqlite::SqliteTenancy::builder(catalog)
    ///     .tenant_tables(["projects", "notes"]);
    /// # let _ = builder;
    /// ```
    pub fn tenant_tables<S: AsRef<str>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.core.add_tables(names);
        self
    }

    /// The shared migration set, applied to each cluster's shared file by
    /// [`SqliteTenancy::migrate_shared`].
    pub fn shared_migrations(mut self, migrator: Migrator) -> Self {
        self.core.shared_migrator = Some(Arc::new(migrator));
        self
    }

    /// Migrations applied to every tenant database file.
    pub fn tenant_migrations(mut self, migrator: Migrator) -> Self {
        self.core.tenant_migrator = Some(Arc::new(migrator));
        self
    }

    /// Limits of the per-tenant pools (default: 20 connections in all, 2
    /// per tenant).
    pub fn pool_limits(mut self, limits: PoolLimits) -> Self {
        self.core.limits = limits;
        self
    }

    /// How [`SqliteTenancy::new_tenant`] chooses a cluster (default
    /// round-robin).
    pub fn placement_policy(mut self, policy: PlacementPolicy) -> Self {
        self.core.policy = policy;
        self
    }

    /// Host code called after each lifecycle step (default: none).
    pub fn hooks(mut self, hooks: Arc<dyn LifecycleHooks>) -> Self {
        self.core.hooks = hooks;
        self
    }

    /// The clock operations read (the export time of archives).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.core.clock = clock;
        self
    }

    /// How long [`SqliteTenancy::delete_tenant`] waits for scoped handles
    /// still open on the tenant (default 5 s; at most an hour).
    pub fn deletion_grace(mut self, grace: Duration) -> Self {
        self.core.deletion_grace = grace;
        self
    }

    /// How long a new scoped handle of a tenant that is being moved waits
    /// for the move's cut-over before it is refused with
    /// [`TenancyError::TenantMoving`] (default 5 s, at most an hour). A
    /// handle that waited runs on the tenant's new placement. See
    /// [`SqliteTenancy::move_tenant`].
    pub fn move_wait(mut self, wait: Duration) -> Self {
        self.move_wait = wait;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<SqliteTenancy, TenancyError> {
        if self.move_wait > Duration::from_secs(3600) {
            return Err(TenancyError::InvalidInput(format!(
                "move_wait {:?} is longer than the hour allowed",
                self.move_wait
            )));
        }
        let state = SqliteState {
            locks: lock::TenantLocks::new(),
            gates: gate::Gates::default(),
            move_wait: self.move_wait,
            pool_placements: Default::default(),
        };
        Ok(SqliteTenancy {
            inner: Arc::new(self.core.build(|config| config, state)?),
        })
    }
}

impl std::fmt::Debug for SqliteTenancyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTenancyBuilder")
            .field("clusters", &self.core.clusters)
            .finish_non_exhaustive()
    }
}
