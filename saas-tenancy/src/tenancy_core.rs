//! The orchestration state both SQL backends share, written once: the
//! catalog, the clusters by name, the declared tenant tables, the
//! migrators, the tenant pool registry, the placement policy, the hooks,
//! the clock and the deletion grace — and the builder settings and
//! validation that produce them. A backend adds its own cluster type `C`
//! (a PostgreSQL cluster's pools, a SQLite cluster's files) and its own
//! state `X` (the record cache, the tenant locks).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use saas_core::{SharedClock, SystemClock, TenantId, TenantSlug};
use sqlx::Database;
use sqlx::migrate::Migrator;

use crate::catalog::DynCatalog;
use crate::error::TenancyError;
use crate::hooks::{LifecycleHooks, NoHooks};
use crate::ident::TenantTable;
use crate::placement::{ClusterName, PlacementPolicy, Strategy};
use crate::record::{NewTenant, TenantRecord};
use crate::registry::{PoolLimits, PoolRegistry};

/// A backend's cluster configuration: it names its cluster.
pub(crate) trait ClusterConfig {
    /// The name placements refer to.
    fn cluster_name(&self) -> &ClusterName;
}

/// A backend's held per-tenant lock (PostgreSQL: an advisory lock on a
/// session of its own; SQLite: a lock file and an in-process stripe).
pub(crate) trait HeldLock: Sized {
    /// Gives the lock up.
    fn release(self) -> impl Future<Output = ()> + Send;
}

/// What a built tenancy holds: the shared state, the backend's clusters
/// (`C`, by name) and the backend's own state (`backend`).
pub(crate) struct Core<C, DB: Database, X> {
    pub(crate) catalog: DynCatalog,
    pub(crate) clusters: HashMap<ClusterName, C>,
    pub(crate) tables: Vec<TenantTable>,
    pub(crate) tenant_migrator: Option<Arc<Migrator>>,
    pub(crate) shared_migrator: Option<Arc<Migrator>>,
    pub(crate) registry: PoolRegistry<DB>,
    pub(crate) policy: PlacementPolicy,
    /// The round-robin turn of [`PlacementPolicy::RoundRobin`].
    pub(crate) next_cluster: AtomicUsize,
    pub(crate) hooks: Arc<dyn LifecycleHooks>,
    pub(crate) clock: SharedClock,
    /// How long a deletion waits for held handles before cutting them.
    pub(crate) deletion_grace: Duration,
    pub(crate) backend: X,
}

impl<C, DB: Database, X> Core<C, DB, X> {
    /// The cluster named `name`.
    pub(crate) fn cluster(&self, name: &ClusterName) -> Result<&C, TenancyError> {
        self.clusters
            .get(name)
            .ok_or_else(|| TenancyError::UnknownCluster(name.to_string()))
    }

    /// The configured clusters' names, sorted.
    pub(crate) fn cluster_names(&self) -> Vec<ClusterName> {
        let mut names: Vec<ClusterName> = self.clusters.keys().cloned().collect();
        names.sort();
        names
    }

    /// The cluster the placement policy picks for the next tenant.
    pub(crate) async fn choose_cluster(&self) -> Result<ClusterName, TenancyError> {
        crate::cluster_choice::choose(
            &self.policy,
            &self.cluster_names(),
            &self.next_cluster,
            &*self.catalog,
        )
        .await
    }

    /// A new tenant placed by `strategy` on the cluster the policy picks.
    pub(crate) async fn new_tenant(
        &self,
        slug: TenantSlug,
        display_name: impl Into<String>,
        strategy: Strategy,
    ) -> Result<NewTenant, TenancyError> {
        let cluster = self.choose_cluster().await?;
        NewTenant::new(slug, display_name, strategy, cluster)
    }

    /// The catalog record of `id`, read now (never from a cache). A
    /// record whose placement is not its own is refused (see
    /// `catalog::check_placement`): no operation acts on it.
    pub(crate) async fn record(&self, id: TenantId) -> Result<TenantRecord, TenancyError> {
        let record = self
            .catalog
            .get(id)
            .await?
            .ok_or_else(|| TenancyError::TenantNotFound(format!("with id {id}")))?;
        crate::catalog::check_placement(&record)?;
        Ok(record)
    }

