//! The leak harness's PostgreSQL target: a [`PgTenancy`] and one of the
//! host's tenant tables.

use async_trait::async_trait;
use saas_core::{TenantContext, TenantId};
use sqlx::AssertSqlSafe;

use super::leak::{LeakRow, LeakTarget};
use crate::placement::ClusterName;
use crate::postgres::{PgTenancy, SqlIdent};

/// Drives a [`PgTenancy`] on a table with a `uuid` tenant column, a
/// `bigint` key and a `text` value (names given by the host, validated).
#[derive(Debug)]
pub struct PgLeakTarget {
    tenancy: PgTenancy,
    cluster: ClusterName,
    insert: String,
    read_all: String,
    read_key: String,
    update_all: String,
    delete_key: String,
    count: String,
    clear: String,
}

impl PgLeakTarget {
    /// A target for `table(tenant_column, key_column, value_column)`;
    /// `cluster` is where the unscoped check looks.
    pub fn new(
        tenancy: PgTenancy,
        cluster: ClusterName,
        table: &SqlIdent,
        tenant_column: &SqlIdent,
        key_column: &SqlIdent,
        value_column: &SqlIdent,
    ) -> Self {
        let (t, c, k, v) = (
            table.quoted(),
            tenant_column.quoted(),
            key_column.quoted(),
            value_column.quoted(),
        );
        // No statement filters by tenant: isolation must come from the scope.
        Self {
            tenancy,
            cluster,
            insert: format!("INSERT INTO {t} ({c}, {k}, {v}) VALUES ($1, $2, $3)"),
            read_all: format!("SELECT {c}, {k}, {v} FROM {t}"),
            read_key: format!("SELECT {c}, {k}, {v} FROM {t} WHERE {k} = $1"),
            update_all: format!("UPDATE {t} SET {v} = $1"),
            delete_key: format!("DELETE FROM {t} WHERE {k} = $1"),
            count: format!("SELECT count(*) FROM {t}"),
            clear: format!("DELETE FROM {t}"),
        }
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[async_trait]
impl LeakTarget for PgLeakTarget {
    async fn insert(
        &self,
        ctx: &TenantContext,
        claimed: TenantId,
        key: i64,
        value: &str,
    ) -> Result<bool, String> {
        let mut tx = self.tenancy.begin(ctx).await.map_err(text)?;
        let result = sqlx::query(AssertSqlSafe(self.insert.clone()))
            .bind(claimed)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await;
        match result {
            Ok(_) => {
                tx.commit().await.map_err(text)?;
                Ok(true)
            }
            // 42501: the row-level security policy (WITH CHECK) refused it.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn read_all(&self, ctx: &TenantContext) -> Result<Vec<LeakRow>, String> {
        let mut conn = self.tenancy.acquire(ctx).await.map_err(text)?;
        sqlx::query_as(AssertSqlSafe(self.read_all.clone()))
            .fetch_all(&mut *conn)
            .await
            .map_err(text)
    }

    async fn read_key(&self, ctx: &TenantContext, key: i64) -> Result<Vec<LeakRow>, String> {
        let mut tx = self.tenancy.begin(ctx).await.map_err(text)?;
        let rows = sqlx::query_as(AssertSqlSafe(self.read_key.clone()))
            .bind(key)
            .fetch_all(&mut *tx)
            .await
            .map_err(text)?;
        tx.commit().await.map_err(text)?;
        Ok(rows)
    }

    async fn update_all(&self, ctx: &TenantContext, value: &str) -> Result<u64, String> {
        let mut conn = self.tenancy.acquire(ctx).await.map_err(text)?;
        let done = sqlx::query(AssertSqlSafe(self.update_all.clone()))
            .bind(value)
            .execute(&mut *conn)
            .await
            .map_err(text)?;
        Ok(done.rows_affected())
    }

    async fn delete_key(&self, ctx: &TenantContext, key: i64) -> Result<u64, String> {
        let mut tx = self.tenancy.begin(ctx).await.map_err(text)?;
        let done = sqlx::query(AssertSqlSafe(self.delete_key.clone()))
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(text)?;
        tx.commit().await.map_err(text)?;
        Ok(done.rows_affected())
    }

    async fn unscoped_count(&self) -> Result<Option<i64>, String> {
        let pool = self.tenancy.runtime_pool(&self.cluster).map_err(text)?;
        match sqlx::query_scalar(AssertSqlSafe(self.count.clone()))
            .fetch_one(pool)
            .await
        {
            Ok(n) => Ok(Some(n)),
            // No such table where a tenant-less connection looks: nothing seen.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Ok(Some(0)),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn clear(&self, ctx: &TenantContext) -> Result<(), String> {
        let mut tx = self.tenancy.begin(ctx).await.map_err(text)?;
        sqlx::query(AssertSqlSafe(self.clear.clone()))
            .execute(&mut *tx)
            .await
            .map_err(text)?;
        tx.commit().await.map_err(text)
    }
}
