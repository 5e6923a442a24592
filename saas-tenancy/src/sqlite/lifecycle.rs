//! Provisioning, suspension and resumption of SQLite tenants, each
//! serialised per tenant and reported to the [`LifecycleHooks`].
//!
//! [`LifecycleHooks`]: crate::LifecycleHooks

use saas_core::{TenantId, TenantStatus};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{Connection, SqliteConnection};

use super::SqliteTenancy;
use super::lock::TenantGuard;
use crate::error::TenancyError;
use crate::hooks::LifecycleEvent;
use crate::placement::Placement;
use crate::record::{NewTenant, TenantRecord};

impl SqliteTenancy {
    /// Takes the tenant's lock (see `lock.rs`), then reads its record
    /// again: what another operation did meanwhile is seen (see
    /// `Core::lock_tenant`).
    pub(super) async fn lock_tenant(
        &self,
        id: TenantId,
    ) -> Result<(TenantGuard<'_>, TenantRecord), TenancyError> {
        let locks = &self.inner.backend.locks;
        let locked = self
            .inner
            .lock_tenant(id, |cluster| locks.lock(id, &cluster.tenant_dir))
            .await;
        match locked {
            // Moved to a placement this tenancy does not serve (another
            // backend): say where, rather than naming a missing cluster.
            Err(TenancyError::UnknownCluster(_)) => match self.inner.record(id).await {
                Ok(record) => Err(TenancyError::PlacementNotServedHere {
                    tenant: id,
                    placement: record.placement,
                }),
                Err(e) => Err(e),
            },
            other => other,
        }
    }

    /// Adds a tenant to the catalog, creates its database file (database
    /// placements) and applies the tenant migrations, marks it active and
    /// calls the hooks with [`LifecycleEvent::Provisioned`] (seed data
    /// there). Schema placements do not exist on SQLite.
    ///
    /// If the process dies midway, the tenant stays `provisioning`; finish
    /// it with [`SqliteTenancy::retry_provisioning`] (every step is
    /// idempotent).
    #[tracing::instrument(name = "tenancy.provision", skip_all, fields(tenant_id = %tenant.id(), backend = "sqlite"))]
    pub async fn provision(&self, tenant: NewTenant) -> Result<TenantRecord, TenancyError> {
        if let Placement::Schema { .. } = tenant.placement() {
            return Err(TenancyError::Unsupported(
                "SQLite has no schemas; place the tenant Shared or Database".to_owned(),
            ));
        }
        self.cluster(tenant.placement().cluster())?;
        let record = self.inner.catalog.create(tenant).await?;
        self.activate(record.id).await
    }

    /// Finishes provisioning a tenant left `provisioning` by a crash or an
    /// error; an already active tenant is returned as is.
    pub async fn retry_provisioning(&self, id: TenantId) -> Result<TenantRecord, TenancyError> {
        self.activate(id).await
    }

    async fn activate(&self, id: TenantId) -> Result<TenantRecord, TenancyError> {
        let (_guard, record) = self.lock_tenant(id).await?;
        match record.status {
            TenantStatus::Provisioning => {}
            TenantStatus::Active => return Ok(record),
            from => {
                return Err(TenancyError::InvalidTransition {
                    tenant: id,
                    from,
                    to: TenantStatus::Active,
                });
            }
        }
        if let Some(file) = self.tenant_file(&record)? {
            let options = SqliteConnectOptions::new()
                .filename(&file)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal);
            let mut conn = SqliteConnection::connect_with(&options).await?;
            if let Some(migrator) = &self.inner.tenant_migrator {
                let migrated = migrator.run_direct(None, &mut conn, false).await;
                conn.close().await?;
                migrated.map_err(|e| {
                    TenancyError::InvalidInput(format!("tenant migration failed: {e}"))
                })?;
            } else {
                conn.close().await?;
            }
        }
        let record = self
            .inner
            .catalog
            .set_status(id, TenantStatus::Active)
            .await?;
        self.inner
            .hooks
            .on_event(&LifecycleEvent::Provisioned(record.clone()))
            .await?;
        Ok(record)
    }

    /// Suspends a tenant: scoped access is refused from now on (handles
    /// already open finish their work), its data is kept. See
    /// [`SqliteTenancy::set_status`].
    pub async fn suspend(&self, id: TenantId) -> Result<TenantRecord, TenancyError> {
        self.set_status(id, TenantStatus::Suspended).await
    }

    /// Resumes a suspended tenant. See [`SqliteTenancy::set_status`].
    pub async fn resume(&self, id: TenantId) -> Result<TenantRecord, TenancyError> {
        self.set_status(id, TenantStatus::Active).await
    }

    /// Moves an active tenant to `suspended` or back, then calls the hooks
    /// with [`LifecycleEvent::StatusChanged`].
    ///
    /// - Suspending refuses *new* handles (`acquire`, `begin`,
    ///   `begin_immediate` return [`TenancyError::TenantNotServable`]); a
    ///   handle already held keeps working until it is committed, rolled
    ///   back or dropped. The data is kept and served again after resuming.
    /// - Serialised per tenant, across tasks and processes sharing the
    ///   files: the change and its hooks run before the next operation on
    ///   the tenant starts, so hooks see changes in the order they happened.
    /// - Idempotent and safe to retry after a crash: when the tenant is
    ///   already in `to`, the hooks are called again (with `from` the other
    ///   status), since a crash may have come between the change and the
    ///   hooks — hooks are called at least once, so make them idempotent.
    /// - Other statuses are reached through [`SqliteTenancy::provision`]
    ///   and [`SqliteTenancy::delete_tenant`]; asking for them here is
    ///   [`TenancyError::InvalidInput`].
    pub async fn set_status(
        &self,
        id: TenantId,
        to: TenantStatus,
    ) -> Result<TenantRecord, TenancyError> {
        let other = crate::catalog::suspend_or_resume_from(to)?;
        let (_guard, before) = self.lock_tenant(id).await?;
        let record = crate::catalog::suspend_or_resume(&*self.inner.catalog, &before, to).await?;
        self.inner
            .hooks
            .on_event(&LifecycleEvent::StatusChanged {
                record: record.clone(),
                from: other,
            })
            .await?;
        Ok(record)
    }
}
