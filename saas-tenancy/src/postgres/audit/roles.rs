//! The runtime role part of `audit()`.

use sqlx::PgConnection;

use crate::audit::{AuditFinding, Weakness, finding};
use crate::error::TenancyError;
use crate::postgres::{Cluster, PgTenancy};

impl PgTenancy {
    pub(super) async fn audit_runtime_role(
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
}
