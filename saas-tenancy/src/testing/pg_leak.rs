//! The leak harness's PostgreSQL target: a [`PgTenancy`] and one of the
//! host's tenant tables.

use async_trait::async_trait;
use saas_core::{TenantContext, TenantId};
use sqlx::AssertSqlSafe;

use super::leak::{LeakRow, LeakStatements, LeakTarget};
use crate::placement::{ClusterName, Placement};
use crate::postgres::{PgTenancy, SqlIdent};

/// Drives a [`PgTenancy`] on a table with a `uuid` tenant column, a
/// `bigint` key and a `text` value (names given by the host, validated).
#[derive(Debug)]
pub struct PgLeakTarget {
    tenancy: PgTenancy,
    cluster: ClusterName,
    sql: LeakStatements,
    table: String,
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
        let t = table.quoted();
        let sql = LeakStatements::new(
            &t,
            &tenant_column.quoted(),
            &key_column.quoted(),
            &value_column.quoted(),
            |n| format!("${n}"),
        );
        Self {
            tenancy,
            cluster,
            sql,
            table: t,
        }
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Runs `sql` on a tenant-less runtime connection and expects PostgreSQL
/// to refuse it with `code`: 0 rows seen. Rows read instead are an error.
async fn expect_refused(
    pool: &sqlx::PgPool,
    sql: String,
    code: &str,
    what: &str,
) -> Result<i64, String> {
    match sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.clone()))
        .fetch_one(pool)
        .await
    {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(code) => Ok(0),
        Ok(n) => Err(format!(
            "a connection without a tenant ran `{sql}` ({n} rows) instead of getting {what}"
        )),
        Err(e) => Err(format!("`{sql}`: expected {what} ({code}), got {e}")),
    }
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
        let result = sqlx::query(AssertSqlSafe(self.sql.insert.as_str()))
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
        sqlx::query_as(AssertSqlSafe(self.sql.read_all.as_str()))
            .fetch_all(&mut *conn)
            .await
            .map_err(text)
    }

    async fn read_key(&self, ctx: &TenantContext, key: i64) -> Result<Vec<LeakRow>, String> {
        let mut tx = self.tenancy.begin(ctx).await.map_err(text)?;
        let rows = sqlx::query_as(AssertSqlSafe(self.sql.read_key.as_str()))
            .bind(key)
            .fetch_all(&mut *tx)
            .await
            .map_err(text)?;
        tx.commit().await.map_err(text)?;
        Ok(rows)
    }

    async fn update_all(&self, ctx: &TenantContext, value: &str) -> Result<u64, String> {
        let mut conn = self.tenancy.acquire(ctx).await.map_err(text)?;
        let done = sqlx::query(AssertSqlSafe(self.sql.update_all.as_str()))
            .bind(value)
            .execute(&mut *conn)
            .await
            .map_err(text)?;
        Ok(done.rows_affected())
    }

    async fn delete_key(&self, ctx: &TenantContext, key: i64) -> Result<u64, String> {
        let mut tx = self.tenancy.begin(ctx).await.map_err(text)?;
        let done = sqlx::query(AssertSqlSafe(self.sql.delete_key.as_str()))
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(text)?;
        tx.commit().await.map_err(text)?;
        Ok(done.rows_affected())
    }

    async fn unscoped_count(&self, tenants: &[TenantContext]) -> Result<i64, String> {
        let pool = self.tenancy.runtime_pool(&self.cluster).map_err(text)?;
        // Row tenants: the shared table, under RLS with no tenant setting.
        let mut seen = match sqlx::query_scalar(AssertSqlSafe(self.sql.count.as_str()))
            .fetch_one(pool)
            .await
        {
            Ok(n) => n,
            // No such table where a tenant-less connection looks: nothing seen.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => 0,
            Err(e) => return Err(e.to_string()),
        };
        for ctx in tenants {
            let record = self
                .tenancy
                .catalog()
                .get(ctx.tenant_id())
                .await
                .map_err(text)?
                .ok_or_else(|| format!("tenant {} is not in the catalog", ctx.tenant_id()))?;
            seen += match &record.placement {
                Placement::Shared { .. } => 0,
                // The runtime role holds no privilege of its own on a
                // tenant schema (NOINHERIT): reading it by name is refused.
                Placement::Schema { schema, .. } => {
                    let sql = format!("SELECT count(*) FROM {}.{}", schema.quoted(), self.table);
                    expect_refused(pool, sql, "42501", "permission denied").await?
                }
                Placement::Database { database, .. } => {
                    // Not reachable from the shared database's connections...
                    let sql = format!(
                        "SELECT count(*) FROM {}.public.{}",
                        database.quoted(),
                        self.table
                    );
                    let refused =
                        expect_refused(pool, sql, "0A000", "cross-database reference").await?;
                    // ...and no role without a grant may connect to it.
                    let public: bool = sqlx::query_scalar(
                        "SELECT has_database_privilege('public', $1, 'CONNECT')",
                    )
                    .bind(database.as_str())
                    .fetch_one(pool)
                    .await
                    .map_err(text)?;
                    if public {
                        return Err(format!("PUBLIC may connect to tenant database {database}"));
                    }
                    refused
                }
            };
        }
        Ok(seen)
    }

    async fn clear(&self, ctx: &TenantContext) -> Result<(), String> {
        let mut tx = self.tenancy.begin(ctx).await.map_err(text)?;
        sqlx::query(AssertSqlSafe(self.sql.clear.as_str()))
            .execute(&mut *tx)
            .await
            .map_err(text)?;
        tx.commit().await.map_err(text)
    }
}
