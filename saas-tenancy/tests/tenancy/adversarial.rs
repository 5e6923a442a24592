//! Hostile input against the PostgreSQL tenancy: tampered catalog rows,
//! forged contexts, SQL-shaped names.

use saas_core::{TenantContext, TenantId, TenantSlug};
use saas_tenancy::postgres::ScopeMode;
use saas_tenancy::{Strategy, TenancyError};

use crate::pg_env::sandbox;

#[tokio::test]
async fn a_tampered_object_name_in_the_catalog_is_never_executed() {
    let Some(mut env) = sandbox("adversarial::tampered", ScopeMode::Shared).await else {
        return;
    };
    let victim = env.tenant("victim", Strategy::Schema).await.unwrap();
    let evil = "public\"; DROP SCHEMA public CASCADE; --";
    sqlx::query("UPDATE saas_tenants SET object_name = $1 WHERE id = $2")
        .bind(evil)
        .bind(victim.tenant_id())
        .execute(&env.admin)
        .await
        .unwrap();
    env.tenancy.forget_record(victim.tenant_id());
    let err = env.tenancy.begin(&victim).await.unwrap_err();
    assert!(matches!(err, TenancyError::Corrupt(_)), "{err:?}");
    let public: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public')")
            .fetch_one(&env.admin)
            .await
            .unwrap();
    assert!(public, "the tampered name was executed");
    env.cleanup().await;
}

#[tokio::test]
async fn forged_contexts_get_nothing() {
    let Some(mut env) = sandbox("adversarial::forged", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("a", Strategy::Shared).await.unwrap();
    let b = env.tenant("b", Strategy::Shared).await.unwrap();
    let mut tx = env.tenancy.begin(&b).await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, 'b secret')")
        .bind(b.tenant_id())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // A real slug with an invented id: no such tenant.
    let invented = TenantContext::new(TenantId::new(), b.slug().clone());
    assert!(matches!(
        env.tenancy.begin(&invented).await.unwrap_err(),
        TenancyError::TenantNotFound(_)
    ));
    // A's id with B's slug: the id decides; B's rows stay invisible.
    let mixed = TenantContext::new(a.tenant_id(), b.slug().clone());
    let mut conn = env.tenancy.acquire(&mixed).await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(seen, 0);
    drop(conn);
    env.cleanup().await;
}

#[test]
fn sql_shaped_names_never_reach_sql() {
    assert!(TenantSlug::parse("x\"; drop schema public; --").is_err());
    assert!(saas_tenancy::SqlIdent::new("notes\"; drop table x; --").is_err());
    assert!(saas_tenancy::TenantTable::new("Robert'); DROP TABLE students;--").is_err());
    assert!(saas_tenancy::ClusterName::new("main; drop").is_err());
    // Catalog strings are validated before they are used as names.
    assert!(saas_tenancy::TenantObjectName::parse("t_\"; drop schema public; --").is_err());
}
