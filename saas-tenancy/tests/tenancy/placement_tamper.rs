//! A catalog record pointed at another tenant's storage — `UPDATE
//! saas_tenants SET strategy = 'schema', object_name = '<B's schema>'
//! WHERE id = <A>` — must not give A's handles B's rows, nor let an
//! operation on A act on B's storage: schema and database names derive
//! from the tenant id, and anything else is refused with a typed error.

use saas_core::TenantContext;
use saas_tenancy::postgres::ScopeMode;
use saas_tenancy::testing::pg::PgSandbox;
use saas_tenancy::testing::sqlite::SqliteSandbox;
use saas_tenancy::{AuditObject, Strategy, TenancyError, Weakness};
use sqlx::{AssertSqlSafe, SqlitePool};

use crate::pg_env::{add_note, quoted_object_name, sandbox};

/// A derived name as the catalog stores it (derived names need no quotes).
fn unquoted(quoted: &str) -> String {
    quoted.trim_matches('"').to_owned()
}

fn refused<T: std::fmt::Debug>(result: Result<T, TenancyError>, what: &str) {
    match result {
        Err(TenancyError::PlacementNotDerived { .. }) => {}
        other => panic!("{what}: expected PlacementNotDerived, got {other:?}"),
    }
}

/// Points `a`'s record at `strategy`/`object` as an attacker with write
/// access to the catalog would, and checks every way in refuses it.
async fn tampered_record_is_refused(
    env: &PgSandbox,
    a: &TenantContext,
    strategy: &str,
    object: &str,
    what: &str,
) {
    sqlx::query("UPDATE saas_tenants SET strategy = $1, object_name = $2 WHERE id = $3")
        .bind(strategy)
        .bind(object)
        .bind(a.tenant_id())
        .execute(&env.admin)
        .await
        .unwrap();
    env.tenancy.forget_record(a.tenant_id());
    refused(env.tenancy.begin(a).await, &format!("{what}: begin"));
    refused(env.tenancy.acquire(a).await, &format!("{what}: acquire"));
    refused(
        env.tenancy.delete_tenant(a.tenant_id()).await,
        &format!("{what}: delete_tenant"),
    );
    refused(
        env.tenancy.export_tenant(a.tenant_id()).await,
        &format!("{what}: export_tenant"),
    );
    refused(
        env.tenancy
            .set_status(a.tenant_id(), saas_core::TenantStatus::Suspended)
            .await,
        &format!("{what}: set_status"),
    );
    let findings = env.tenancy.audit().await.unwrap();
    let reported = findings.iter().any(|f| {
        f.weakness == Weakness::PlacementNotDerived
            && matches!(&f.object, Some(AuditObject::Placement { tenant, found, .. })
                if *tenant == a.tenant_id() && found == object)
    });
    assert!(reported, "{what}: audit did not report it: {findings:?}");
}

async fn pg_placement_is_checked(mode: ScopeMode) {
    let test = format!("placement_tamper::{mode:?}");
    let Some(mut env) = sandbox(&test, mode).await else {
        return;
    };
    let row = env.tenant("tamper-row", Strategy::Shared).await.unwrap();
    let a = env.tenant("tamper-a", Strategy::Schema).await.unwrap();
    let b = env.tenant("tamper-b", Strategy::Schema).await.unwrap();
    let da = env.tenant("tamper-da", Strategy::Database).await.unwrap();
    let db = env.tenant("tamper-db", Strategy::Database).await.unwrap();
    for (ctx, body) in [(&b, "b-secret"), (&db, "db-secret")] {
        add_note(&env, ctx, body).await;
    }
    let b_schema = unquoted(&quoted_object_name(&env, &b).await);
    let b_database = unquoted(&quoted_object_name(&env, &db).await);
    tampered_record_is_refused(&env, &row, "schema", &b_schema, "row → B's schema").await;
    tampered_record_is_refused(&env, &a, "schema", &b_schema, "schema → B's schema").await;
    tampered_record_is_refused(&env, &da, "database", &b_database, "database → B's").await;
    // B's storage is untouched and still served.
    for (ctx, body) in [(&b, "b-secret"), (&db, "db-secret")] {
        let mut tx = env.tenancy.begin(ctx).await.unwrap();
        let seen: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(seen, vec![body.to_owned()]);
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_placement_pointed_elsewhere_is_refused_shared_mode() {
    pg_placement_is_checked(ScopeMode::Shared).await;
}

#[tokio::test]
async fn a_placement_pointed_elsewhere_is_refused_tenant_pools() {
    pg_placement_is_checked(ScopeMode::TenantPools).await;
}

#[tokio::test]
async fn a_sqlite_placement_pointed_at_another_tenant_file_is_refused() {
    let env = SqliteSandbox::new().await.unwrap();
    let a = env.tenant("file-a", Strategy::Database).await.unwrap();
    let b = env.tenant("file-b", Strategy::Database).await.unwrap();
    let row = env.tenant("file-row", Strategy::Shared).await.unwrap();
    let b_file = env
        .tenancy
        .catalog()
        .get(b.tenant_id())
        .await
        .unwrap()
        .unwrap()
        .placement
        .object_name()
        .unwrap()
        .as_str()
        .to_owned();
    let catalog = SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new().filename(env.dir.join("catalog.sqlite")),
    )
    .await
    .unwrap();
    for (ctx, what) in [(&a, "file → B's file"), (&row, "row → B's file")] {
        sqlx::query(AssertSqlSafe(
            "UPDATE saas_tenants SET strategy = 'database', object_name = ? WHERE id = ?",
        ))
        .bind(&b_file)
        .bind(ctx.tenant_id())
        .execute(&catalog)
        .await
        .unwrap();
        refused(env.tenancy.acquire(ctx).await, &format!("{what}: acquire"));
        refused(env.tenancy.begin(ctx).await, &format!("{what}: begin"));
        refused(
            env.tenancy.delete_tenant(ctx.tenant_id()).await,
            &format!("{what}: delete_tenant"),
        );
    }
    let findings = env.tenancy.audit().await.unwrap();
    let tampered = findings
        .iter()
        .filter(|f| f.weakness == Weakness::PlacementNotDerived)
        .count();
    assert_eq!(tampered, 2, "audit: {findings:?}");
    // B's file is still there and served.
    assert!(env.tenancy.acquire(&b).await.is_ok());
    catalog.close().await;
    env.cleanup().await;
}
