//! Who can become a schema tenant's role, and what the runtime role holds
//! on a tenant schema in its own name (part of `audit()`).

use sqlx::PgConnection;

use crate::audit::{AuditFinding, AuditObject, Weakness, finding_on};
use crate::error::TenancyError;
use crate::placement::TenantObjectName;
use crate::postgres::Cluster;
use crate::postgres::sql::quote_ident;

/// Every member of the tenant role `$1`, directly or not, inheriting or
/// not (each can `SET ROLE` to it), with the roles in between (from the
/// member's side), shortest path first — but superusers and the roles in
/// `$2` (the admin, the runtime role).
const TENANT_ROLE_MEMBERS: &str = "\
    WITH RECURSIVE members(oid, via) AS ( \
        SELECT m.member, ARRAY[]::text[] FROM pg_auth_members m \
        JOIN pg_roles t ON t.oid = m.roleid WHERE t.rolname = $1 \
      UNION ALL \
        SELECT m.member, (r.rolname::text COLLATE \"default\") || s.via FROM pg_auth_members m \
        JOIN members s ON m.roleid = s.oid JOIN pg_roles r ON r.oid = s.oid \
    ) \
    SELECT name, via FROM ( \
      SELECT DISTINCT ON (s.oid) r.rolname::text AS name, s.via FROM members s \
      JOIN pg_roles r ON r.oid = s.oid \
      WHERE NOT r.rolsuper AND NOT (r.rolname = ANY($2)) \
      ORDER BY s.oid, cardinality(s.via)) found \
    ORDER BY name";

/// What the role `$2` holds in its own name on schema `$1` and the
/// objects in it: ownership and privileges of the schema, privileges on
/// its relations and their columns, and the schema's default privileges
/// (for tables created later). One row per relation, `NULL` for the schema.
const RUNTIME_GRANTS: &str = "\
    WITH s AS (SELECT oid, nspowner, nspacl FROM pg_namespace WHERE nspname = $1), \
    rt AS (SELECT oid FROM pg_roles WHERE rolname = $2), \
    held(relation, privilege) AS ( \
        SELECT NULL::text, 'OWNER' FROM s, rt WHERE s.nspowner = rt.oid \
      UNION ALL \
        SELECT NULL, a.privilege_type FROM s, rt, aclexplode(s.nspacl) a \
        WHERE a.grantee = rt.oid \
      UNION ALL \
        SELECT c.relname::text, a.privilege_type FROM s, rt, pg_class c, \
          aclexplode(c.relacl) a \
        WHERE c.relnamespace = s.oid AND a.grantee = rt.oid \
      UNION ALL \
        SELECT c.relname::text, a.privilege_type || ' (' || t.attname || ')' \
        FROM s, rt, pg_class c JOIN pg_attribute t ON t.attrelid = c.oid, \
          aclexplode(t.attacl) a \
        WHERE c.relnamespace = s.oid AND a.grantee = rt.oid \
      UNION ALL \
        SELECT NULL, 'DEFAULT ' || a.privilege_type || ' ON ' || CASE d.defaclobjtype \
          WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES' WHEN 'f' THEN 'FUNCTIONS' \
          WHEN 'T' THEN 'TYPES' ELSE 'SCHEMAS' END \
        FROM s, rt, pg_default_acl d, aclexplode(d.defaclacl) a \
        WHERE d.defaclnamespace = s.oid AND a.grantee = rt.oid \
    ) \
    SELECT relation, array_agg(DISTINCT privilege ORDER BY privilege) FROM held \
    GROUP BY relation ORDER BY relation NULLS FIRST";

/// Roles other than the runtime role, the admin and superusers that can
/// become the tenant's role: `has_schema_privilege()` does not see a
/// member that does not inherit, yet it can `SET ROLE`.
pub(super) async fn audit_tenant_role(
    cluster: &Cluster,
    conn: &mut PgConnection,
    schema: &TenantObjectName,
    subject: &str,
    out: &mut Vec<AuditFinding>,
) -> Result<(), TenancyError> {
    let allowed = vec![
        cluster.config.admin.get_username().to_owned(),
        cluster.config.runtime_role.as_str().to_owned(),
    ];
    let members: Vec<(String, Vec<String>)> = sqlx::query_as(TENANT_ROLE_MEMBERS)
        .bind(schema.as_str())
        .bind(&allowed)
        .fetch_all(&mut *conn)
        .await?;
    for (member, via) in members {
        // Its own grant: of the tenant role, or of the first role between.
        let granted = via
            .first()
            .map_or_else(|| schema.quoted(), |r| quote_ident(r));
        out.push(finding_on(
            Weakness::TenantRoleGrantedToOtherRole,
            AuditObject::Membership {
                member: member.clone(),
                role: schema.as_str().to_owned(),
                via: via.clone(),
            },
            format!("{subject} role granted to {member}"),
            format!(
                "REVOKE {granted} FROM {}: only the runtime role may become a tenant's role",
                quote_ident(&member)
            ),
        ));
    }
    Ok(())
}

/// The runtime role reaches a schema tenant only by `SET ROLE` to the
/// tenant's role: privileges of its own there are a way around that.
pub(super) async fn audit_runtime_grants(
    cluster: &Cluster,
    conn: &mut PgConnection,
    schema: &TenantObjectName,
    subject: &str,
    out: &mut Vec<AuditFinding>,
) -> Result<(), TenancyError> {
    let runtime = cluster.config.runtime_role.as_str();
    let held: Vec<(Option<String>, Vec<String>)> = sqlx::query_as(RUNTIME_GRANTS)
        .bind(schema.as_str())
        .bind(runtime)
        .fetch_all(&mut *conn)
        .await?;
    for (relation, privileges) in held {
        let on = match &relation {
            Some(r) => format!("{}.{}", schema.quoted(), quote_ident(r)),
            None => format!("SCHEMA {}", schema.quoted()),
        };
        out.push(finding_on(
            Weakness::RuntimeRoleGrantedTenantSchema,
            AuditObject::Grant {
                role: runtime.to_owned(),
                schema: schema.as_str().to_owned(),
                relation: relation.clone(),
                privileges: privileges.clone(),
            },
            format!(
                "{subject}: {} held by {runtime} ({})",
                relation.as_deref().unwrap_or("the schema"),
                privileges.join(", ")
            ),
            format!(
                "REVOKE ALL ON {on} FROM \"{runtime}\" (and ALTER DEFAULT PRIVILEGES IN SCHEMA {} \
                 REVOKE … FROM \"{runtime}\" for defaults; hand over what it owns)",
                schema.quoted()
            ),
        ));
    }
    Ok(())
}
