//! The table part of `audit()`: RLS and the policy on each declared table,
//! its unique keys, and tables with a tenant column that are not declared.

use sqlx::PgConnection;

use crate::audit::{AuditFinding, AuditObject, Weakness, finding, finding_on};
use crate::error::TenancyError;
use crate::postgres::sql::{LIBRARY_TABLES, POLICY_NAME};
use crate::postgres::{Cluster, PgTenancy};

impl PgTenancy {
    pub(super) async fn audit_tables(
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
            let object = AuditObject::Table {
                schema: schema.clone(),
                table: name.to_owned(),
            };
            if !schemas.contains(&schema) {
                schemas.push(schema);
            }
            if !enabled {
                out.push(finding_on(
                    Weakness::RlsDisabled,
                    object.clone(),
                    name,
                    "run PgTenancy::setup()",
                ));
            }
            if !forced {
                out.push(finding_on(
                    Weakness::RlsNotForced,
                    object.clone(),
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
                out.push(finding_on(
                    Weakness::PolicyMissing,
                    object.clone(),
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
                out.push(finding_on(
                    Weakness::UniqueKeyWithoutTenant,
                    object.clone(),
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
        .bind(LIBRARY_TABLES)
        .fetch_all(&mut *conn)
        .await?;
        for (schema, table) in stray {
            out.push(finding_on(
                Weakness::UndeclaredTenantTable,
                AuditObject::Table {
                    schema: schema.clone(),
                    table: table.clone(),
                },
                format!("{schema}.{table}"),
                "declare it with .tenant_table(..) and run PgTenancy::setup()",
            ));
        }
        Ok(())
    }
}
