//! `audit()` on the tenants themselves: deleted tenants are not inspected,
//! a tenant without its storage is a finding (not an error), and any role
//! beyond the expected ones reaching a tenant is reported by name.

use saas_core::TenantStatus;
use saas_tenancy::postgres::{ScopeMode, Weakness};
use saas_tenancy::testing::pg::PgSandbox;
use saas_tenancy::{NewTenant, Strategy, TenantObjectName};
use sqlx::{AssertSqlSafe, Executor};

use crate::pg_env::sandbox;

async fn admin(env: &PgSandbox, sql: String) {
    env.admin.execute(AssertSqlSafe(sql)).await.unwrap();
}

#[tokio::test]
async fn deleted_tenants_are_skipped_and_missing_storage_is_a_finding() {
    let Some(mut env) = sandbox("audit::deleted", ScopeMode::Shared).await else {
        return;
    };
    let schema = env.tenant("s", Strategy::Schema).await.unwrap();
    let database = env.tenant("d", Strategy::Database).await.unwrap();
    let row = env.tenant("r", Strategy::Shared).await.unwrap();
    assert_eq!(env.tenancy.audit().await.unwrap(), vec![], "clean setup");

    for id in [schema.tenant_id(), database.tenant_id(), row.tenant_id()] {
        env.tenancy.delete_tenant(id).await.unwrap();
    }
    // The schema, role and database are gone: inspecting them would fail.
    assert_eq!(
        env.tenancy.audit().await.unwrap(),
        vec![],
        "deleted tenants are not reported"
    );

    // A provision cut short after the catalog row: no schema yet.
    let crashed = NewTenant::new(
        saas_core::TenantSlug::parse("crashed").unwrap(),
        "C",
        Strategy::Schema,
        env.cluster.clone(),
    )
    .unwrap();
    let record = env.tenancy.catalog().create(crashed).await.unwrap();
    assert_eq!(record.status, TenantStatus::Provisioning);
    let findings = env.tenancy.audit().await.unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].weakness, Weakness::TenantStorageMissing);
    assert!(findings[0].subject.contains(&record.id.to_string()));
    assert!(findings[0].fix.contains("retry_provisioning"));

    // Finished, it is clean; deleted, it is skipped.
    env.tenancy.retry_provisioning(record.id).await.unwrap();
    assert_eq!(env.tenancy.audit().await.unwrap(), vec![]);
    env.tenancy.delete_tenant(record.id).await.unwrap();
    assert_eq!(env.tenancy.audit().await.unwrap(), vec![]);
    env.cleanup().await;
}

#[tokio::test]
async fn another_role_reaching_a_tenant_is_reported_by_name() {
    let Some(mut env) = sandbox("audit::roles", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("a", Strategy::Schema).await.unwrap();
    let b = env.tenant("b", Strategy::Schema).await.unwrap();
    let d = env.tenant("d", Strategy::Database).await.unwrap();
    assert_eq!(env.tenancy.audit().await.unwrap(), vec![], "clean setup");
    let a_name = TenantObjectName::for_tenant(a.tenant_id());
    let b_name = TenantObjectName::for_tenant(b.tenant_id());
    let d_name = TenantObjectName::for_tenant(d.tenant_id());

    // Tenant b's role (named like its schema) may use tenant a's schema.
    admin(
        &env,
        format!(
            "GRANT USAGE ON SCHEMA {} TO {}",
            a_name.quoted(),
            b_name.quoted()
        ),
    )
    .await;
    let findings = env.tenancy.audit().await.unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].weakness, Weakness::ReachableByOtherRole);
    assert!(
        findings[0].subject.contains(a_name.as_str()),
        "{findings:?}"
    );
    assert!(
        findings[0].subject.contains(b_name.as_str()),
        "{findings:?}"
    );
    admin(
        &env,
        format!(
            "REVOKE USAGE ON SCHEMA {} FROM {}",
            a_name.quoted(),
            b_name.quoted()
        ),
    )
    .await;
    assert_eq!(env.tenancy.audit().await.unwrap(), vec![]);

    // The same role may connect to the tenant database.
    admin(
        &env,
        format!(
            "GRANT CONNECT ON DATABASE {} TO {}",
            d_name.quoted(),
            b_name.quoted()
        ),
    )
    .await;
    let findings = env.tenancy.audit().await.unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].weakness, Weakness::ReachableByOtherRole);
    assert!(
        findings[0].subject.contains(d_name.as_str()),
        "{findings:?}"
    );
    assert!(
        findings[0].subject.contains(b_name.as_str()),
        "{findings:?}"
    );
    admin(
        &env,
        format!(
            "REVOKE CONNECT ON DATABASE {} FROM {}",
            d_name.quoted(),
            b_name.quoted()
        ),
    )
    .await;
    assert_eq!(env.tenancy.audit().await.unwrap(), vec![]);
    env.cleanup().await;
}
