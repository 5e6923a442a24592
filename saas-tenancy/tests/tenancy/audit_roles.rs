//! `audit()` on roles: who can become a tenant's role, what the runtime role
//! can become, what it holds on tenant schemas itself, its attributes and
//! its stored session defaults — each reported with the roles by name.
//! Roles are cluster-wide: each test names its own uniquely and drops them,
//! whatever the outcome.

use saas_tenancy::postgres::{AuditObject, ScopeMode, Weakness};
use saas_tenancy::testing::unique_name;
use saas_tenancy::{Strategy, TenantObjectName};

use crate::audit_policies::{admin, assert_found, drop_role, found, guarded};
use crate::pg_env::sandbox;

fn membership(member: &str, role: &str, via: &[&str]) -> AuditObject {
    AuditObject::Membership {
        member: member.to_owned(),
        role: role.to_owned(),
        via: via.iter().map(|r| (*r).to_owned()).collect(),
    }
}

#[tokio::test]
async fn a_noinherit_member_of_a_tenant_role_is_reported() {
    let Some(mut env) = sandbox("audit::tenant_member", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("a", Strategy::Schema).await.unwrap();
    let t_a = TenantObjectName::for_tenant(a.tenant_id());
    let (login, group) = (unique_name("saas_login"), unique_name("saas_group"));
    let undo = [drop_role(&login), drop_role(&group)];
    guarded(env, &undo, |env| async move {
        assert_eq!(found(&env).await, vec![], "clean setup");
        let w = Weakness::TenantRoleGrantedToOtherRole;

        // has_schema_privilege() ignores it, yet it can SET ROLE to the tenant.
        admin(&env, &format!("CREATE ROLE \"{login}\" LOGIN NOINHERIT")).await;
        admin(&env, &format!("GRANT {} TO \"{login}\"", t_a.quoted())).await;
        assert_found(
            &found(&env).await,
            &[(w, membership(&login, t_a.as_str(), &[]))],
        );
        admin(&env, &format!("REVOKE {} FROM \"{login}\"", t_a.quoted())).await;

        // Through a group, both the group and its member are reported.
        // (The group does not inherit either: an inheriting one also has
        // the schema's USAGE, reported as ReachableByOtherRole.)
        admin(&env, &format!("CREATE ROLE \"{group}\" NOLOGIN NOINHERIT")).await;
        admin(&env, &format!("GRANT {} TO \"{group}\"", t_a.quoted())).await;
        admin(&env, &format!("GRANT \"{group}\" TO \"{login}\"")).await;
        assert_found(
            &found(&env).await,
            &[
                (w, membership(&group, t_a.as_str(), &[])),
                (w, membership(&login, t_a.as_str(), &[&group])),
            ],
        );
        admin(&env, &format!("DROP ROLE \"{login}\", \"{group}\"")).await;
        assert_eq!(found(&env).await, vec![]);
    })
    .await;
}

#[tokio::test]
async fn the_runtime_role_in_a_privileged_role_is_reported() {
    let Some(mut env) = sandbox("audit::runtime_member", ScopeMode::Shared).await else {
        return;
    };
    env.tenant("a", Strategy::Schema).await.unwrap();
    let (group, bypass) = (unique_name("saas_group"), unique_name("saas_bypass"));
    let undo = [drop_role(&group), drop_role(&bypass)];
    guarded(env, &undo, |env| async move {
        assert_eq!(found(&env).await, vec![], "clean setup");
        let rt = env.runtime_role.clone();
        let w = Weakness::RuntimeRoleMemberOfPrivilegedRole;

        admin(&env, &format!("GRANT pg_read_all_data TO \"{rt}\"")).await;
        assert_found(
            &found(&env).await,
            &[(w, membership(&rt, "pg_read_all_data", &[]))],
        );
        admin(&env, &format!("REVOKE pg_read_all_data FROM \"{rt}\"")).await;

        // NOINHERIT does not help: it can SET ROLE through the group.
        admin(&env, &format!("CREATE ROLE \"{group}\" NOLOGIN NOINHERIT")).await;
        admin(
            &env,
            &format!("GRANT pg_execute_server_program TO \"{group}\""),
        )
        .await;
        admin(&env, &format!("GRANT \"{group}\" TO \"{rt}\"")).await;
        assert_found(
            &found(&env).await,
            &[(w, membership(&rt, "pg_execute_server_program", &[&group]))],
        );
        admin(&env, &format!("DROP ROLE \"{group}\"")).await;

        admin(&env, &format!("CREATE ROLE \"{bypass}\" NOLOGIN BYPASSRLS")).await;
        admin(&env, &format!("GRANT \"{bypass}\" TO \"{rt}\"")).await;
        assert_found(&found(&env).await, &[(w, membership(&rt, &bypass, &[]))]);
        admin(&env, &format!("DROP ROLE \"{bypass}\"")).await;

        // The admin role (a superuser here; the sandbox's cleanup drops the
        // runtime role and with it this membership).
        let admin_role: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&env.admin)
            .await
            .unwrap();
        admin(&env, &format!("GRANT \"{admin_role}\" TO \"{rt}\"")).await;
        assert_found(
            &found(&env).await,
            &[(w, membership(&rt, &admin_role, &[]))],
        );
        admin(&env, &format!("REVOKE \"{admin_role}\" FROM \"{rt}\"")).await;
        assert_eq!(found(&env).await, vec![]);
    })
    .await;
}

