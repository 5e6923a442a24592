//! Options and reports of fleet migrations, shared by the backends.

use std::sync::Arc;

use saas_core::TenantId;

/// A progress callback (e.g. to drive a CLI progress bar).
pub type ProgressFn = Arc<dyn Fn(&MigrationProgress) + Send + Sync>;

/// How a fleet migration runs.
#[derive(Clone)]
#[non_exhaustive]
pub struct MigrationOptions {
    /// Tenants migrated at once (default 4; keep it within the admin
    /// connections you can spare — SQLite caps it at the pool budget).
    pub concurrency: usize,
    /// Tenants migrated first, one by one; if one fails, nothing else runs
    /// (default 1).
    pub canaries: usize,
    /// Stop at the first failure instead of skipping and reporting.
    pub stop_on_first_failure: bool,
    /// Called after each tenant.
    pub progress: Option<ProgressFn>,
}

impl Default for MigrationOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            canaries: 1,
            stop_on_first_failure: false,
            progress: None,
        }
    }
}

impl std::fmt::Debug for MigrationOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrationOptions")
            .field("concurrency", &self.concurrency)
            .field("canaries", &self.canaries)
            .field("stop_on_first_failure", &self.stop_on_first_failure)
            .finish_non_exhaustive()
    }
}

impl MigrationOptions {
    /// Sets the concurrency (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the number of canary tenants.
    pub fn with_canaries(mut self, n: usize) -> Self {
        self.canaries = n;
        self
    }

    /// Stops at the first failure.
    pub fn stop_on_first_failure(mut self) -> Self {
        self.stop_on_first_failure = true;
        self
    }

    /// Reports progress to `f`.
    pub fn with_progress(mut self, f: ProgressFn) -> Self {
        self.progress = Some(f);
        self
    }
}

/// One tenant done.
#[derive(Debug, Clone)]
pub struct MigrationProgress {
    /// Tenants finished so far.
    pub done: usize,
    /// Tenants to migrate.
    pub total: usize,
    /// This tenant.
    pub tenant: TenantId,
    /// Its result: the version reached, or the error.
    pub outcome: Result<i64, String>,
}

/// What a fleet migration did.
#[derive(Debug, Clone, Default)]
pub struct MigrationReport {
    /// Schema and database tenants considered.
    pub total: usize,
    /// Tenants that had migrations applied.
    pub migrated: Vec<TenantId>,
    /// Tenants that were already at the latest version.
    pub up_to_date: Vec<TenantId>,
    /// Tenants whose migration failed (left unchanged), with the error.
    pub failed: Vec<(TenantId, String)>,
    /// Tenants not attempted (a canary failed, or stop-on-first-failure;
    /// on SQLite also a tenant deleted after the run listed it).
    pub not_attempted: Vec<TenantId>,
}
