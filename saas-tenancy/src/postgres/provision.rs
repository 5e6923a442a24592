//! Provisioning schema and database tenants, under the tenant's lock.

use saas_core::TenantStatus;
use sqlx::{AssertSqlSafe, Connection, Executor};

use super::{Cluster, PgTenancy, spares, sql, tenant_database_options};
use crate::error::TenancyError;
use crate::hooks::LifecycleEvent;
use crate::ident::SqlIdent;
use crate::placement::{Placement, SqlName, TenantObjectName};
use crate::record::{NewTenant, TenantRecord};

impl PgTenancy {
    /// Adds a tenant to the catalog, creates its schema or database and
    /// applies the tenant migrations, then marks it active and calls the
    /// hooks with [`LifecycleEvent::Provisioned`] (after releasing the
    /// tenant's lock).
    ///
    /// A second provision of the same slug is
    /// [`TenancyError::AlreadyExists`], and a cluster this tenancy does not
    /// know [`TenancyError::UnknownCluster`], before anything is created. The
    /// storage is created under the tenant's lock, serialised with every
    /// other operation on the tenant (see [`PgTenancy::retry_provisioning`]).
    /// If the process dies midway, the tenant stays `provisioning`; finish
    /// it with [`PgTenancy::retry_provisioning`] (every step is
    /// idempotent).
    #[tracing::instrument(name = "tenancy.provision", skip_all, fields(tenant_id = %tenant.id(), backend = "postgres"))]
    pub async fn provision(&self, tenant: NewTenant) -> Result<TenantRecord, TenancyError> {
        // An unknown cluster is refused before the catalog takes the slug.
        self.cluster(tenant.placement.cluster())?;
        let record = self.inner.catalog.create(tenant).await?;
        self.activate(record.id).await
    }

    /// Finishes provisioning a tenant left `provisioning` by a crash or an
    /// error; an already active tenant is returned as is (no hook).
    ///
    /// Serialised per tenant with every other operation on it (the
    /// tenant's lock): the status is read under the lock, so of two
    /// concurrent retries one provisions and the other finds the tenant
    /// active, and a tenant deleted meanwhile is
    /// [`TenancyError::InvalidTransition`] from its current status.
    pub async fn retry_provisioning(
        &self,
        id: saas_core::TenantId,
    ) -> Result<TenantRecord, TenancyError> {
        self.activate(id).await
    }

    async fn activate(&self, id: saas_core::TenantId) -> Result<TenantRecord, TenancyError> {
        let (lock, record) = self.lock_tenant(id).await?;
        let result = self.activate_locked(record).await;
        lock.release().await;
        let (record, activated) = result?;
        if activated {
            self.inner
                .hooks
                .on_event(&LifecycleEvent::Provisioned(record.clone()))
                .await?;
        }
        Ok(record)
    }

    /// Provisions a tenant under its lock; returns its record and whether
    /// this call activated it.
    async fn activate_locked(
        &self,
        record: TenantRecord,
    ) -> Result<(TenantRecord, bool), TenancyError> {
        match record.status {
            TenantStatus::Provisioning => {}
            TenantStatus::Active => return Ok((record, false)),
            from => {
                return Err(TenancyError::InvalidTransition {
                    tenant: record.id,
                    from,
                    to: TenantStatus::Active,
                });
            }
        }
        self.finish_provisioning(&record).await?;
        let record = self
            .inner
            .catalog
            .set_status(record.id, TenantStatus::Active)
            .await?;
        self.forget_record(record.id);
        Ok((record, true))
    }

    async fn finish_provisioning(&self, record: &TenantRecord) -> Result<(), TenancyError> {
        match &record.placement {
            Placement::Shared { cluster } => {
                self.cluster(cluster)?;
                Ok(())
            }
            Placement::Schema { cluster, schema } => {
                self.provision_schema(self.cluster(cluster)?, schema).await
            }
            Placement::Database { cluster, database } => {
                self.provision_database(self.cluster(cluster)?, database)
                    .await
            }
        }
    }

