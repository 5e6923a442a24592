use std::sync::Arc;

use async_trait::async_trait;
use saas_core::{SharedClock, SystemClock, TenantId, TenantSlug, TenantStatus};
use sqlx::SqlitePool;

use super::row::{StoredTenant, tenant_columns};
use super::{Catalog, check_transition};
use crate::error::TenancyError;
use crate::record::{ListOptions, NewTenant, TenantPage, TenantRecord, allowed_from};

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

#[async_trait]
impl Catalog for SqliteCatalog {
    async fn create(&self, tenant: NewTenant) -> Result<TenantRecord, TenancyError> {
        let record = tenant.into_record(self.clock.now());
        let result = sqlx::query(
            "INSERT INTO saas_tenants (id, slug, display_name, status, strategy, cluster, \
             object_name, created_at, updated_at, metadata) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(record.id)
        .bind(record.slug.as_str())
        .bind(&record.display_name)
        .bind(record.status.as_str())
        .bind(record.placement.strategy().as_str())
        .bind(record.placement.cluster().as_str())
        .bind(record.placement.object_name().map(|n| n.as_str()))
        .bind(record.created_at)
        .bind(record.updated_at)
        .bind(sqlx::types::Json(&record.metadata))
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(record),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(TenancyError::AlreadyExists {
                    slug: record.slug.to_string(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, id: TenantId) -> Result<Option<TenantRecord>, TenancyError> {
        let sql = concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM saas_tenants WHERE id = ?"
        );
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| StoredTenant::read(&r)?.into_record())
            .transpose()
    }

    async fn get_by_slug(&self, slug: &TenantSlug) -> Result<Option<TenantRecord>, TenancyError> {
        let sql = concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM saas_tenants WHERE slug = ?"
        );
        let row = sqlx::query(sql)
            .bind(slug.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| StoredTenant::read(&r)?.into_record())
            .transpose()
    }

    async fn list(&self, options: &ListOptions) -> Result<TenantPage, TenancyError> {
        options.validate()?;
        let sql = concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM saas_tenants \
             WHERE (?1 IS NULL OR id > ?1) \
               AND (?2 IS NULL OR status = ?2) \
               AND (?3 IS NULL OR strategy = ?3) \
               AND (?4 IS NULL OR cluster = ?4) \
             ORDER BY id LIMIT ?5"
        );
        let limit = i64::try_from(options.limit + 1).unwrap_or(i64::MAX);
        let rows = sqlx::query(sql)
            .bind(options.after)
            .bind(options.status.map(|s| s.as_str()))
            .bind(options.strategy.map(|s| s.as_str()))
            .bind(options.cluster.as_ref().map(|c| c.as_str()))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let tenants = rows
            .iter()
            .map(|r| StoredTenant::read(r)?.into_record())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TenantPage::from_overfetch(tenants, options.limit))
    }

    async fn set_status(
        &self,
        id: TenantId,
        to: TenantStatus,
    ) -> Result<TenantRecord, TenancyError> {
        // The statuses are our own constants, never input: safe to inline.
        let from = allowed_from(to)
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE saas_tenants SET status = ?2, \
                 updated_at = CASE WHEN status = ?2 THEN updated_at ELSE ?3 END \
             WHERE id = ?1 AND status IN ({from}) RETURNING {}",
            tenant_columns!()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(to.as_str())
            .bind(crate::record::catalog_time(self.clock.now()))
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = row {
            return StoredTenant::read(&row)?.into_record();
        }
        let current = self
            .get(id)
            .await?
            .ok_or_else(|| TenancyError::TenantNotFound(format!("with id {id}")))?;
        check_transition(&current, to)?;
        Err(TenancyError::InvalidTransition {
            tenant: id,
            from: current.status,
            to,
        })
    }
}
