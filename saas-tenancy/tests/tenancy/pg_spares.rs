//! Spare schemas: storage for schema tenants made before sign-up, claimed
//! and renamed by `provision` — each claimed spare serves only its tenant,
//! concurrent sign-ups take different spares, spares of other migrations
//! are never claimed, and dropping them leaves nothing behind.

use std::collections::BTreeSet;

use saas_core::{TenantContext, TenantSlug};
use saas_tenancy::postgres::{PgTenancy, ScopeMode};
use saas_tenancy::testing::pg::{PgSandbox, tenant_migrations};
use saas_tenancy::{NewTenant, Strategy, TenantRecord};
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType};

use crate::pg_env::{add_note, sandbox};

/// The names of this sandbox's spares (spare names are server-wide; other
/// tests' spares are not counted).
async fn spare_names(env: &PgSandbox) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM saas_spare_schemas ORDER BY name")
        .fetch_all(&env.admin)
        .await
        .unwrap()
}

/// A sandbox with `count` spares prepared, and their names.
async fn sandbox_with_spares(test: &str, count: usize) -> Option<(PgSandbox, Vec<String>)> {
    let env = sandbox(test, ScopeMode::Shared).await?;
    let report = env
        .tenancy
        .prepare_spare_schemas(&env.cluster, count)
        .await
        .unwrap();
    assert_eq!((report.created, report.ready), (count, count));
    let names = spare_names(&env).await;
    assert_eq!(names.len(), count);
    Some((env, names))
}

/// The OIDs of the schemas named `names` that exist now.
async fn schema_oids(env: &PgSandbox, names: &[String]) -> BTreeSet<i64> {
    let oids: Vec<i64> =
        sqlx::query_scalar("SELECT oid::int8 FROM pg_namespace WHERE nspname = ANY($1)")
            .bind(names)
            .fetch_all(&env.admin)
            .await
            .unwrap();
    oids.into_iter().collect()
}

/// The OID of a schema tenant's schema.
async fn schema_oid(env: &PgSandbox, record: &TenantRecord) -> i64 {
    let name = record.placement.object_name().unwrap();
    sqlx::query_scalar("SELECT oid::int8 FROM pg_namespace WHERE nspname = $1")
        .bind(name.as_str())
        .fetch_one(&env.admin)
        .await
        .unwrap()
}

async fn record(env: &PgSandbox, ctx: &TenantContext) -> TenantRecord {
    env.tenancy
        .catalog()
        .get(ctx.tenant_id())
        .await
        .unwrap()
        .unwrap()
}

/// Spare rows listed, and schemas and roles named `names`, left.
async fn spares_left(env: &PgSandbox, names: &[String]) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM saas_spare_schemas), \
         (SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)), \
         (SELECT count(*) FROM pg_roles WHERE rolname = ANY($1))",
    )
    .bind(names)
    .fetch_one(&env.admin)
    .await
    .unwrap()
}

/// The notes a tenant's scoped transaction sees.
async fn notes_seen(tenancy: &PgTenancy, ctx: &TenantContext) -> Vec<String> {
    let mut tx = tenancy.begin(ctx).await.unwrap();
    let seen = sqlx::query_scalar("SELECT body FROM notes ORDER BY body")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    seen
}

