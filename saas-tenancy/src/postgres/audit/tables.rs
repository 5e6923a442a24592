//! The table part of `audit()`: RLS and the policies on each declared
//! table, its unique keys, and tenant data outside the declared tables.

use sqlx::{Acquire, AssertSqlSafe, Executor, PgConnection};

use super::{RUNTIME_REACH, privileged_names};
use crate::audit::{AuditFinding, AuditObject, Weakness, finding, finding_on};
use crate::error::TenancyError;
use crate::ident::{SqlIdent, TenantTable};
use crate::postgres::sql::{self, LIBRARY_TABLES, POLICY_NAME};
use crate::postgres::{Cluster, PgTenancy};

/// The temporary table the expected policy is created on.
const PROBE: &str = "saas_audit_probe";

/// Is the library's policy on `$1` exactly what `setup()` creates: for
/// all commands, permissive, to `PUBLIC`, with the expected expressions
/// (`$3`, `$4`) as this server deparses them? No row: no such policy.
const POLICY_INTACT: &str = "\
    SELECT p.polcmd = '*' AND p.polpermissive AND p.polroles = '{0}'::oid[] \
      AND pg_get_expr(p.polqual, p.polrelid) IS NOT DISTINCT FROM $3 \
      AND pg_get_expr(p.polwithcheck, p.polrelid) IS NOT DISTINCT FROM $4 \
    FROM pg_policy p WHERE p.polrelid = to_regclass($1) AND p.polname = $2";

impl PgTenancy {
    pub(super) async fn audit_tables(
        &self,
        cluster: &Cluster,
        conn: &mut PgConnection,
        tenant_schemas: &[String],
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
                schemas.push(schema.clone());
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
            audit_policies(cluster, conn, table, &schema, out).await?;
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
        self.audit_undeclared(cluster, conn, &schemas, tenant_schemas, out)
            .await
    }

    /// Relations with a tenant column that are not declared: tables next
    /// to the declared ones (whoever can use them), and any relation in a
    /// schema other than a tenant's that the runtime role, or a role it can
    /// `SET ROLE` to, can read or write — whatever its RLS, since the
    /// library neither made nor checks its policies (a view reads as its
    /// owner, past the RLS of the tables below). The library's own tables
    /// are left out by name.
    async fn audit_undeclared(
        &self,
        cluster: &Cluster,
        conn: &mut PgConnection,
        declared_schemas: &[String],
        tenant_schemas: &[String],
        out: &mut Vec<AuditFinding>,
    ) -> Result<(), TenancyError> {
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
        let query = format!(
            "{RUNTIME_REACH} \
             SELECT n.nspname::text, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
               AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' \
               AND NOT (n.nspname = ANY($3)) \
               AND c.oid <> ALL (SELECT to_regclass(d)::oid FROM unnest($4::text[]) d \
                                 WHERE to_regclass(d) IS NOT NULL) \
               AND NOT (c.relname = ANY($5)) \
               AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid \
                           AND a.attname = ANY($6) AND a.attnum > 0 AND NOT a.attisdropped) \
               AND ((c.relkind IN ('r', 'p') AND n.nspname = ANY($7)) \
                 OR EXISTS (SELECT 1 FROM reach r \
                   WHERE has_schema_privilege(r.oid, n.oid, 'USAGE') \
                     AND (has_table_privilege(r.oid, c.oid, \
                            'SELECT, INSERT, UPDATE, DELETE, TRUNCATE') \
                       OR has_any_column_privilege(r.oid, c.oid, 'SELECT, INSERT, UPDATE')))) \
             ORDER BY 1, 2"
        );
        let stray: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(query))
            .bind(cluster.config.runtime_role.as_str())
            .bind(privileged_names(cluster))
            .bind(tenant_schemas)
            .bind(&declared)
            .bind(LIBRARY_TABLES)
            .bind(&columns)
            .bind(declared_schemas)
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
                "declare it with .tenant_table(..) and run PgTenancy::setup(), or revoke the \
                 runtime role's (and its roles') privileges on it",
            ));
        }
        Ok(())
    }
}

