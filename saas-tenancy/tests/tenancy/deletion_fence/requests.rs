//! The edges of the PostgreSQL fence: a request that read its tenant
//! before the deletion and waited for a connection meanwhile is refused,
//! and an admin role that may not cut held handles gets a typed error
//! naming the grant, with the tenant left `deleting` for a retry.

use std::sync::Arc;

use saas_core::TenantStatus;
use saas_tenancy::postgres::{PgClusterConfig, PgTenancy, ScopeMode, SqlIdent, TenantTable};
use saas_tenancy::{Strategy, TenancyError};
use sqlx::{AssertSqlSafe, Executor};

use super::{
    DELETE_LIMIT, SHORT_GRACE, assert_nothing_remains, assert_refused, delete_within_limit, fenced,
    status, tenancy_for,
};
use crate::pg_env::sandbox;

/// The runtime pool (two connections) is busy with another tenant while
/// a request for the target waits for a connection, its record already
/// read — from the cache, as `active`. The target's deletion starts; when
/// a connection frees up, the waiting request checks the record again and
/// is refused instead of opening a handle that would write after the
/// deletion.
#[tokio::test]
async fn a_request_waiting_for_a_connection_when_the_delete_starts_is_refused() {
    let Some(mut env) = sandbox("fence::waiting", ScopeMode::Shared).await else {
        return;
    };
    let tenancy = tenancy_for(&env, ScopeMode::Shared, Some(SHORT_GRACE));
    let busy = env.tenant("busy", Strategy::Shared).await.unwrap();
    let target = env.tenant("target", Strategy::Shared).await.unwrap();
    let id = target.tenant_id();
    // The target's record is now cached as active.
    tenancy
        .begin(&target)
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    let held = [
        tenancy.begin(&busy).await.unwrap(),
        tenancy.begin(&busy).await.unwrap(),
    ];

    let waiting = tokio::spawn({
        let tenancy = tenancy.clone();
        let target = target.clone();
        async move {
            let mut tx = tenancy.begin(&target).await?;
            sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, 'late')")
                .bind(target.tenant_id())
                .execute(&mut *tx)
                .await
                .map_err(TenancyError::from)?;
            tx.commit().await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let delete = tokio::spawn({
        let tenancy = tenancy.clone();
        async move { tokio::time::timeout(DELETE_LIMIT, tenancy.delete_tenant(id)).await }
    });
    fenced(&env, id).await;
    drop(held);

    let what = "a request waiting for a connection";
    assert_refused(waiting.await.unwrap(), what);
    let deleted = delete.await.unwrap().expect("the delete did not return");
    assert_eq!(deleted.unwrap().status, TenantStatus::Deleted);
    assert_nothing_remains(&env, id, what).await;
    tenancy.runtime_pool(&env.cluster).unwrap().close().await;
    env.cleanup().await;
}

/// An admin role that is not a member of `pg_signal_backend` cannot cut a
/// handle held past the grace: the delete fails with
/// `InsufficientPrivilege` naming the grant, the tenant stays `deleting`
/// and refuses new handles; after the grant, a retry completes it.
#[tokio::test]
async fn without_the_right_to_cut_the_delete_names_the_grant_and_a_retry_completes() {
    let Some(mut env) = sandbox("fence::privilege", ScopeMode::Shared).await else {
        return;
    };
    let weak = saas_tenancy::testing::unique_name("saas_weak_admin");
    let role = format!("\"{weak}\"");
    let shared = format!("\"{}\"", env.shared_schema);
    for sql in [
        format!("CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEROLE"),
        format!("GRANT USAGE ON SCHEMA {shared} TO {role}"),
        format!("GRANT SELECT, DELETE ON ALL TABLES IN SCHEMA {shared} TO {role}"),
    ] {
        env.admin.execute(AssertSqlSafe(sql)).await.unwrap();
    }
    let options = (*env.admin.connect_options()).clone().username(&weak);
    let config = PgClusterConfig::new(
        env.cluster.clone(),
        options,
        SqlIdent::new(env.runtime_role.clone()).unwrap(),
    );
    let tenancy = PgTenancy::builder(Arc::clone(env.tenancy.catalog()))
        .cluster(config)
        .tenant_table(TenantTable::new("notes").unwrap())
        .deletion_grace(SHORT_GRACE)
        .build()
        .unwrap();

    let ctx = env.tenant("held", Strategy::Shared).await.unwrap();
    let id = ctx.tenant_id();
    let insert = "INSERT INTO notes (tenant_id, body) VALUES ($1, 'n')";
    let mut tx = env.tenancy.begin(&ctx).await.unwrap();
    sqlx::query(insert)
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();

    match tokio::time::timeout(DELETE_LIMIT, tenancy.delete_tenant(id)).await {
        Ok(Err(TenancyError::InsufficientPrivilege(message))) => assert!(
            message.contains(&format!("GRANT pg_signal_backend TO {role}")),
            "the error names the grant: {message}"
        ),
        other => panic!("expected InsufficientPrivilege, got {other:?}"),
    }
    assert_eq!(status(&env, id).await, TenantStatus::Deleting);
    assert_refused(tenancy.begin(&ctx).await, "after the refused delete");

    env.admin
        .execute(AssertSqlSafe(format!("GRANT pg_signal_backend TO {role}")))
        .await
        .unwrap();
    delete_within_limit(&tenancy, id, "the retry").await;
    let late = sqlx::query(insert).bind(id).execute(&mut *tx).await;
    assert!(late.is_err(), "the held handle was cut");
    drop(tx);
    assert_nothing_remains(&env, id, "the retry").await;

    drop(tenancy);
    for sql in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        env.admin.execute(AssertSqlSafe(sql)).await.unwrap();
    }
    env.cleanup().await;
}