fn new_tenant(env: &PgSandbox, slug: &str) -> NewTenant {
    NewTenant::new(
        TenantSlug::parse(slug).unwrap(),
        slug.to_uppercase(),
        Strategy::Schema,
        env.cluster.clone(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_takes_a_spare_that_then_serves_only_its_tenant() {
    let Some(mut env) = sandbox("pg_spares::claim", ScopeMode::Shared).await else {
        return;
    };
    let report = env
        .tenancy
        .prepare_spare_schemas(&env.cluster, 2)
        .await
        .unwrap();
    assert_eq!(
        (report.created, report.ready, report.dropped_stale),
        (2, 2, 0)
    );
    let names = spare_names(&env).await;
    let spares = schema_oids(&env, &names).await;
    assert_eq!(spares.len(), 2);
    // Unclaimed, a spare's role is nobody's: the runtime role (and so SQL
    // injected into any handle) cannot SET ROLE to it.
    let members: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid \
         WHERE r.rolname = ANY($1)",
    )
    .bind(&names)
    .fetch_one(&env.admin)
    .await
    .unwrap();
    assert_eq!(members, 0);
    let neighbour = env.tenant("row-neighbour", Strategy::Shared).await.unwrap();
    let mut tx = env.tenancy.begin(&neighbour).await.unwrap();
    let reached = sqlx::query(sqlx::AssertSqlSafe(format!("SET ROLE \"{}\"", names[0])))
        .execute(&mut *tx)
        .await;
    match reached {
        Err(sqlx::Error::Database(e)) => assert_eq!(e.code().as_deref(), Some("42501")),
        other => panic!("a handle reached a spare's role: {other:?}"),
    }
    drop(tx);

    let a = env.tenant("spare-a", Strategy::Schema).await.unwrap();
    let b = env.tenant("spare-b", Strategy::Schema).await.unwrap();
    let (ra, rb) = (record(&env, &a).await, record(&env, &b).await);
    let claimed: BTreeSet<i64> = [schema_oid(&env, &ra).await, schema_oid(&env, &rb).await]
        .into_iter()
        .collect();
    assert_eq!(claimed, spares, "each sign-up renamed a spare");
    assert_eq!(spares_left(&env, &names).await, (0, 0, 0));

    // Crossing: each tenant sees its own note only, in both scope modes
    // (a tenant pool's startup packet names the renamed role).
    add_note(&env, &a, "a's note").await;
    add_note(&env, &b, "b's note").await;
    let pools = env
        .tenancy_with(|builder| builder.scope_mode(ScopeMode::TenantPools))
        .unwrap();
    for tenancy in [&env.tenancy, &pools] {
        assert_eq!(notes_seen(tenancy, &a).await, vec!["a's note".to_owned()]);
        assert_eq!(notes_seen(tenancy, &b).await, vec!["b's note".to_owned()]);
    }
    // A tenant's role reaches no other tenant's schema.
    let b_schema = rb.placement.object_name().unwrap().quoted();
    let mut tx = env.tenancy.begin(&a).await.unwrap();
    let crossed = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM {b_schema}.notes"
    )))
    .fetch_all(&mut *tx)
    .await;
    match crossed {
        Err(sqlx::Error::Database(e)) => assert_eq!(e.code().as_deref(), Some("42501")),
        other => panic!("a reached b's schema: {other:?}"),
    }
    drop(tx);
    // A claimed spare passes the audit like a schema made at sign-up.
    assert_eq!(env.tenancy.audit().await.unwrap(), vec![]);

    // None left: the next sign-up provisions from scratch.
    let c = env.tenant("spare-c", Strategy::Schema).await.unwrap();
    let rc = record(&env, &c).await;
    assert!(!spares.contains(&schema_oid(&env, &rc).await));
    add_note(&env, &c, "c's note").await;
    assert_eq!(
        notes_seen(&env.tenancy, &c).await,
        vec!["c's note".to_owned()]
    );
    drop(pools);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sign_ups_take_different_spares() {
    let Some((mut env, names)) = sandbox_with_spares("pg_spares::concurrent", 3).await else {
        return;
    };
    let spares = schema_oids(&env, &names).await;
    let signups: Vec<_> = (0..4)
        .map(|i| {
            let (tenancy, new) = (env.tenancy.clone(), new_tenant(&env, &format!("race-{i}")));
            tokio::spawn(async move { tenancy.provision(new).await })
        })
        .collect();
    let mut records = Vec::new();
    for signup in signups {
        records.push(signup.await.unwrap().unwrap());
    }
    for r in &records {
        env.track(r.clone());
    }
    let mut schemas = BTreeSet::new();
    for r in &records {
        schemas.insert(schema_oid(&env, r).await);
    }
    assert_eq!(schemas.len(), 4, "four schemas");
    assert_eq!(
        schemas.intersection(&spares).count(),
        3,
        "three were spares"
    );
    assert_eq!(spares_left(&env, &names).await, (0, 0, 0));
    for (i, r) in records.iter().enumerate() {
        let ctx = TenantContext::new(r.id, r.slug.clone());
        add_note(&env, &ctx, &format!("note {i}")).await;
    }
    for (i, r) in records.iter().enumerate() {
        let ctx = TenantContext::new(r.id, r.slug.clone());
        assert_eq!(
            notes_seen(&env.tenancy, &ctx).await,
            vec![format!("note {i}")]
        );
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spares_of_other_migrations_are_never_claimed_and_are_replaced() {
    let Some((mut env, v1_names)) = sandbox_with_spares("pg_spares::stale", 1).await else {
        return;
    };
    let v1_spare = schema_oids(&env, &v1_names).await;
    let mut v2 = tenant_migrations();
    v2.push(Migration::new(
        2,
        "tags".into(),
        MigrationType::Simple,
        "ALTER TABLE notes ADD COLUMN tag text".into_sql_str(),
        false,
    ));
    let newer = env.tenancy_with_migrations(v2).unwrap();

    // A sign-up by the newer tenancy provisions from scratch.
    let fresh = newer.provision(new_tenant(&env, "v2-fresh")).await.unwrap();
    env.track(fresh.clone());
    assert!(!v1_spare.contains(&schema_oid(&env, &fresh).await));
    assert_eq!(spare_names(&env).await, v1_names, "the v1 spare stays");
    assert_eq!(schema_oids(&env, &v1_names).await, v1_spare);

    // Preparing with the newer migrations replaces it.
    let report = newer.prepare_spare_schemas(&env.cluster, 1).await.unwrap();
    assert_eq!(
        (report.dropped_stale, report.created, report.ready),
        (1, 1, 1)
    );
    let v2_names = spare_names(&env).await;
    let v2_spare = schema_oids(&env, &v2_names).await;
    assert_eq!(v2_spare.len(), 1);
    assert!(v2_spare.is_disjoint(&v1_spare));
    assert_eq!(
        spares_left(&env, &v1_names).await,
        (1, 0, 0),
        "the v1 spare is gone"
    );
    let schema = format!("\"{}\"", v2_names[0]);
    let ledger: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM {schema}._sqlx_migrations ORDER BY version"
    )))
    .fetch_all(&env.admin)
    .await
    .unwrap();
    assert_eq!(ledger, vec![1, 2]);

    // …which the next sign-up takes, at v2: the new column is there.
    let claimed = newer.provision(new_tenant(&env, "v2-spare")).await.unwrap();
    env.track(claimed.clone());
    assert_eq!(BTreeSet::from([schema_oid(&env, &claimed).await]), v2_spare);
    let ctx = TenantContext::new(claimed.id, claimed.slug.clone());
    let mut tx = newer.begin(&ctx).await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, body, tag) VALUES ($1, 'tagged', 'x')")
        .bind(ctx.tenant_id())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    drop(newer);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_spares_leaves_no_schema_or_role() {
    let Some(env) = sandbox("pg_spares::drop", ScopeMode::Shared).await else {
        return;
    };
    assert_eq!(
        env.tenancy.drop_spare_schemas(&env.cluster).await.unwrap(),
        0,
        "nothing to drop before any spare was made"
    );
    let report = env
        .tenancy
        .prepare_spare_schemas(&env.cluster, 2)
        .await
        .unwrap();
    assert_eq!(report.created, 2);
    let names = spare_names(&env).await;
    let again = env
        .tenancy
        .prepare_spare_schemas(&env.cluster, 2)
        .await
        .unwrap();
    assert_eq!((again.created, again.ready), (0, 2), "topped up already");
    assert_eq!(
        env.tenancy.drop_spare_schemas(&env.cluster).await.unwrap(),
        2
    );
    assert_eq!(spares_left(&env, &names).await, (0, 0, 0));
    env.cleanup().await;
}

