//! The shared migration set: the tables every row tenant shares (and
//! anything else of the host's that is not per tenant), applied to the
//! shared database of every cluster.

use super::PgTenancy;
use crate::error::TenancyError;

impl PgTenancy {
    /// Brings the shared side of every cluster up to date: applies the
    /// shared migrations (see
    /// [`PgTenancyBuilder::shared_migrations`](super::PgTenancyBuilder::shared_migrations))
    /// to each cluster's shared database, then runs [`PgTenancy::setup`]
    /// (runtime role, RLS on the declared tenant tables).
    ///
    /// Each migration runs in its own transaction under sqlx's
    /// database-wide migration lock, so processes starting together apply
    /// it once; the `_sqlx_migrations` table of each shared database says
    /// what it has, so running again applies only what is new. A failing
    /// migration stops at that cluster with the error: the clusters before
    /// it are migrated, the failing migration is rolled back (PostgreSQL
    /// DDL is transactional), and the clusters after it are untouched —
    /// fix the migration and run again. Without shared migrations this is
    /// [`PgTenancy::setup`].
    ///
    /// ```no_run
    /// # async fn run(tenancy: saas_tenancy::postgres::PgTenancy)
    /// # -> Result<(), saas_tenancy::TenancyError> {
    /// // At startup, before serving: shared tables, then RLS on them.
    /// tenancy.migrate_shared().await?;
    /// // Then every schema and database tenant (see migrate_tenants).
    /// # Ok(())
    /// # }
    /// ```
    pub async fn migrate_shared(&self) -> Result<(), TenancyError> {
        if let Some(migrator) = &self.inner.shared_migrator {
            let mut names: Vec<_> = self.inner.clusters.keys().collect();
            names.sort();
            for name in names {
                let cluster = self.cluster(name)?;
                let mut conn = cluster.admin.acquire().await?;
                migrator
                    .run_direct(None, &mut *conn, false)
                    .await
                    .map_err(|e| {
                        TenancyError::InvalidInput(format!(
                            "shared migration failed on cluster {name}: {e}; fix the migration \
                             and run migrate_shared again (clusters before {name} are migrated)"
                        ))
                    })?;
            }
        }
        self.setup().await
    }
}