    pub(super) async fn provision_schema(
        &self,
        cluster: &Cluster,
        schema: &TenantObjectName,
    ) -> Result<(), TenancyError> {
        let mut conn = cluster.admin.acquire().await?;
        // The caller holds the tenant's lock: no other operation on this
        // tenant runs meanwhile.
        let mut tx = conn.begin().await?;
        // A spare schema made ahead of time (see `spares`) becomes the
        // tenant's by two renames and a grant, its migrations already
        // applied.
        let migrator = self.inner.tenant_migrator.as_deref();
        if spares::claim(cluster, &mut tx, schema, migrator).await? {
            tx.commit().await?;
            return Ok(());
        }
        create_schema(
            &mut tx,
            schema,
            Some(&cluster.config.runtime_role),
            migrator,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn provision_database(
        &self,
        cluster: &Cluster,
        database: &TenantObjectName,
    ) -> Result<(), TenancyError> {
        let d = database.quoted();
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(database.as_str())
                .fetch_one(&cluster.admin)
                .await?;
        if !exists {
            // CREATE DATABASE cannot run in a transaction; a concurrent
            // provisioner losing the race gets duplicate_database (42P04).
            match cluster
                .admin
                .execute(AssertSqlSafe(format!("CREATE DATABASE {d}")))
                .await
            {
                Ok(_) => {}
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
                Err(e) => return Err(e.into()),
            }
        }
        let runtime = cluster.config.runtime_role.quoted();
        cluster
            .admin
            .execute(AssertSqlSafe(format!(
                "REVOKE ALL ON DATABASE {d} FROM PUBLIC"
            )))
            .await?;
        cluster
            .admin
            .execute(AssertSqlSafe(format!(
                "GRANT CONNECT, TEMPORARY ON DATABASE {d} TO {runtime}"
            )))
            .await?;
        let options = tenant_database_options(cluster.config.admin.clone(), database);
        let mut conn = sqlx::PgConnection::connect_with(&options).await?;
        let mut tx = conn.begin().await?;
        if let Some(migrator) = &self.inner.tenant_migrator {
            migrator
                .run_direct(None, &mut *tx, false)
                .await
                .map_err(|e| TenancyError::InvalidInput(format!("tenant migration failed: {e}")))?;
        }
        for statement in sql::grant_schema_objects("public", &runtime) {
            tx.execute(AssertSqlSafe(statement)).await?;
        }
        tx.commit().await?;
        conn.close().await?;
        Ok(())
    }
}

/// Applies the tenant migrations in the transaction open on `tx`, whose
/// search path is the tenant's schema.
pub(super) async fn migrate_schema(
    migrator: &sqlx::migrate::Migrator,
    tx: &mut sqlx::PgConnection,
) -> Result<(), TenancyError> {
    migrator
        .run_direct(None, &mut *tx, false)
        .await
        .map_err(|e| TenancyError::InvalidInput(format!("tenant migration failed: {e}")))
}

/// Creates a schema and its role (granted to `runtime` when given), sets
/// the role's default privileges and applies the tenant migrations, in
/// the transaction open on `tx` (its search path left at the schema). The
/// library's own statements go in one round trip (simple protocol,
/// several statements): provisioning is a chain of round trips, and these
/// were ten of them. The role's privileges on what the migrations create
/// come from the default privileges set first (see
/// `sql::default_privileges`); the transaction makes schema, grants and
/// migrations appear together or not at all.
pub(super) async fn create_schema(
    tx: &mut sqlx::PgConnection,
    schema: &impl SqlName,
    runtime: Option<&SqlIdent>,
    migrator: Option<&sqlx::migrate::Migrator>,
) -> Result<(), TenancyError> {
    let s = schema.quoted();
    let mut setup = sql::create_schema_statements(schema, runtime);
    setup.extend(sql::default_privileges(&s, &s));
    setup.push(format!("SET LOCAL search_path TO {s}"));
    sqlx::raw_sql(AssertSqlSafe(setup.join("; ")))
        .execute(&mut *tx)
        .await?;
    if let Some(migrator) = migrator {
        migrate_schema(migrator, tx).await?;
    }
    Ok(())
}
