//! The runtime role part of `audit()`: its attributes, what it owns, what
//! it can become, and session defaults stored for it.

use sqlx::PgConnection;

use super::privileged_names;
use crate::audit::{AuditFinding, AuditObject, Weakness, finding, finding_on};
use crate::error::TenancyError;
use crate::postgres::sql::quote_ident;
use crate::postgres::{Cluster, PgTenancy};

/// The runtime role's attributes: superuser, bypassrls, then the ones
/// reported as elevated.
type Flags = (bool, bool, bool, bool, bool, bool);

/// Every role the runtime role (`$1`) is a member of, directly or not,
/// inheriting or not, with the roles in between (from its side), shortest
/// path first; kept are superusers, `BYPASSRLS` or `CREATEROLE` roles
/// (which can grant themselves the rest), the roles named in `$2` and the
/// owners of the declared tables (`$3`), who can turn their RLS off.
const PRIVILEGED_MEMBERSHIPS: &str = "\
    WITH RECURSIVE granted(oid, via) AS ( \
        SELECT m.roleid, ARRAY[]::text[] FROM pg_auth_members m \
        JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1 \
      UNION ALL \
        SELECT m.roleid, g.via || (r.rolname::text COLLATE \"default\") FROM pg_auth_members m \
        JOIN granted g ON m.member = g.oid JOIN pg_roles r ON r.oid = g.oid \
    ) \
    SELECT name, via FROM ( \
      SELECT DISTINCT ON (g.oid) r.rolname::text AS name, g.via FROM granted g \
      JOIN pg_roles r ON r.oid = g.oid \
      WHERE r.rolsuper OR r.rolbypassrls OR r.rolcreaterole OR r.rolname = ANY($2) \
         OR EXISTS (SELECT 1 FROM unnest($3::text[]) d \
                    JOIN pg_class c ON c.oid = to_regclass(d) WHERE c.relowner = r.oid) \
      ORDER BY g.oid, cardinality(g.via)) found \
    ORDER BY name";

impl PgTenancy {
    pub(super) async fn audit_runtime_role(
        &self,
        cluster: &Cluster,
        conn: &mut PgConnection,
        out: &mut Vec<AuditFinding>,
    ) -> Result<(), TenancyError> {
        let role = cluster.config.runtime_role.as_str();
        let flags: Option<Flags> = sqlx::query_as(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolreplication, \
             rolinherit FROM pg_roles WHERE rolname = $1",
        )
        .bind(role)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((superuser, bypass, createrole, createdb, replication, inherit)) = flags else {
            out.push(finding(
                Weakness::RuntimeRoleMissing,
                role,
                "run PgTenancy::setup() to create it",
            ));
            return Ok(());
        };
        if superuser || bypass {
            out.push(finding(
                Weakness::RuntimeRoleBypassesRls,
                role,
                format!("ALTER ROLE \"{role}\" NOSUPERUSER NOBYPASSRLS"),
            ));
        }
        let elevated: Vec<String> = [
            (createrole, "CREATEROLE"),
            (createdb, "CREATEDB"),
            (replication, "REPLICATION"),
            (inherit, "INHERIT"),
        ]
        .into_iter()
        .filter(|(has, _)| *has)
        .map(|(_, name)| name.to_owned())
        .collect();
        if !elevated.is_empty() {
            let revoke: Vec<String> = elevated.iter().map(|a| format!("NO{a}")).collect();
            out.push(finding_on(
                Weakness::RuntimeRoleHasElevatedAttributes,
                AuditObject::RoleAttributes {
                    role: role.to_owned(),
                    attributes: elevated.clone(),
                },
                format!("{role} ({})", elevated.join(", ")),
                format!("ALTER ROLE \"{role}\" {}", revoke.join(" ")),
            ));
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
        self.audit_runtime_memberships(cluster, conn, out).await?;
        audit_runtime_settings(role, conn, out).await
    }

    /// The runtime role must not be able to `SET ROLE` to anything that
    /// bypasses RLS, reaches all data or can grant itself more.
    async fn audit_runtime_memberships(
        &self,
        cluster: &Cluster,
        conn: &mut PgConnection,
        out: &mut Vec<AuditFinding>,
    ) -> Result<(), TenancyError> {
        let runtime = cluster.config.runtime_role.as_str();
        let declared: Vec<String> = self
            .inner
            .tables
            .iter()
            .map(|t| t.table.as_str().to_owned())
            .collect();
        let found: Vec<(String, Vec<String>)> = sqlx::query_as(PRIVILEGED_MEMBERSHIPS)
            .bind(runtime)
            .bind(privileged_names(cluster))
            .bind(&declared)
            .fetch_all(&mut *conn)
            .await?;
        for (role, via) in found {
            // Revoking the first grant on the path cuts it.
            let first = via.first().unwrap_or(&role);
            let path = via
                .iter()
                .chain(std::iter::once(&role))
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" → ");
            out.push(finding_on(
                Weakness::RuntimeRoleMemberOfPrivilegedRole,
                AuditObject::Membership {
                    member: runtime.to_owned(),
                    role: role.clone(),
                    via: via.clone(),
                },
                format!("{runtime} → {path}"),
                format!(
                    "REVOKE {} FROM \"{runtime}\" (or another grant on the path)",
                    quote_ident(first)
                ),
            ));
        }
        Ok(())
    }
}

/// `ALTER ROLE … SET` defaults of the runtime role, in any database: the
/// runtime role may store them itself (`ALTER ROLE CURRENT_USER SET role
/// = …`), and each new runtime connection starts with them.
async fn audit_runtime_settings(
    runtime: &str,
    conn: &mut PgConnection,
    out: &mut Vec<AuditFinding>,
) -> Result<(), TenancyError> {
    let stored: Vec<(Option<String>, Vec<String>)> = sqlx::query_as(
        "SELECT d.datname::text, \
           ARRAY(SELECT DISTINCT split_part(c, '=', 1) FROM unnest(s.setconfig) c ORDER BY 1) \
         FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole \
         LEFT JOIN pg_database d ON d.oid = s.setdatabase \
         WHERE r.rolname = $1 ORDER BY 1 NULLS FIRST",
    )
    .bind(runtime)
    .fetch_all(&mut *conn)
    .await?;
    for (database, settings) in stored {
        let (scope, fix) = match &database {
            Some(db) => (
                format!("in database {db}"),
                format!(
                    "ALTER ROLE \"{runtime}\" IN DATABASE {} RESET ALL",
                    quote_ident(db)
                ),
            ),
            None => (
                "in every database".to_owned(),
                format!("ALTER ROLE \"{runtime}\" RESET ALL"),
            ),
        };
        out.push(finding_on(
            Weakness::RuntimeRoleHasSessionDefaults,
            AuditObject::RoleSettings {
                role: runtime.to_owned(),
                database: database.clone(),
                settings: settings.clone(),
            },
            format!("{runtime} {scope} ({})", settings.join(", ")),
            fix,
        ));
    }
    Ok(())
}