/// v1 of the sandbox's migrations with its text edited: the same version,
/// another checksum (sqlx refuses a ledger that applied the other text).
fn edited_v1() -> Vec<Migration> {
    vec![Migration::new(
        1,
        "notes".into(),
        MigrationType::Simple,
        sqlx::AssertSqlSafe(format!(
            "{}; COMMENT ON TABLE notes IS 'edited'",
            saas_tenancy::testing::pg::NOTES_TENANT
        ))
        .into_sql_str(),
        false,
    )]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_of_an_edited_migration_is_never_claimed() {
    let Some((mut env, names)) = sandbox_with_spares("pg_spares::edited", 1).await else {
        return;
    };
    let edited = env.tenancy_with_migrations(edited_v1()).unwrap();
    let fresh = edited.provision(new_tenant(&env, "edited")).await.unwrap();
    env.track(fresh.clone());
    assert_eq!(spare_names(&env).await, names, "the spare was not claimed");
    let report = edited.prepare_spare_schemas(&env.cluster, 1).await.unwrap();
    assert_eq!((report.dropped_stale, report.created), (1, 1));
    assert_eq!(spares_left(&env, &names).await, (1, 0, 0));
    drop(edited);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_that_cannot_be_claimed_is_dropped_and_the_sign_up_provisions_from_scratch() {
    let Some((mut env, names)) = sandbox_with_spares("pg_spares::broken", 2).await else {
        return;
    };
    // The oldest spare's schema dropped by hand: its rename fails.
    let oldest: String =
        sqlx::query_scalar("SELECT name FROM saas_spare_schemas ORDER BY created_at, name LIMIT 1")
            .fetch_one(&env.admin)
            .await
            .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{oldest}\" CASCADE"
    )))
    .execute(&env.admin)
    .await
    .unwrap();
    let a = env.tenant("after-broken", Strategy::Schema).await.unwrap();
    add_note(&env, &a, "a's note").await;
    assert_eq!(
        notes_seen(&env.tenancy, &a).await,
        vec!["a's note".to_owned()]
    );
    let left = spare_names(&env).await;
    assert_eq!(left.len(), 1, "the broken spare is gone, the other stays");
    assert!(!left.contains(&oldest));
    let role_left: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&oldest)
            .fetch_one(&env.admin)
            .await
            .unwrap();
    assert!(!role_left, "its role is dropped too");
    // The next sign-up takes the good one.
    let b = env
        .tenant("after-broken-b", Strategy::Schema)
        .await
        .unwrap();
    assert!(schema_oids(&env, &left).await.is_empty());
    assert_eq!(spares_left(&env, &names).await.0, 0);
    add_note(&env, &b, "b's note").await;
    assert_eq!(
        notes_seen(&env.tenancy, &b).await,
        vec!["b's note".to_owned()]
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_provisioning_never_claims_over_existing_storage() {
    let Some(mut env) = sandbox("pg_spares::retry", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("retried", Strategy::Schema).await.unwrap();
    let ra = record(&env, &a).await;
    let before = schema_oid(&env, &ra).await;
    add_note(&env, &a, "kept").await;
    env.tenancy
        .prepare_spare_schemas(&env.cluster, 1)
        .await
        .unwrap();
    let names = spare_names(&env).await;
    // As if the process died after the storage committed and before the
    // tenant was marked active.
    sqlx::query("UPDATE saas_tenants SET status = 'provisioning' WHERE id = $1")
        .bind(a.tenant_id())
        .execute(&env.admin)
        .await
        .unwrap();
    env.tenancy.retry_provisioning(a.tenant_id()).await.unwrap();
    assert_eq!(
        schema_oid(&env, &ra).await,
        before,
        "the tenant's own schema"
    );
    assert_eq!(spare_names(&env).await, names, "the spare stays a spare");
    assert_eq!(spares_left(&env, &names).await, (1, 1, 1));
    assert_eq!(notes_seen(&env.tenancy, &a).await, vec!["kept".to_owned()]);
    env.cleanup().await;
}
