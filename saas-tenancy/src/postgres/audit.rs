//! `audit()`: does the deployed database really isolate tenants?

use saas_core::TenantStatus;
use sqlx::{AssertSqlSafe, PgConnection};

use super::{Cluster, PgTenancy};
pub use crate::audit::{AuditFinding, AuditObject, Weakness};
use crate::error::TenancyError;
use crate::placement::{Placement, TenantObjectName};
use crate::record::{ListOptions, TenantRecord};

// The runtime role: attributes, memberships, session defaults.
mod roles;
// The declared tables (RLS, policies, keys) and undeclared tenant data.
mod tables;
// Who can become a schema tenant's role; the runtime role's own grants there.
mod tenant_roles;
// The per-tenant checks (reachability, storage, migration drift).
mod tenants;

/// Predefined roles that read or write every table, reach the server's
/// files and programs, end other sessions or read their query texts (which
/// carry other tenants' values): the runtime role must not be able to
/// become any of them.
const PRIVILEGED_PREDEFINED: &[&str] = &[
    "pg_read_all_data",
    "pg_write_all_data",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_signal_backend",
    "pg_read_all_stats",
    "pg_monitor",
    "pg_maintain",
    "pg_create_subscription",
];

/// The roles raw SQL on a runtime connection can act as: the runtime role
/// (`$1`) and every role it is a member of, directly or not, inheriting or
/// not (it can `SET ROLE` to each). Superusers and the roles named in `$2`
/// (the admin, [`PRIVILEGED_PREDEFINED`]) are left out and not walked
/// through: they reach everything, and being able to become one is
/// reported by itself.
const RUNTIME_REACH: &str = "\
    WITH RECURSIVE reach(oid) AS ( \
        SELECT oid FROM pg_roles WHERE rolname = $1 AND NOT rolsuper \
      UNION \
        SELECT m.roleid FROM pg_auth_members m \
        JOIN reach r ON m.member = r.oid \
        JOIN pg_roles g ON g.oid = m.roleid \
        WHERE NOT g.rolsuper AND NOT (g.rolname = ANY($2)) \
    ) ";

impl PgTenancy {
    /// Inspects every cluster and every schema and database tenant and
    /// reports each isolation weakness with what to do about it, naming
    /// the object concerned in [`AuditFinding::object`]. A clean
    /// deployment reports nothing. It looks at:
    ///
    /// - the runtime role: missing, superuser or `BYPASSRLS`, owning
    ///   tables, `CREATEROLE`/`CREATEDB`/`REPLICATION`/`INHERIT`, a member
    ///   (directly or not) of the admin role or another privileged role,
    ///   session defaults stored for it;
    /// - each declared table: missing, RLS not enabled or not forced, the
    ///   library's policy missing or not exactly what [`setup`] creates,
    ///   another permissive policy that applies to the runtime role, a
    ///   unique key without the tenant column;
    /// - tables with a tenant column that are not declared, next to the
    ///   declared ones or anywhere the runtime role can use them;
    /// - each schema and database tenant: its storage missing, reachable
    ///   by `PUBLIC` or by other roles, its role granted to other roles,
    ///   privileges of the runtime role's own on its schema, migrations
    ///   behind. Deleted and deleting tenants are not inspected.
    ///
    /// The admin role needs `TEMPORARY` on each cluster's database: the
    /// expected policy is read back from the server after creating it on a
    /// temporary table, in a transaction that is rolled back.
    ///
    /// [`setup`]: PgTenancy::setup
    pub async fn audit(&self) -> Result<Vec<AuditFinding>, TenancyError> {
        let records = self
            .inner
            .catalog
            .list_all(&ListOptions::default().with_limit(1000))
            .await?;
        let mut findings = Vec::new();
        // Every tenant's schema name as derived from its id, tampered
        // records included: their real schema is still a tenant's.
        let mut schemas = tenant_schemas(&records);
        schemas.extend(
            records
                .iter()
                .filter(|r| r.status != TenantStatus::Deleted)
                .map(|r| TenantObjectName::for_tenant(r.id).as_str().to_owned()),
        );
        schemas.sort();
        schemas.dedup();
        let records = crate::audit::without_tampered_placements(records, &mut findings);
        for cluster in self.inner.clusters.values() {
            let mut conn = cluster.admin.acquire().await?;
            self.audit_runtime_role(cluster, &mut conn, &mut findings)
                .await?;
            self.audit_tables(cluster, &mut conn, &schemas, &mut findings)
                .await?;
        }
        self.audit_tenants(&records, &mut findings).await?;
        Ok(findings)
    }
}

/// The schemas of schema tenants that may still exist, on any cluster: two
/// clusters may share a database (and roles are server-wide).
fn tenant_schemas(records: &[TenantRecord]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.status != TenantStatus::Deleted)
        .filter_map(|r| match &r.placement {
            Placement::Schema { schema, .. } => Some(schema.as_str().to_owned()),
            _ => None,
        })
        .collect()
}

/// The roles left out of [`RUNTIME_REACH`] (besides superusers), which
/// the runtime role must not be able to become: the admin role and
/// [`PRIVILEGED_PREDEFINED`].
fn privileged_names(cluster: &Cluster) -> Vec<String> {
    let mut names = vec![cluster.config.admin.get_username().to_owned()];
    names.extend(PRIVILEGED_PREDEFINED.iter().map(|n| (*n).to_owned()));
    names
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
