use std::sync::Arc;

use saas_core::{SharedClock, SystemClock};
use sqlx::{Pool, SqlitePool};

use super::row::{CatalogSql, CatalogTable, tenant_columns};
use crate::error::TenancyError;

/// The catalog in a SQLite table `saas_tenants`. Call
/// [`SqliteCatalog::migrate`] once at startup.
///
/// It implements [`Catalog`](super::Catalog) through the implementation
/// the SQL catalogs share (rustdoc lists it as a blanket impl over a
/// crate-private trait).
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

impl CatalogTable for SqliteCatalog {
    type Db = sqlx::Sqlite;

    fn table_pool(&self) -> &Pool<sqlx::Sqlite> {
        &self.pool
    }

    fn clock(&self) -> &SharedClock {
        &self.clock
    }
}
