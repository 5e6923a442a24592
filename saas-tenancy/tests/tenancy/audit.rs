//! `audit()` reports each isolation weakness, and nothing on a clean setup.

use saas_tenancy::Strategy;
use saas_tenancy::postgres::{ScopeMode, Weakness};
use saas_tenancy::testing::pg::PgSandbox;
use sqlx::{AssertSqlSafe, Executor};

use crate::pg_env::sandbox;

async fn weaknesses(env: &PgSandbox) -> Vec<Weakness> {
    let mut found: Vec<Weakness> = env
        .tenancy
        .audit()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.weakness)
        .collect();
    found.dedup();
    found
}

async fn admin(env: &PgSandbox, sql: String) {
    env.admin.execute(AssertSqlSafe(sql)).await.unwrap();
}

#[tokio::test]
async fn each_weakness_is_reported_and_a_clean_setup_reports_nothing() {
    let Some(mut env) = sandbox("audit::weaknesses", ScopeMode::Shared).await else {
        return;
    };
    let schema = env.tenant("s", Strategy::Schema).await.unwrap();
    let database = env.tenant("d", Strategy::Database).await.unwrap();
    env.tenant("r", Strategy::Shared).await.unwrap();
    assert_eq!(
        env.tenancy.audit().await.unwrap(),
        vec![],
        "a fresh setup is clean"
    );
    let rt = env.runtime_role.clone();

    admin(&env, "ALTER TABLE notes NO FORCE ROW LEVEL SECURITY".into()).await;
    assert_eq!(weaknesses(&env).await, vec![Weakness::RlsNotForced]);
    admin(&env, "ALTER TABLE notes FORCE ROW LEVEL SECURITY".into()).await;

    admin(&env, "ALTER TABLE notes DISABLE ROW LEVEL SECURITY".into()).await;
    assert_eq!(weaknesses(&env).await, vec![Weakness::RlsDisabled]);
    admin(&env, "ALTER TABLE notes ENABLE ROW LEVEL SECURITY".into()).await;

    admin(&env, "DROP POLICY saas_tenant_isolation ON notes".into()).await;
    assert_eq!(weaknesses(&env).await, vec![Weakness::PolicyMissing]);
    env.tenancy.setup().await.unwrap();

    admin(&env, format!("ALTER ROLE \"{rt}\" BYPASSRLS")).await;
    assert_eq!(
        weaknesses(&env).await,
        vec![Weakness::RuntimeRoleBypassesRls]
    );
    admin(&env, format!("ALTER ROLE \"{rt}\" NOBYPASSRLS")).await;

    admin(
        &env,
        "CREATE TABLE stray (tenant_id uuid, secret text)".into(),
    )
    .await;
    assert_eq!(
        weaknesses(&env).await,
        vec![Weakness::UndeclaredTenantTable]
    );
    admin(&env, format!("ALTER TABLE stray OWNER TO \"{rt}\"")).await;
    assert_eq!(
        weaknesses(&env).await,
        vec![
            Weakness::RuntimeRoleOwnsTables,
            Weakness::UndeclaredTenantTable
        ]
    );
    admin(&env, "DROP TABLE stray".into()).await;

    admin(
        &env,
        "CREATE UNIQUE INDEX notes_body_key ON notes (body)".into(),
    )
    .await;
    assert_eq!(
        weaknesses(&env).await,
        vec![Weakness::UniqueKeyWithoutTenant]
    );
    admin(&env, "DROP INDEX notes_body_key".into()).await;

    let s = saas_tenancy::TenantObjectName::for_tenant(schema.tenant_id()).quoted();
    admin(&env, format!("GRANT USAGE ON SCHEMA {s} TO PUBLIC")).await;
    assert_eq!(weaknesses(&env).await, vec![Weakness::ReachableByPublic]);
    admin(&env, format!("REVOKE USAGE ON SCHEMA {s} FROM PUBLIC")).await;

    let d = saas_tenancy::TenantObjectName::for_tenant(database.tenant_id()).quoted();
    admin(&env, format!("GRANT CONNECT ON DATABASE {d} TO PUBLIC")).await;
    assert_eq!(weaknesses(&env).await, vec![Weakness::ReachableByPublic]);
    admin(&env, format!("REVOKE CONNECT ON DATABASE {d} FROM PUBLIC")).await;

    admin(&env, format!("DELETE FROM {s}._sqlx_migrations")).await;
    assert_eq!(weaknesses(&env).await, vec![Weakness::MigrationsBehind]);

    env.cleanup().await;
}
