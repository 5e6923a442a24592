//! Provisioning schema and database tenants.

use sqlx::{AssertSqlSafe, Connection, Executor};

use super::{Cluster, PgTenancy, sql, tenant_database_options};
use crate::error::TenancyError;
use crate::placement::{Placement, TenantObjectName};
use crate::record::{NewTenant, TenantRecord};

impl PgTenancy {
    /// Adds a tenant to the catalog, creates its schema or database and
    /// applies the tenant migrations, then marks it active.
    ///
    /// A second provision of the same slug is
    /// [`TenancyError::AlreadyExists`] before anything is created. If the
    /// process dies midway, the tenant stays `provisioning`; finish it with
    /// [`PgTenancy::retry_provisioning`] (every step is idempotent).
    pub async fn provision(&self, tenant: NewTenant) -> Result<TenantRecord, TenancyError> {
        let record = self.inner.catalog.create(tenant).await?;
        self.activate(record).await
    }

    /// Finishes provisioning a tenant left `provisioning` by a crash or an
    /// error; an already active tenant is returned as is.
    pub async fn retry_provisioning(
        &self,
        id: saas_core::TenantId,
    ) -> Result<TenantRecord, TenancyError> {
        let record = self
            .inner
            .catalog
            .get(id)
            .await?
            .ok_or_else(|| TenancyError::TenantNotFound(format!("with id {id}")))?;
        match record.status {
            saas_core::TenantStatus::Provisioning => self.activate(record).await,
            saas_core::TenantStatus::Active => Ok(record),
            status => Err(TenancyError::InvalidTransition {
                tenant: id,
                from: status,
                to: saas_core::TenantStatus::Active,
            }),
        }
    }

    async fn activate(&self, record: TenantRecord) -> Result<TenantRecord, TenancyError> {
        self.finish_provisioning(&record).await?;
        let record = self
            .inner
            .catalog
            .set_status(record.id, saas_core::TenantStatus::Active)
            .await?;
        self.forget_record(record.id);
        self.inner
            .hooks
            .on_event(&crate::hooks::LifecycleEvent::Provisioned(record.clone()))
            .await?;
        Ok(record)
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

    async fn provision_schema(
        &self,
        cluster: &Cluster,
        schema: &TenantObjectName,
    ) -> Result<(), TenancyError> {
        let mut conn = cluster.admin.acquire().await?;
        let mut tx = conn.begin().await?;
        let lock = format!(
            "SELECT pg_advisory_xact_lock(hashtext('saas_tenancy.provision.{}'))",
            schema.as_str()
        );
        tx.execute(AssertSqlSafe(lock)).await?;
        for statement in sql::create_schema_statements(schema, &cluster.config.runtime_role) {
            tx.execute(AssertSqlSafe(statement)).await?;
        }
        let s = schema.quoted();
        tx.execute(AssertSqlSafe(format!("SET LOCAL search_path TO {s}")))
            .await?;
        if let Some(migrator) = &self.inner.tenant_migrator {
            migrator
                .run_direct(None, &mut *tx, false)
                .await
                .map_err(|e| TenancyError::InvalidInput(format!("tenant migration failed: {e}")))?;
        }
        for statement in sql::grant_schema_objects(&s, &s) {
            tx.execute(AssertSqlSafe(statement)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn provision_database(
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
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('saas_tenancy.provision'))")
            .await?;
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