/// The policies of one declared table: the library's own must be intact,
/// and no other permissive policy may apply to the runtime role.
async fn audit_policies(
    cluster: &Cluster,
    conn: &mut PgConnection,
    table: &TenantTable,
    schema: &str,
    out: &mut Vec<AuditFinding>,
) -> Result<(), TenancyError> {
    let name = table.table.as_str();
    let policy = |policy: &str| AuditObject::Policy {
        schema: schema.to_owned(),
        table: name.to_owned(),
        policy: policy.to_owned(),
    };
    let (using, check) = expected_policy(conn, table).await?;
    let intact: Option<bool> = sqlx::query_scalar(POLICY_INTACT)
        .bind(name)
        .bind(POLICY_NAME)
        .bind(&using)
        .bind(&check)
        .fetch_optional(&mut *conn)
        .await?;
    match intact {
        None => out.push(finding_on(
            Weakness::PolicyMissing,
            AuditObject::Table {
                schema: schema.to_owned(),
                table: name.to_owned(),
            },
            name,
            "run PgTenancy::setup()",
        )),
        Some(false) => out.push(finding_on(
            Weakness::PolicyAltered,
            policy(POLICY_NAME),
            format!("{name} (policy {POLICY_NAME})"),
            "run PgTenancy::setup(), which recreates the policy",
        )),
        Some(true) => {}
    }
    let query = format!(
        "{RUNTIME_REACH} \
         SELECT p.polname::text FROM pg_policy p \
         WHERE p.polrelid = to_regclass($3) AND p.polname <> $4 AND p.polpermissive \
           AND (0 = ANY (p.polroles) OR p.polroles && ARRAY(SELECT oid FROM reach)) \
         ORDER BY 1"
    );
    let extra: Vec<String> = sqlx::query_scalar(AssertSqlSafe(query))
        .bind(cluster.config.runtime_role.as_str())
        .bind(privileged_names(cluster))
        .bind(name)
        .bind(POLICY_NAME)
        .fetch_all(&mut *conn)
        .await?;
    for extra in extra {
        out.push(finding_on(
            Weakness::ExtraPermissivePolicy,
            policy(&extra),
            format!("{name} (policy {extra})"),
            format!(
                "DROP POLICY {} ON {}.{} (policies are OR-ed: it widens the library's), \
                 or make it AS RESTRICTIVE",
                sql::quote_ident(&extra),
                sql::quote_ident(schema),
                table.table.quoted()
            ),
        ));
    }
    Ok(())
}

/// The library policy's USING and WITH CHECK expressions for `table` as
/// this server deparses them (`pg_get_expr`), read back from the policy
/// `setup()` would create, made on a temporary table with the same columns
/// in a transaction that is rolled back.
async fn expected_policy(
    conn: &mut PgConnection,
    table: &TenantTable,
) -> Result<(Option<String>, Option<String>), TenancyError> {
    let probe = TenantTable {
        table: SqlIdent::new(PROBE)?,
        tenant_column: table.tenant_column.clone(),
        stored_as: None,
    };
    let mut tx = conn.begin().await?;
    // Temporary tables come first on the search path: the policy lands on
    // the probe whatever the other schemas hold.
    tx.execute(AssertSqlSafe(format!(
        "CREATE TEMPORARY TABLE {} (LIKE {})",
        probe.table.quoted(),
        table.table.quoted()
    )))
    .await?;
    tx.execute(AssertSqlSafe(sql::create_policy(&probe)))
        .await?;
    let expected = sqlx::query_as(
        "SELECT pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid) \
         FROM pg_policy WHERE polrelid = to_regclass($1) AND polname = $2",
    )
    .bind(format!("pg_temp.{PROBE}"))
    .bind(POLICY_NAME)
    .fetch_one(&mut *tx)
    .await?;
    tx.rollback().await?;
    Ok(expected)
}
