//! Transaction pooling: row and schema tenants served through a real
//! PgBouncer in `pool_mode = transaction` (`SAAS_TEST_PGBOUNCER_URL`,
//! started by `.ci/run`), where consecutive transactions of one client
//! run on different server connections and every server connection
//! serves every client — and the configurations the builder refuses.

use std::sync::Arc;
use std::time::Duration;

use saas_core::{TenantContext, TenantId, TenantSlug};
use saas_tenancy::postgres::{PgClusterConfig, PgTenancy, ScopeMode, SqlIdent};
use saas_tenancy::testing::leak::run_leak_harness;
use saas_tenancy::testing::pg::PgSandbox;
use saas_tenancy::testing::pg_leak::PgLeakTarget;
use saas_tenancy::{ClusterName, DynCatalog, InMemoryCatalog, Strategy, TenancyError};
use saas_test_support::{Service, service_url};
use sqlx::postgres::PgConnectOptions;

/// A sandbox behind the PgBouncer (two runtime connections, so that each
/// client's transactions meet the server connections others used).
async fn pooled_sandbox(test: &str, clients: u32) -> Option<PgSandbox> {
    let url = service_url(Service::Postgres, test)?;
    let pooler = service_url(Service::PgBouncer, test)?;
    Some(
        PgSandbox::behind_transaction_pooler(&url, &pooler, clients)
            .await
            .unwrap(),
    )
}

