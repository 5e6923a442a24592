//! The per-tenant part of `audit()`: who can reach each schema and
//! database tenant, whether its storage exists, and migration drift.

use saas_core::TenantStatus;
use sqlx::{Connection, PgConnection};

use super::current_version;
use super::tenant_roles::{audit_runtime_grants, audit_tenant_role};
use crate::audit::{AuditFinding, Weakness, finding};
use crate::error::TenancyError;
use crate::placement::{Placement, TenantObjectName};
use crate::postgres::{Cluster, PgTenancy, tenant_database_options};
use crate::record::TenantRecord;

/// What the audit learnt about one tenant's schema or database.
struct Reach {
    public: bool,
    /// Roles other than the expected ones that can reach it.
    others: Vec<String>,
    version: Option<i64>,
}

impl PgTenancy {
    pub(super) async fn audit_tenants(
        &self,
        records: &[TenantRecord],
        out: &mut Vec<AuditFinding>,
    ) -> Result<(), TenancyError> {
        let latest = self.inner.latest_tenant_version();
        for record in records {
            // A deleted tenant's storage is gone by design, and a deleting
            // one's is going: neither can be inspected or needs to be.
            if matches!(
                record.status,
                TenantStatus::Deleted | TenantStatus::Deleting
            ) {
                continue;
            }
            let Some(name) = record.placement.object_name() else {
                continue;
            };
            let cluster = self.cluster(record.placement.cluster())?;
            let subject = format!("tenant {} ({name})", record.id);
            let Some(reach) = inspect(cluster, record, name).await? else {
                out.push(finding(
                    Weakness::TenantStorageMissing,
                    subject,
                    missing_fix(record),
                ));
                continue;
            };
            if reach.public {
                out.push(finding(
                    Weakness::ReachableByPublic,
                    subject.clone(),
                    "REVOKE ALL ON SCHEMA/DATABASE … FROM PUBLIC",
                ));
            }
            for role in &reach.others {
                out.push(finding(
                    Weakness::ReachableByOtherRole,
                    format!("{subject} reachable by role {role}"),
                    format!(
                        "REVOKE ALL ON SCHEMA/DATABASE {} FROM \"{role}\" (and revoke any \
                         membership that gives it the tenant's privileges)",
                        name.quoted()
                    ),
                ));
            }
            if let Placement::Schema { schema, .. } = &record.placement {
                let mut conn = cluster.admin.acquire().await?;
                audit_tenant_role(cluster, &mut conn, schema, &subject, out).await?;
                audit_runtime_grants(cluster, &mut conn, schema, &subject, out).await?;
            }
            if let Some(latest) = latest
                && reach.version.is_none_or(|v| v < latest)
            {
                out.push(finding(
                    Weakness::MigrationsBehind,
                    subject,
                    format!(
                        "at version {}, latest is {latest}: run the tenant migrations",
                        reach.version.map_or("none".to_owned(), |v| v.to_string())
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn missing_fix(record: &TenantRecord) -> String {
    match record.status {
        TenantStatus::Provisioning => format!(
            "provisioning did not finish: run PgTenancy::retry_provisioning({})",
            record.id
        ),
        _ => format!(
            "restore the tenant's schema or database from a backup, or delete tenant {}",
            record.id
        ),
    }
}

/// Inspects a schema or database tenant; `None` when its schema or
/// database does not exist.
async fn inspect(
    cluster: &Cluster,
    record: &TenantRecord,
    name: &TenantObjectName,
) -> Result<Option<Reach>, TenancyError> {
    let admin = cluster.config.admin.get_username().to_owned();
    let runtime = cluster.config.runtime_role.as_str().to_owned();
    match &record.placement {
        Placement::Schema { .. } => {
            let mut conn = cluster.admin.acquire().await?;
            // The tenant's own role has the schema's name.
            let allowed = vec![admin, runtime, name.as_str().to_owned()];
            let Some((public, others)) = schema_reach(&mut conn, name, &allowed).await? else {
                return Ok(None);
            };
            let ledger = format!("{}._sqlx_migrations", name.quoted());
            let version = current_version(&mut conn, &ledger).await?;
            Ok(Some(Reach {
                public,
                others,
                version,
            }))
        }
        Placement::Database { database, .. } => {
            let mut conn = cluster.admin.acquire().await?;
            let allowed = vec![admin, runtime];
            let Some((public, others)) = database_reach(&mut conn, database, &allowed).await?
            else {
                return Ok(None);
            };
            drop(conn);
            let options = tenant_database_options(cluster.config.admin.clone(), database);
            let mut conn = PgConnection::connect_with(&options).await?;
            let version = current_version(&mut conn, "_sqlx_migrations").await?;
            conn.close().await?;
            Ok(Some(Reach {
                public,
                others,
                version,
            }))
        }
        Placement::Shared { .. } => Ok(None),
    }
}

/// Effective privileges, so a role reaching the schema through membership
/// of a granted role counts too. Superusers and the predefined `pg_*`
/// roles are administrators by construction and not reported; roles are
/// not listed when `PUBLIC` has the privilege (every role then has it, and
/// that is reported once as `ReachableByPublic`).
const SCHEMA_REACH: &str = "\
    SELECT has_schema_privilege('public', n.oid, 'USAGE'), \
      COALESCE((SELECT array_agg(r.rolname::text ORDER BY r.rolname) FROM pg_roles r \
        WHERE NOT r.rolsuper AND r.rolname !~ '^pg_' AND r.oid <> n.nspowner \
          AND NOT (r.rolname = ANY($2)) \
          AND NOT has_schema_privilege('public', n.oid, 'USAGE') \
          AND has_schema_privilege(r.oid, n.oid, 'USAGE')), '{}') \
    FROM pg_namespace n WHERE n.nspname = $1";

const DATABASE_REACH: &str = "\
    SELECT has_database_privilege('public', d.oid, 'CONNECT'), \
      COALESCE((SELECT array_agg(r.rolname::text ORDER BY r.rolname) FROM pg_roles r \
        WHERE NOT r.rolsuper AND r.rolname !~ '^pg_' AND r.oid <> d.datdba \
          AND NOT (r.rolname = ANY($2)) \
          AND NOT has_database_privilege('public', d.oid, 'CONNECT') \
          AND has_database_privilege(r.oid, d.oid, 'CONNECT')), '{}') \
    FROM pg_database d WHERE d.datname = $1";

async fn schema_reach(
    conn: &mut PgConnection,
    schema: &TenantObjectName,
    allowed: &[String],
) -> Result<Option<(bool, Vec<String>)>, TenancyError> {
    Ok(sqlx::query_as(SCHEMA_REACH)
        .bind(schema.as_str())
        .bind(allowed)
        .fetch_optional(&mut *conn)
        .await?)
}

async fn database_reach(
    conn: &mut PgConnection,
    database: &TenantObjectName,
    allowed: &[String],
) -> Result<Option<(bool, Vec<String>)>, TenancyError> {
    Ok(sqlx::query_as(DATABASE_REACH)
        .bind(database.as_str())
        .bind(allowed)
        .fetch_optional(&mut *conn)
        .await?)
}
