//! `audit()`: does the deployed database really isolate tenants?

use sqlx::{AssertSqlSafe, PgConnection};

use super::PgTenancy;
pub use crate::audit::{AuditFinding, AuditObject, Weakness};
use crate::error::TenancyError;

// The runtime role.
mod roles;
// The declared tables (RLS, policy, keys) and undeclared tenant data.
mod tables;
// The per-tenant checks (reachability, storage, migration drift).
mod tenants;

impl PgTenancy {
    /// Inspects every cluster and every schema and database tenant and
    /// reports each isolation weakness with what to do about it. A clean
    /// deployment reports nothing.
    pub async fn audit(&self) -> Result<Vec<AuditFinding>, TenancyError> {
        let mut findings = Vec::new();
        for cluster in self.inner.clusters.values() {
            let mut conn = cluster.admin.acquire().await?;
            self.audit_runtime_role(cluster, &mut conn, &mut findings)
                .await?;
            self.audit_tables(cluster, &mut conn, &mut findings).await?;
        }
        self.audit_tenants(&mut findings).await?;
        Ok(findings)
    }
}

/// The highest successful migration in a ledger table, `None` if absent.
pub(super) async fn current_version(
    conn: &mut PgConnection,
    ledger: &str,
) -> Result<Option<i64>, TenancyError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(ledger)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(None);
    }
    // `ledger` is a derived, quoted tenant schema name plus a constant.
    let sql = format!("SELECT max(version) FROM {ledger} WHERE success");
    Ok(sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(&mut *conn)
        .await?)
}