#[tokio::test]
async fn the_runtime_role_granted_a_tenant_schema_is_reported() {
    let Some(mut env) = sandbox("audit::runtime_grant", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("a", Strategy::Schema).await.unwrap();
    let s = TenantObjectName::for_tenant(a.tenant_id());
    guarded(env, &[], |env| async move {
        assert_eq!(found(&env).await, vec![], "clean setup");
        let rt = env.runtime_role.clone();
        let grant = |relation: Option<&str>, privileges: &[&str]| {
            (
                Weakness::RuntimeRoleGrantedTenantSchema,
                AuditObject::Grant {
                    role: rt.clone(),
                    schema: s.as_str().to_owned(),
                    relation: relation.map(str::to_owned),
                    privileges: privileges.iter().map(|p| (*p).to_owned()).collect(),
                },
            )
        };
        let q = s.quoted();

        admin(&env, &format!("GRANT USAGE ON SCHEMA {q} TO \"{rt}\"")).await;
        admin(
            &env,
            &format!("GRANT SELECT, UPDATE ON {q}.notes TO \"{rt}\""),
        )
        .await;
        assert_found(
            &found(&env).await,
            &[
                grant(None, &["USAGE"]),
                grant(Some("notes"), &["SELECT", "UPDATE"]),
            ],
        );
        admin(&env, &format!("REVOKE ALL ON SCHEMA {q} FROM \"{rt}\"")).await;
        admin(&env, &format!("REVOKE ALL ON {q}.notes FROM \"{rt}\"")).await;

        admin(
            &env,
            &format!("GRANT SELECT (body) ON {q}.notes TO \"{rt}\""),
        )
        .await;
        assert_found(
            &found(&env).await,
            &[grant(Some("notes"), &["SELECT (body)"])],
        );
        admin(&env, &format!("REVOKE ALL ON {q}.notes FROM \"{rt}\"")).await;

        // Tables the admin creates there later would be the runtime role's.
        admin(
            &env,
            &format!("ALTER DEFAULT PRIVILEGES IN SCHEMA {q} GRANT SELECT ON TABLES TO \"{rt}\""),
        )
        .await;
        assert_found(
            &found(&env).await,
            &[grant(None, &["DEFAULT SELECT ON TABLES"])],
        );
        admin(
            &env,
            &format!("ALTER DEFAULT PRIVILEGES IN SCHEMA {q} REVOKE ALL ON TABLES FROM \"{rt}\""),
        )
        .await;
        assert_eq!(found(&env).await, vec![]);
    })
    .await;
}

#[tokio::test]
async fn the_runtime_role_with_elevated_attributes_is_reported() {
    let Some(mut env) = sandbox("audit::runtime_attributes", ScopeMode::Shared).await else {
        return;
    };
    env.tenant("r", Strategy::Shared).await.unwrap();
    guarded(env, &[], |env| async move {
        assert_eq!(found(&env).await, vec![], "clean setup");
        let rt = env.runtime_role.clone();
        let attributes = |names: &[&str]| {
            (
                Weakness::RuntimeRoleHasElevatedAttributes,
                AuditObject::RoleAttributes {
                    role: rt.clone(),
                    attributes: names.iter().map(|n| (*n).to_owned()).collect(),
                },
            )
        };

        admin(&env, &format!("ALTER ROLE \"{rt}\" CREATEROLE")).await;
        assert_found(&found(&env).await, &[attributes(&["CREATEROLE"])]);
        admin(
            &env,
            &format!("ALTER ROLE \"{rt}\" NOCREATEROLE CREATEDB REPLICATION"),
        )
        .await;
        assert_found(
            &found(&env).await,
            &[attributes(&["CREATEDB", "REPLICATION"])],
        );
        admin(
            &env,
            &format!("ALTER ROLE \"{rt}\" NOCREATEDB NOREPLICATION INHERIT"),
        )
        .await;
        assert_found(&found(&env).await, &[attributes(&["INHERIT"])]);
        admin(&env, &format!("ALTER ROLE \"{rt}\" NOINHERIT")).await;
        assert_eq!(found(&env).await, vec![]);
    })
    .await;
}

#[tokio::test]
async fn session_defaults_stored_for_the_runtime_role_are_reported() {
    let Some(mut env) = sandbox("audit::runtime_settings", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("a", Strategy::Schema).await.unwrap();
    let t_a = TenantObjectName::for_tenant(a.tenant_id());
    guarded(env, &[], |env| async move {
        assert_eq!(found(&env).await, vec![], "clean setup");
        let rt = env.runtime_role.clone();
        let database: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&env.admin)
            .await
            .unwrap();
        let settings = |database: Option<&str>, names: &[&str]| {
            (
                Weakness::RuntimeRoleHasSessionDefaults,
                AuditObject::RoleSettings {
                    role: rt.clone(),
                    database: database.map(str::to_owned),
                    settings: names.iter().map(|n| (*n).to_owned()).collect(),
                },
            )
        };

        // Every new runtime connection would start as tenant a. (Dropping
        // the runtime role in the sandbox's cleanup drops these too.)
        admin(
            &env,
            &format!("ALTER ROLE \"{rt}\" IN DATABASE \"{database}\" SET role = '{t_a}'"),
        )
        .await;
        admin(
            &env,
            &format!("ALTER ROLE \"{rt}\" SET search_path = '{t_a}', public"),
        )
        .await;
        admin(&env, &format!("ALTER ROLE \"{rt}\" SET work_mem = '8MB'")).await;
        assert_found(
            &found(&env).await,
            &[
                settings(Some(&database), &["role"]),
                settings(None, &["search_path", "work_mem"]),
            ],
        );
        admin(
            &env,
            &format!("ALTER ROLE \"{rt}\" IN DATABASE \"{database}\" RESET ALL"),
        )
        .await;
        admin(&env, &format!("ALTER ROLE \"{rt}\" RESET ALL")).await;
        assert_eq!(found(&env).await, vec![]);
    })
    .await;
}
