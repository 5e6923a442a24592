use std::sync::Arc;

use async_trait::async_trait;
use saas_core::{SharedClock, SystemClock, TenantId, TenantSlug, TenantStatus};
use sqlx::PgPool;

use super::row::{StoredTenant, tenant_columns};
use super::{Catalog, check_transition};
use crate::error::TenancyError;
use crate::record::{ListOptions, NewTenant, TenantPage, TenantRecord, allowed_from};

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

fn map_insert_error(e: sqlx::Error, slug: &TenantSlug) -> TenancyError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => TenancyError::AlreadyExists {
            slug: slug.to_string(),
        },
        _ => TenancyError::Database(e),
    }
}

#[async_trait]
impl Catalog for PgCatalog {
    async fn create(&self, tenant: NewTenant) -> Result<TenantRecord, TenancyError> {
        let record = tenant.into_record(self.clock.now());
        sqlx::query(
            "INSERT INTO saas_tenants (id, slug, display_name, status, strategy, cluster, \
             object_name, created_at, updated_at, metadata) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
        .await
        .map_err(|e| map_insert_error(e, &record.slug))?;
        Ok(record)
    }

    async fn get(&self, id: TenantId) -> Result<Option<TenantRecord>, TenancyError> {
        let sql = concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM saas_tenants WHERE id = $1"
        );
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| StoredTenant::read(&r)?.into_record())
            .transpose()
    }

    async fn get_by_slug(&self, slug: &TenantSlug) -> Result<Option<TenantRecord>, TenancyError> {
        let sql = concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM saas_tenants WHERE slug = $1"
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
             WHERE ($1::uuid IS NULL OR id > $1) \
               AND ($2::text IS NULL OR status = $2) \
               AND ($3::text IS NULL OR strategy = $3) \
               AND ($4::text IS NULL OR cluster = $4) \
             ORDER BY id LIMIT $5"
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
        // One statement decides and writes, so a concurrent change between
        // reading and writing cannot be overwritten.
        let from: Vec<&str> = allowed_from(to).iter().map(|s| s.as_str()).collect();
        let sql = concat!(
            "UPDATE saas_tenants SET status = $2, \
                 updated_at = CASE WHEN status = $2 THEN updated_at ELSE $3 END \
             WHERE id = $1 AND status = ANY($4) RETURNING ",
            tenant_columns!()
        );
        let row = sqlx::query(sql)
            .bind(id)
            .bind(to.as_str())
            .bind(crate::record::catalog_time(self.clock.now()))
            .bind(&from)
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
        // Allowed now but refused a moment ago: the status changed in
        // between. Report what was refused rather than retrying silently.
        Err(TenancyError::InvalidTransition {
            tenant: id,
            from: current.status,
            to,
        })
    }
}