/// The leak harness through PgBouncer: tenants with these placements,
/// `leak::cases()` cases (at least 1,000).
fn harness_through_pgbouncer(strategies: &[Strategy]) {
    let runtime = crate::fixtures::harness_runtime();
    let test = format!("pg_bouncer::leak::{strategies:?}");
    let Some(mut env) = runtime.block_on(pooled_sandbox(&test, 2)) else {
        return;
    };
    assert!(env.tenancy.transaction_pooling());
    let tenants = runtime.block_on(async {
        let mut tenants = Vec::new();
        for (slug, strategy) in crate::leak::SLUGS.into_iter().zip(strategies) {
            tenants.push(env.tenant(slug, *strategy).await.unwrap());
        }
        tenants
    });
    let ident = |s: &str| SqlIdent::new(s).unwrap();
    let target = PgLeakTarget::new(
        env.tenancy.clone(),
        env.cluster.clone(),
        &ident("notes"),
        &ident("tenant_id"),
        &ident("id"),
        &ident("body"),
    );
    let cases = crate::leak::cases();
    let result = run_leak_harness(runtime.handle(), Arc::new(target), tenants, cases);
    runtime.block_on(env.cleanup());
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// Two tenants of every placement: row and schema tenants on the same
/// server connections (a row tenant's neighbour shares its table), and
/// database tenants beside them (their pools connect to PostgreSQL
/// directly) — at least 1,000 cases, so per placement.
#[test]
fn every_placement_never_leaks_through_pgbouncer() {
    harness_through_pgbouncer(&crate::leak::EVERY_PLACEMENT);
}

/// sqlx prepares every statement under a name of its own counter; behind
/// PgBouncer another client's transaction may find that name taken on its
/// server connection. Many clients, many distinct statements, few server
/// connections: every transaction still runs, and sees only its tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_never_meet_another_client() {
    let Some(mut env) = pooled_sandbox("pg_bouncer::prepared", 6).await else {
        return;
    };
    let a = env.tenant("stmt-a", Strategy::Shared).await.unwrap();
    let b = env.tenant("stmt-b", Strategy::Schema).await.unwrap();
    crate::pg_env::add_note(&env, &a, "a").await;
    crate::pg_env::add_note(&env, &b, "b").await;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..6 {
        let tenancy = env.tenancy.clone();
        let (ctx, body) = if client % 2 == 0 {
            (a.clone(), "a")
        } else {
            (b.clone(), "b")
        };
        tasks.spawn(async move {
            for round in 0..40_i64 {
                let mut tx = tenancy.begin(&ctx).await.unwrap();
                // Distinct texts: each is prepared anew under a new name.
                for k in 0..3_i64 {
                    let sql = format!("SELECT body FROM notes WHERE id > $1 - {k} - {round}");
                    let bodies: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .bind(0_i64)
                        .fetch_all(&mut *tx)
                        .await
                        .unwrap();
                    assert_eq!(bodies, [body], "client {client} round {round}");
                }
                tx.commit().await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    env.cleanup().await;
}

/// A scope a transaction leaves at session level (raw SQL) never reaches
/// the next transaction of another tenant, whatever server connection
/// PgBouncer gives it.
#[tokio::test]
async fn a_session_level_scope_left_behind_never_reaches_another_tenant() {
    let Some(mut env) = pooled_sandbox("pg_bouncer::session_scope", 1).await else {
        return;
    };
    let a = env.tenant("sess-a", Strategy::Shared).await.unwrap();
    let b = env.tenant("sess-b", Strategy::Shared).await.unwrap();
    crate::pg_env::add_note(&env, &a, "secret of a").await;
    for _ in 0..5 {
        let mut tx = env.tenancy.begin(&a).await.unwrap();
        let set = format!(
            "SELECT set_config('saas.tenant_id', '{}', false)",
            a.tenant_id()
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(set))
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut tx = env.tenancy.begin(&b).await.unwrap();
        let seen: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert!(seen.is_empty(), "tenant b read {seen:?}");
        tx.commit().await.unwrap();
    }
    env.cleanup().await;
}

fn catalog() -> DynCatalog {
    Arc::new(InMemoryCatalog::default())
}

fn cluster() -> PgClusterConfig {
    PgClusterConfig::new(
        ClusterName::new("main").unwrap(),
        "postgres://admin@127.0.0.1:1/app".parse().unwrap(),
        SqlIdent::new("app_runtime").unwrap(),
    )
}

fn pooler(user: &str) -> PgConnectOptions {
    format!("postgres://{user}@127.0.0.1:2/app")
        .parse()
        .unwrap()
}

fn refused(result: Result<PgTenancy, TenancyError>, says: &str) {
    match result {
        Err(TenancyError::InvalidInput(message)) => {
            assert!(message.contains(says), "{message}");
        }
        other => panic!("expected InvalidInput mentioning {says:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_pooler_without_transaction_pooling_is_refused() {
    let config = cluster().with_transaction_pooler(pooler("app_runtime"));
    refused(
        PgTenancy::builder(catalog()).cluster(config).build(),
        "transaction_pooling(true)",
    );
}

#[tokio::test]
async fn transaction_pooling_refuses_what_needs_a_session() {
    let config = || cluster().with_transaction_pooler(pooler("app_runtime"));
    let pooled = || {
        PgTenancy::builder(catalog())
            .cluster(config())
            .transaction_pooling(true)
    };
    refused(
        pooled().scope_mode(ScopeMode::TenantPools).build(),
        "TenantPools",
    );
    refused(
        pooled()
            .connection_affinity(Duration::from_millis(500))
            .build(),
        "affinity",
    );
    // A zero window is what the mode uses anyway.
    pooled()
        .connection_affinity(Duration::ZERO)
        .build()
        .unwrap();
    let wrong_user = cluster().with_transaction_pooler(pooler("someone_else"));
    refused(
        PgTenancy::builder(catalog())
            .cluster(wrong_user)
            .transaction_pooling(true)
            .build(),
        "runtime role",
    );
    let with_options =
        cluster().with_transaction_pooler(pooler("app_runtime").options([("search_path", "app")]));
    refused(
        PgTenancy::builder(catalog())
            .cluster(with_options)
            .transaction_pooling(true)
            .build(),
        "startup `options`",
    );
}

#[tokio::test]
async fn acquire_is_refused_in_transaction_pooling_mode() {
    let tenancy = PgTenancy::builder(catalog())
        .cluster(cluster().with_transaction_pooler(pooler("app_runtime")))
        .transaction_pooling(true)
        .build()
        .unwrap();
    let ctx = TenantContext::new(TenantId::new(), TenantSlug::parse("acq").unwrap());
    match tenancy.acquire(&ctx).await {
        Err(TenancyError::Unsupported(message)) => assert!(message.contains("begin()")),
        other => panic!("acquire was not refused: {other:?}"),
    }
}