    /// Takes `id`'s lock with `lock` on the tenant's cluster, then reads
    /// its record again: whatever an operation that held the lock before
    /// did is seen. The first read only finds the cluster (a tenant never
    /// changes cluster while it exists). If the second read fails, the
    /// lock is released before the error is returned.
    pub(crate) async fn lock_tenant<'a, L, F>(
        &'a self,
        id: TenantId,
        lock: impl FnOnce(&'a C) -> F,
    ) -> Result<(L, TenantRecord), TenancyError>
    where
        L: HeldLock,
        F: Future<Output = Result<L, TenancyError>>,
    {
        let listed = self.record(id).await?;
        let held = lock(self.cluster(listed.placement.cluster())?).await?;
        match self.record(id).await {
            Ok(record) => Ok((held, record)),
            Err(e) => {
                held.release().await;
                Err(e)
            }
        }
    }

    /// The declared tenant columns, sorted and without repeats
    /// (`tenant_id` when no table is declared).
    pub(crate) fn tenant_columns(&self) -> Vec<String> {
        let mut columns: Vec<String> = self
            .tables
            .iter()
            .map(|t| t.tenant_column.as_str().to_owned())
            .collect();
        if columns.is_empty() {
            columns.push("tenant_id".to_owned());
        }
        columns.sort();
        columns.dedup();
        columns
    }

    /// The newest version of the tenant migrations, if any are set.
    pub(crate) fn latest_tenant_version(&self) -> Option<i64> {
        self.tenant_migrator
            .as_ref()
            .and_then(|m| m.iter().map(|m| m.version).max())
    }
}

/// The settings both backends' builders share, and their validation.
pub(crate) struct BuilderCore<C> {
    pub(crate) catalog: DynCatalog,
    pub(crate) clusters: Vec<C>,
    pub(crate) tables: Vec<TenantTable>,
    pub(crate) tenant_migrator: Option<Arc<Migrator>>,
    pub(crate) shared_migrator: Option<Arc<Migrator>>,
    pub(crate) limits: PoolLimits,
    pub(crate) policy: PlacementPolicy,
    pub(crate) hooks: Arc<dyn LifecycleHooks>,
    pub(crate) clock: SharedClock,
    pub(crate) deletion_grace: Duration,
    /// The first invalid setting given by a builder method that cannot
    /// return an error itself; `build` reports it.
    pub(crate) invalid: Option<TenancyError>,
}

impl<C: ClusterConfig> BuilderCore<C> {
    /// Declares the tables named `names` (each as [`TenantTable::new`]); an
    /// invalid name is kept for `build` to report.
    pub(crate) fn add_tables<S: AsRef<str>>(&mut self, names: impl IntoIterator<Item = S>) {
        for name in names {
            match TenantTable::new(name.as_ref()) {
                Ok(table) => self.tables.push(table),
                Err(e) => {
                    self.invalid.get_or_insert(e);
                }
            }
        }
    }

    /// The defaults over `catalog`, with the backend's default `limits`:
    /// no clusters, tables or migrations, round-robin placement, no hooks,
    /// the system clock and the default deletion grace.
    pub(crate) fn new(catalog: DynCatalog, limits: PoolLimits) -> Self {
        Self {
            catalog,
            clusters: Vec::new(),
            tables: Vec::new(),
            tenant_migrator: None,
            shared_migrator: None,
            limits,
            policy: PlacementPolicy::default(),
            hooks: Arc::new(NoHooks),
            clock: Arc::new(SystemClock),
            deletion_grace: crate::catalog::DEFAULT_DELETION_GRACE,
            invalid: None,
        }
    }

    /// Validates the shared settings (at least one cluster, each named
    /// once; the deletion grace; the pool limits) and builds the core,
    /// opening each cluster with `open` and adding the backend's state.
    pub(crate) fn build<T, DB: Database, X>(
        self,
        mut open: impl FnMut(C) -> T,
        backend: X,
    ) -> Result<Core<T, DB, X>, TenancyError> {
        if let Some(invalid) = self.invalid {
            return Err(invalid);
        }
        if self.clusters.is_empty() {
            return Err(TenancyError::InvalidInput(
                "no clusters configured; add one with .cluster(..)".to_owned(),
            ));
        }
        crate::catalog::check_deletion_grace(self.deletion_grace)?;
        let mut clusters = HashMap::new();
        for config in self.clusters {
            let name = config.cluster_name().clone();
            if clusters.contains_key(&name) {
                return Err(TenancyError::InvalidInput(format!(
                    "cluster {name} is configured twice"
                )));
            }
            clusters.insert(name, open(config));
        }
        Ok(Core {
            catalog: self.catalog,
            clusters,
            tables: self.tables,
            tenant_migrator: self.tenant_migrator,
            shared_migrator: self.shared_migrator,
            registry: PoolRegistry::new(self.limits)?,
            policy: self.policy,
            next_cluster: AtomicUsize::new(0),
            hooks: self.hooks,
            clock: self.clock,
            deletion_grace: self.deletion_grace,
            backend,
        })
    }
}
