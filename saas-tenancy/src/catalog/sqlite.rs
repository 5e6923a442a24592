use std::sync::Arc;

use async_trait::async_trait;
use saas_core::{SharedClock, SystemClock, TenantId, TenantSlug, TenantStatus};
use sqlx::SqlitePool;

use super::Catalog;
use super::row::{CatalogSql, SqlCatalog, tenant_columns};
use crate::error::TenancyError;
use crate::record::{ListOptions, NewTenant, TenantPage, TenantRecord};

/// The catalog in a SQLite table `saas_tenants`. Call
/// [`SqliteCatalog::migrate`] once at startup.
#[derive(Debug, Clone)]
pub struct SqliteCatalog {
    pool: SqlitePool,
    clock: SharedClock,
}

const MIGRATION: &str = r#"
CREATE TABLE IF NOT EXISTS saas_tenants (
    id BLOB PRIMARY KEY NOT NULL,
    slug TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN
        ('provisioning', 'active', 'suspended', 'moving', 'deleting', 'deleted')),
    strategy TEXT NOT NULL CHECK (strategy IN ('shared', 'schema', 'database')),
    cluster TEXT NOT NULL,
    object_name TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
) STRICT"#;

impl SqliteCatalog {
    /// A catalog on `pool`, reading time from the system clock.
    pub fn new(pool: SqlitePool) -> Self {
        Self::with_clock(pool, Arc::new(SystemClock))
    }

    /// A catalog on `pool`, reading time from `clock`.
    pub fn with_clock(pool: SqlitePool, clock: SharedClock) -> Self {
        Self { pool, clock }
    }

    /// Creates the catalog table if it does not exist.
    pub async fn migrate(&self) -> Result<(), TenancyError> {
        sqlx::query(MIGRATION).execute(&self.pool).await?;
        Ok(())
    }

    /// The pool the catalog uses.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl CatalogSql for sqlx::Sqlite {
    const LIST: &'static str = concat!(
        "SELECT ",
        tenant_columns!(),
        " FROM saas_tenants \
         WHERE ($1 IS NULL OR id > $1) \
           AND ($2 IS NULL OR status = $2) \
           AND ($3 IS NULL OR strategy = $3) \
           AND ($4 IS NULL OR cluster = $4) \
         ORDER BY id LIMIT $5"
    );
}

#[async_trait]
impl Catalog for SqliteCatalog {
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
