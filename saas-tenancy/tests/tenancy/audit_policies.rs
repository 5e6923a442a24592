//! `audit()` on the tables themselves: a policy that is not the library's
//! own, the library's policy rewritten, and tenant data the runtime role can
//! reach outside the declared tables — each reported with the policy or
//! table by name.

use std::future::Future;
use std::sync::Arc;

use saas_tenancy::Strategy;
use saas_tenancy::postgres::{AuditObject, ScopeMode, Weakness};
use saas_tenancy::testing::pg::PgSandbox;
use sqlx::{AssertSqlSafe, Executor};

use crate::pg_env::sandbox;

/// Runs `body` on the sandbox, then the `undo` statements (each may fail:
/// the body may have failed before creating what they drop) and the
/// sandbox's cleanup — also when `body` panics.
pub(crate) async fn guarded<F, Fut>(env: PgSandbox, undo: &[String], body: F)
where
    F: FnOnce(Arc<PgSandbox>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let env = Arc::new(env);
    let outcome = tokio::spawn(body(Arc::clone(&env))).await;
    let env = Arc::into_inner(env).unwrap();
    for statement in undo {
        let _ = env.admin.execute(AssertSqlSafe(statement.clone())).await;
    }
    env.cleanup().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

pub(crate) async fn admin(env: &PgSandbox, sql: &str) {
    env.admin
        .execute(AssertSqlSafe(sql.to_owned()))
        .await
        .unwrap();
}

/// What the audit reports, as (kind, object) pairs, each with a fix.
pub(crate) async fn found(env: &PgSandbox) -> Vec<(Weakness, Option<AuditObject>)> {
    let findings = env.tenancy.audit().await.unwrap();
    for f in &findings {
        assert!(!f.fix.is_empty(), "no fix in {f:?}");
    }
    findings
        .into_iter()
        .map(|f| (f.weakness, f.object))
        .collect()
}

/// Drops a role created by a test (roles are cluster-wide), with what it
/// owns or is named in.
pub(crate) fn drop_role(role: &str) -> String {
    format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\"")
}

/// `actual` holds exactly the `expected` findings, in any order.
pub(crate) fn assert_found(
    actual: &[(Weakness, Option<AuditObject>)],
    expected: &[(Weakness, AuditObject)],
) {
    for (weakness, object) in expected {
        assert!(
            actual
                .iter()
                .any(|(w, o)| w == weakness && o.as_ref() == Some(object)),
            "{weakness:?} on {object:?} not reported in {actual:#?}"
        );
    }
    assert_eq!(actual.len(), expected.len(), "{actual:#?}");
}

fn policy(env: &PgSandbox, table: &str, name: &str) -> AuditObject {
    AuditObject::Policy {
        schema: env.shared_schema.clone(),
        table: table.to_owned(),
        policy: name.to_owned(),
    }
}

#[tokio::test]
async fn a_permissive_policy_beside_the_library_one_is_reported() {
    let Some(mut env) = sandbox("audit::extra_policy", ScopeMode::Shared).await else {
        return;
    };
    env.tenant("r", Strategy::Shared).await.unwrap();
    let unrelated = saas_tenancy::testing::unique_name("saas_unrelated");
    let undo = [drop_role(&unrelated)];
    guarded(env, &undo, |env| async move {
        assert_eq!(found(&env).await, vec![], "clean setup");
        let rt = &env.runtime_role;

        admin(&env, "CREATE POLICY p_open ON notes USING (true)").await;
        assert_found(
            &found(&env).await,
            &[(
                Weakness::ExtraPermissivePolicy,
                policy(&env, "notes", "p_open"),
            )],
        );
        admin(&env, "DROP POLICY p_open ON notes").await;

        // For the runtime role by name, and for one command only: still open.
        admin(
            &env,
            &format!("CREATE POLICY p_rt ON notes FOR SELECT TO \"{rt}\" USING (true)"),
        )
        .await;
        assert_found(
            &found(&env).await,
            &[(
                Weakness::ExtraPermissivePolicy,
                policy(&env, "notes", "p_rt"),
            )],
        );
        admin(&env, "DROP POLICY p_rt ON notes").await;

        // Restrictive policies only narrow; a policy for a role the runtime
        // role cannot become does not apply to it.
        admin(
            &env,
            "CREATE POLICY p_narrow ON notes AS RESTRICTIVE USING (true)",
        )
        .await;
        admin(&env, &format!("CREATE ROLE \"{unrelated}\" NOLOGIN")).await;
        admin(
            &env,
            &format!("CREATE POLICY p_other ON notes TO \"{unrelated}\" USING (true)"),
        )
        .await;
        assert_eq!(found(&env).await, vec![]);
    })
    .await;
}

