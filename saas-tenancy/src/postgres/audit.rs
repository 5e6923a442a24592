//! `audit()`: does the deployed database really isolate tenants?

use sqlx::{AssertSqlSafe, PgConnection};

use super::{Cluster, POLICY_NAME, PgTenancy};
use crate::audit::finding;
pub use crate::audit::{AuditFinding, Weakness};
use crate::error::TenancyError;

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

    async fn audit_runtime_role(
        &self,
        cluster: &Cluster,
        conn: &mut PgConnection,
        out: &mut Vec<AuditFinding>,
    ) -> Result<(), TenancyError> {
        let role = cluster.config.runtime_role.as_str();
        let flags: Option<(bool, bool)> =
            sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
                .bind(role)
                .fetch_optional(&mut *conn)
                .await?;
        match flags {
            None => out.push(finding(
                Weakness::RuntimeRoleMissing,
                role,
                "run PgTenancy::setup() to create it",
            )),
            Some((superuser, bypass)) if superuser || bypass => out.push(finding(
                Weakness::RuntimeRoleBypassesRls,
                role,
                format!("ALTER ROLE \"{role}\" NOSUPERUSER NOBYPASSRLS"),
            )),
            Some(_) => {}
        }
        let owned: Vec<String> = sqlx::query_scalar(
            "SELECT c.oid::regclass::text FROM pg_class c \
             JOIN pg_roles r ON r.oid = c.relowner \
             WHERE r.rolname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1",
        )
        .bind(role)
        .fetch_all(&mut *conn)
        .await?;
        for table in owned {
            out.push(finding(
                Weakness::RuntimeRoleOwnsTables,
                table,
                "make the migration role the owner: ALTER TABLE … OWNER TO <admin role>",
            ));
        }
        Ok(())
    }

    async fn audit_tables(
        &self,
        _cluster: &Cluster,
        conn: &mut PgConnection,
        out: &mut Vec<AuditFinding>,
    ) -> Result<(), TenancyError> {
        let mut schemas = Vec::new();
        for table in &self.inner.tables {
            let name = table.table.as_str();
            let row: Option<(bool, bool, String)> = sqlx::query_as(
                "SELECT c.relrowsecurity, c.relforcerowsecurity, n.nspname::text \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = to_regclass($1)",
            )
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
            let Some((enabled, forced, schema)) = row else {
                out.push(finding(
                    Weakness::TenantTableMissing,
                    name,
                    "run the shared migrations, then PgTenancy::setup()",
                ));
                continue;
            };
            if !schemas.contains(&schema) {
                schemas.push(schema);
            }
            if !enabled {
                out.push(finding(
                    Weakness::RlsDisabled,
                    name,
                    "run PgTenancy::setup()",
                ));
            }
            if !forced {
                out.push(finding(
                    Weakness::RlsNotForced,
                    name,
                    "run PgTenancy::setup()",
                ));
            }
            let policy: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_policy \
                 WHERE polrelid = to_regclass($1) AND polname = $2)",
            )
            .bind(name)
            .bind(POLICY_NAME)
            .fetch_one(&mut *conn)
            .await?;
            if !policy {
                out.push(finding(
                    Weakness::PolicyMissing,
                    name,
                    "run PgTenancy::setup()",
                ));
            }
            // Primary keys, unique constraints and unique indexes alike.
            let keys: Vec<String> = sqlx::query_scalar(
                "SELECT i.indexrelid::regclass::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attname = $2 \
                 WHERE i.indrelid = to_regclass($1) AND i.indisunique \
                   AND NOT (a.attnum = ANY (i.indkey)) ORDER BY 1",
            )
            .bind(name)
            .bind(table.tenant_column.as_str())
            .fetch_all(&mut *conn)
            .await?;
            for key in keys {
                out.push(finding(
                    Weakness::UniqueKeyWithoutTenant,
                    format!("{name} ({key})"),
                    format!(
                        "include {} in the key: a unique key across tenants leaks existence and blocks sharding",
                        table.tenant_column
                    ),
                ));
            }
        }
        // Tables next to the declared ones that carry a tenant column but
        // no isolation (the library's own bookkeeping is not tenant data).
        let columns: Vec<String> = self
            .inner
            .tables
            .iter()
            .map(|t| t.tenant_column.as_str().to_owned())
            .collect();
        let declared: Vec<String> = self
            .inner
            .tables
            .iter()
            .map(|t| t.table.as_str().to_owned())
            .collect();
        let stray: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT c.table_schema::text, c.table_name::text \
             FROM information_schema.columns c \
             JOIN pg_class k ON k.oid = to_regclass(quote_ident(c.table_schema) || '.' || quote_ident(c.table_name)) \
             WHERE c.table_schema = ANY($1) AND c.column_name = ANY($2) \
               AND NOT (c.table_name = ANY($3)) AND NOT (c.table_name = ANY($4)) \
               AND k.relkind IN ('r', 'p') AND NOT k.relrowsecurity ORDER BY 1, 2",
        )
        .bind(&schemas)
        .bind(&columns)
        .bind(&declared)
        .bind(super::sql::LIBRARY_TABLES)
        .fetch_all(&mut *conn)
        .await?;
        for (schema, table) in stray {
            out.push(finding(
                Weakness::UndeclaredTenantTable,
                format!("{schema}.{table}"),
                "declare it with .tenant_table(..) and run PgTenancy::setup()",
            ));
        }
        Ok(())
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
