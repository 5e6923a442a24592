//! Building a [`SqliteTenancy`]: clusters, tenant tables, migrations,
//! limits, policies, hooks, clock and deletion grace, validated by `build`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use saas_core::{SharedClock, SystemClock};
use sqlx::migrate::Migrator;

use super::{Inner, SqliteClusterConfig, SqliteTenancy, gate, lock};
use crate::catalog::DynCatalog;
use crate::error::TenancyError;
use crate::hooks::{LifecycleHooks, NoHooks};
use crate::ident::TenantTable;
use crate::placement::PlacementPolicy;
use crate::registry::{PoolLimits, PoolRegistry};

/// Builds a [`SqliteTenancy`].
pub struct SqliteTenancyBuilder {
    catalog: DynCatalog,
    clusters: Vec<SqliteClusterConfig>,
    tables: Vec<TenantTable>,
    tenant_migrator: Option<Arc<Migrator>>,
    shared_migrator: Option<Arc<Migrator>>,
    limits: PoolLimits,
    hooks: Arc<dyn LifecycleHooks>,
    clock: SharedClock,
    policy: PlacementPolicy,
    deletion_grace: Duration,
}

impl SqliteTenancy {
    /// Starts a builder over `catalog`.
    pub fn builder(catalog: DynCatalog) -> SqliteTenancyBuilder {
        SqliteTenancyBuilder {
            catalog,
            clusters: Vec::new(),
            tables: Vec::new(),
            tenant_migrator: None,
            shared_migrator: None,
            limits: PoolLimits::new(20, 2),
            hooks: Arc::new(NoHooks),
            clock: Arc::new(SystemClock),
            policy: PlacementPolicy::default(),
            deletion_grace: crate::catalog::DEFAULT_DELETION_GRACE,
        }
    }
}

impl SqliteTenancyBuilder {
    /// Adds a cluster.
    pub fn cluster(mut self, config: SqliteClusterConfig) -> Self {
        self.clusters.push(config);
        self
    }

    /// Declares a shared table of row tenants (it needs a primary key).
    pub fn tenant_table(mut self, table: TenantTable) -> Self {
        self.tables.push(table);
        self
    }

    /// The shared migration set, applied to each cluster's shared file by
    /// [`SqliteTenancy::migrate_shared`].
    pub fn shared_migrations(mut self, migrator: Migrator) -> Self {
        self.shared_migrator = Some(Arc::new(migrator));
        self
    }

    /// Migrations applied to every tenant database file.
    pub fn tenant_migrations(mut self, migrator: Migrator) -> Self {
        self.tenant_migrator = Some(Arc::new(migrator));
        self
    }

    /// Limits of the per-tenant pools (default: 20 connections in all, 2
    /// per tenant).
    pub fn pool_limits(mut self, limits: PoolLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How [`SqliteTenancy::new_tenant`] chooses a cluster (default
    /// round-robin).
    pub fn placement_policy(mut self, policy: PlacementPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Host code called after each lifecycle step (default: none).
    pub fn hooks(mut self, hooks: Arc<dyn LifecycleHooks>) -> Self {
        self.hooks = hooks;
        self
    }

    /// The clock operations read (the export time of archives).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// How long [`SqliteTenancy::delete_tenant`] waits for scoped handles
    /// still open on the tenant (default 5 s; at most an hour).
    pub fn deletion_grace(mut self, grace: Duration) -> Self {
        self.deletion_grace = grace;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<SqliteTenancy, TenancyError> {
        if self.clusters.is_empty() {
            return Err(TenancyError::InvalidInput(
                "no clusters configured; add one with .cluster(..)".to_owned(),
            ));
        }
        crate::catalog::check_deletion_grace(self.deletion_grace)?;
        let mut clusters = HashMap::new();
        for c in self.clusters {
            if clusters.insert(c.name.clone(), c).is_some() {
                return Err(TenancyError::InvalidInput(
                    "a cluster is configured twice".to_owned(),
                ));
            }
        }
        Ok(SqliteTenancy {
            inner: Arc::new(Inner {
                catalog: self.catalog,
                clusters,
                tables: self.tables,
                tenant_migrator: self.tenant_migrator,
                shared_migrator: self.shared_migrator,
                registry: PoolRegistry::new(self.limits)?,
                hooks: self.hooks,
                locks: lock::TenantLocks::new(),
                gates: gate::Gates::default(),
                deletion_grace: self.deletion_grace,
                clock: self.clock,
                policy: self.policy,
                next_cluster: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }
}

impl std::fmt::Debug for SqliteTenancyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTenancyBuilder")
            .field("clusters", &self.clusters)
            .finish_non_exhaustive()
    }
}