#[tokio::test]
async fn the_library_policy_rewritten_is_reported() {
    let Some(mut env) = sandbox("audit::altered_policy", ScopeMode::Shared).await else {
        return;
    };
    env.tenant("r", Strategy::Shared).await.unwrap();
    guarded(env, &[], |env| async move {
        assert_eq!(found(&env).await, vec![], "clean setup");
        let expected = [(
            Weakness::PolicyAltered,
            policy(&env, "notes", "saas_tenant_isolation"),
        )];

        admin(
            &env,
            "ALTER POLICY saas_tenant_isolation ON notes USING (true)",
        )
        .await;
        assert_found(&found(&env).await, &expected);
        env.tenancy.setup().await.unwrap();
        assert_eq!(found(&env).await, vec![], "setup() restores it");

        admin(
            &env,
            "ALTER POLICY saas_tenant_isolation ON notes WITH CHECK (true)",
        )
        .await;
        assert_found(&found(&env).await, &expected);
        env.tenancy.setup().await.unwrap();

        // The same expression, for SELECT only: writes are no longer checked
        // by it (and it is not what setup() creates).
        admin(&env, "DROP POLICY saas_tenant_isolation ON notes").await;
        admin(
            &env,
            &format!(
                "CREATE POLICY saas_tenant_isolation ON notes FOR SELECT USING (tenant_id = {})",
                saas_tenancy::postgres::current_tenant_expr()
            ),
        )
        .await;
        assert_found(&found(&env).await, &expected);
        env.tenancy.setup().await.unwrap();
        assert_eq!(found(&env).await, vec![]);
    })
    .await;
}

#[tokio::test]
async fn undeclared_tenant_data_the_runtime_role_reaches_is_reported() {
    let Some(mut env) = sandbox("audit::undeclared", ScopeMode::Shared).await else {
        return;
    };
    env.tenant("r", Strategy::Shared).await.unwrap();
    let other = saas_tenancy::testing::unique_name("saas_other");
    let undo = [format!("DROP SCHEMA IF EXISTS \"{other}\" CASCADE")];
    guarded(env, &undo, |env| async move {
        assert_eq!(found(&env).await, vec![], "clean setup");
        let rt = env.runtime_role.clone();
        let shared = env.shared_schema.clone();
        let table = |schema: &str, table: &str| {
            (
                Weakness::UndeclaredTenantTable,
                AuditObject::Table {
                    schema: schema.to_owned(),
                    table: table.to_owned(),
                },
            )
        };

        // RLS enabled, but with an open policy of its own.
        admin(&env, "CREATE TABLE stray (tenant_id uuid, secret text)").await;
        admin(&env, "ALTER TABLE stray ENABLE ROW LEVEL SECURITY").await;
        admin(&env, "CREATE POLICY open ON stray USING (true)").await;
        admin(&env, &format!("GRANT SELECT ON stray TO \"{rt}\"")).await;
        assert_found(&found(&env).await, &[table(&shared, "stray")]);
        admin(&env, "DROP TABLE stray").await;

        // In another schema, even under a declared table's name; `private`
        // is out of the runtime role's reach and not reported.
        admin(&env, &format!("CREATE SCHEMA \"{other}\"")).await;
        admin(
            &env,
            &format!("GRANT USAGE ON SCHEMA \"{other}\" TO \"{rt}\""),
        )
        .await;
        admin(
            &env,
            &format!("CREATE TABLE \"{other}\".notes (tenant_id uuid, secret text)"),
        )
        .await;
        admin(
            &env,
            &format!("CREATE TABLE \"{other}\".private (tenant_id uuid)"),
        )
        .await;
        admin(
            &env,
            &format!("GRANT SELECT ON \"{other}\".notes TO \"{rt}\""),
        )
        .await;
        assert_found(&found(&env).await, &[table(&other, "notes")]);
        admin(&env, &format!("DROP SCHEMA \"{other}\" CASCADE")).await;

        // A view runs as its owner, who is not subject to the table's RLS.
        admin(&env, "CREATE VIEW all_notes AS SELECT * FROM notes").await;
        admin(&env, &format!("GRANT SELECT ON all_notes TO \"{rt}\"")).await;
        assert_found(&found(&env).await, &[table(&shared, "all_notes")]);
        admin(&env, "DROP VIEW all_notes").await;
        assert_eq!(found(&env).await, vec![]);
    })
    .await;
}
