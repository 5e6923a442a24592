use std::sync::Arc;

use async_trait::async_trait;
use saas_core::{SharedClock, SystemClock, TenantId, TenantSlug, TenantStatus};
use sqlx::PgPool;

use super::Catalog;
use super::row::{CatalogSql, SqlCatalog, tenant_columns};
use crate::error::TenancyError;
use crate::record::{ListOptions, NewTenant, TenantPage, TenantRecord};

/// The catalog in a PostgreSQL table `saas_tenants` (in the pool's
/// `search_path`). Call [`PgCatalog::migrate`] once at startup.
#[derive(Debug, Clone)]
pub struct PgCatalog {
    pool: PgPool,
    clock: SharedClock,
}

const MIGRATION: &str = r#"
CREATE TABLE IF NOT EXISTS saas_tenants (
    id uuid PRIMARY KEY,
    slug text NOT NULL,
    display_name text NOT NULL,
    status text NOT NULL CHECK (status IN
        ('provisioning', 'active', 'suspended', 'moving', 'deleting', 'deleted')),
    strategy text NOT NULL CHECK (strategy IN ('shared', 'schema', 'database')),
    cluster text NOT NULL,
    object_name text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT saas_tenants_slug_key UNIQUE (slug)
)"#;

impl PgCatalog {
    /// A catalog on `pool`, reading time from the system clock.
    pub fn new(pool: PgPool) -> Self {
        Self::with_clock(pool, Arc::new(SystemClock))
    }

    /// A catalog on `pool`, reading time from `clock`.
    pub fn with_clock(pool: PgPool, clock: SharedClock) -> Self {
        Self { pool, clock }
    }

    /// Creates the catalog table if it does not exist. Safe to run
    /// concurrently from several processes (serialised by an advisory lock).
    pub async fn migrate(&self) -> Result<(), TenancyError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('saas_tenants.migrate'))")
            .execute(&mut *tx)
            .await?;
        sqlx::query(MIGRATION).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The pool the catalog uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl CatalogSql for sqlx::Postgres {
    const LIST: &'static str = concat!(
        "SELECT ",
        tenant_columns!(),
        " FROM saas_tenants \
         WHERE ($1::uuid IS NULL OR id > $1) \
           AND ($2::text IS NULL OR status = $2) \
           AND ($3::text IS NULL OR strategy = $3) \
           AND ($4::text IS NULL OR cluster = $4) \
         ORDER BY id LIMIT $5"
    );
}

#[async_trait]
impl Catalog for PgCatalog {
    async fn create(&self, tenant: NewTenant) -> Result<TenantRecord, TenancyError> {
        let record = tenant.into_record(self.clock.now());
        SqlCatalog::insert(&self.pool, &record).await?;
        Ok(record)
    }

    async fn get(&self, id: TenantId) -> Result<Option<TenantRecord>, TenancyError> {
        SqlCatalog::by_id(&self.pool, id).await
    }

    async fn get_by_slug(&self, slug: &TenantSlug) -> Result<Option<TenantRecord>, TenancyError> {
        SqlCatalog::by_slug(&self.pool, slug).await
    }

    async fn list(&self, options: &ListOptions) -> Result<TenantPage, TenancyError> {
        SqlCatalog::page(&self.pool, options).await
    }

    async fn set_status(
        &self,
        id: TenantId,
        to: TenantStatus,
    ) -> Result<TenantRecord, TenancyError> {
        let now = crate::record::catalog_time(self.clock.now());
        SqlCatalog::change_status(&self.pool, id, to, now).await
    }
}
