use std::sync::Arc;

use saas_core::{SharedClock, SystemClock};
use sqlx::{PgPool, Pool};

use super::row::{CatalogSql, CatalogTable, tenant_columns};
use crate::error::TenancyError;

/// The catalog in a PostgreSQL table `saas_tenants` (in the pool's
/// `search_path`). Call [`PgCatalog::migrate`] once at startup.
///
/// It implements [`Catalog`](super::Catalog) through the implementation
/// the SQL catalogs share (rustdoc lists it as a blanket impl over a
/// crate-private trait).
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

impl CatalogTable for PgCatalog {
    type Db = sqlx::Postgres;

    fn table_pool(&self) -> &Pool<sqlx::Postgres> {
        &self.pool
    }

    fn clock(&self) -> &SharedClock {
        &self.clock
    }

    fn postgres_pool(&self) -> Option<&PgPool> {
        Some(&self.pool)
    }
}
