//! Moves while 8 writers keep inserting and updating the tenant's rows:
//! every acknowledged write ends on the new placement exactly once, the
//! old placement takes no write after the cut-over (also not from a
//! second process with a warm record cache, with or without the move's
//! notification), and other tenants are untouched.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saas_core::TenantContext;
use saas_tenancy::postgres::{MoveMethod, MoveOptions, MovePhase, PgTenancy, ScopeMode};
use saas_tenancy::{Placement, Strategy};
use saas_test_support::{Service, service_url};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::fixture::env;
use super::writers::{Acked, check_acked, insert, progress, writers};

async fn move_while_writing(
    test: &str,
    from: Strategy,
    on_two: bool,
    to: Strategy,
    to_two: bool,
    method: MoveMethod,
) {
    let plain = ScopeMode::Shared;
    move_while_writing_in(test, from, on_two, to, to_two, method, plain, None).await;
}

/// Moves a tenant of `from` (on server two if `on_two`) to `to` (on two
/// if `to_two`) while 8 writers write, every tenancy in scope mode
/// `mode`, then checks everything the issue asks. With a `login`, the
/// clusters' replication connection info carries it (see
/// `MoveEnv::replication_login`); one asking for TLS, which the mover's
/// own replication connection cannot speak, has PostgreSQL's table sync
/// copy instead.
#[allow(clippy::too_many_arguments)]
async fn move_while_writing_in(
    test: &str,
    from: Strategy,
    on_two: bool,
    to: Strategy,
    to_two: bool,
    method: MoveMethod,
    mode: ScopeMode,
    login: Option<String>,
) {
    let Some(mut env) = env(test).await else {
        return;
    };
    let tls_replication = login
        .as_deref()
        .is_some_and(|l| l.contains("sslmode=require"));
    env.replication_login = login;
    let cluster = |two: bool| {
        if two {
            env.two.name.clone()
        } else {
            env.one.name.clone()
        }
    };
    let mover = env.tenancy_in(Duration::from_secs(1), true, mode);
    // "Other processes" with a warm record cache: one follows moves by
    // notification, one does not (only the lock-out stops it).
    let follower = env.tenancy_in(Duration::from_secs(3600), true, mode);
    let deaf = env.tenancy_in(Duration::from_secs(3600), false, mode);
    let ctx = env.tenant(&mover, "moving", from, &cluster(on_two)).await;
    let neighbours = [
        env.tenant(&mover, "neighbour-one", Strategy::Shared, &env.one.name)
            .await,
        env.tenant(&mover, "neighbour-two", Strategy::Shared, &env.two.name)
            .await,
    ];
    for n in &neighbours {
        for i in 0..5 {
            insert(&mover, n, &format!("neighbour {i}")).await.unwrap();
        }
    }
    let mut before = Vec::new();
    for n in &neighbours {
        before.push(env.stored(&placement(&mover, n).await, n.tenant_id()).await);
    }
    let source = placement(&mover, &ctx).await;
    // Warm both caches.
    insert(&follower, &ctx, "follower warm-up").await.unwrap();
    insert(&deaf, &ctx, "deaf warm-up").await.unwrap();

    let (stop, acked, ops) = Default::default();
    let (stop, acked, ops): (Arc<AtomicBool>, Arc<Mutex<Acked>>, Arc<AtomicUsize>) =
        (stop, acked, ops);
    let tasks = writers(&mover, &ctx, &stop, &acked, &ops);
    progress(&ops, 200).await;
    let phases = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = Arc::clone(&phases);
    let target = Placement::derive(to, cluster(to_two), ctx.tenant_id());
    let report = mover
        .move_tenant(
            ctx.tenant_id(),
            target.clone(),
            MoveOptions::default()
                .keep_source(true)
                .on_progress(move |p| {
                    seen.lock().unwrap().insert(p.phase);
                }),
        )
        .await
        .unwrap();
    progress(&ops, 200).await;
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("{test}: {report:?}");
    assert_eq!(report.method, method);
    if method == MoveMethod::LogicalReplication {
        // Who copied: the mover under the slot's snapshot, or (asked for
        // TLS) PostgreSQL's table sync — either way every write once.
        match &report.copied_by_table_sync {
            Some(why) => assert!(tls_replication && why.contains("TLS"), "{why}"),
            None => assert!(!tls_replication, "the mover cannot speak TLS"),
        }
        assert!(report.initial_copy.is_some());
    }
    assert_eq!(report.to, target);
    assert_eq!(placement(&mover, &ctx).await, target);
    assert!(phases.lock().unwrap().contains(&MovePhase::Fenced));
    assert!(report.phases.iter().any(|(p, _)| *p == MovePhase::Done));

    // Every acknowledged write, exactly once, on the target.
    let on_target = env.stored(&target, ctx.tenant_id()).await;
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.rows.len() > 200, "writers wrote throughout");
    check_acked(&acked, &on_target);
    // The source holds what it held at the fence and nothing later.
    let on_source = env.stored(&source, ctx.tenant_id()).await;
    assert_eq!(
        on_source.len() as u64,
        report.rows["notes"],
        "no row added on the source after the fence"
    );
    let target_ids: BTreeSet<i64> = on_target.iter().map(|(id, _)| *id).collect();
    assert!(on_source.iter().all(|(id, _)| target_ids.contains(id)));

    // A process with a warm cache that follows moves writes to the target;
    // one that does not is refused on the source. The source never changes.
    let mut follower_ok = None;
    for _ in 0..200 {
        if let Ok(id) = insert(&follower, &ctx, "follower after").await {
            follower_ok = Some(id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let id = follower_ok.expect("the follower reaches the new placement");
    assert!(
        env.stored(&target, ctx.tenant_id())
            .await
            .iter()
            .any(|(i, b)| *i == id && b == "follower after")
    );
    // Its first write goes by its stale record and is refused; a failed
    // connection may make it read the catalog again, and then it writes
    // to the target.
    let stale = insert(&deaf, &ctx, "deaf after").await;
    assert!(
        stale.is_err(),
        "a stale process cannot write to the old placement"
    );
    for i in 0..3 {
        let body = format!("deaf after {i}");
        if let Ok(id) = insert(&deaf, &ctx, &body).await {
            let on_target = env.stored(&target, ctx.tenant_id()).await;
            assert!(on_target.iter().any(|(i, b)| *i == id && *b == body));
        }
    }
    assert_eq!(
        env.stored(&source, ctx.tenant_id()).await,
        on_source,
        "old placement unchanged"
    );
    // Other tenants untouched.
    for (neighbour, before) in neighbours.iter().zip(&before) {
        let stored = env
            .stored(&placement(&mover, neighbour).await, neighbour.tenant_id())
            .await;
        assert_eq!(&stored, before, "{} changed", neighbour.slug());
    }
    assert_eq!(env.replication_leftovers().await, 0);
    // New ids continue past the moved ones.
    let max = on_target.iter().map(|(id, _)| *id).max().unwrap_or(0);
    assert!(insert(&mover, &ctx, "after").await.unwrap() > max);
    // The kept source goes when asked; the target stays.
    mover.purge_moved_source(ctx.tenant_id()).await.unwrap();
    let admin = &env.server(source.cluster()).admin;
    let exists = |sql: &'static str, name: String| async move {
        sqlx::query_scalar::<_, bool>(sql)
            .bind(name)
            .fetch_one(admin)
            .await
            .unwrap()
    };
    match &source {
        Placement::Schema { schema, .. } => assert!(
            !exists(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                schema.as_str().to_owned()
            )
            .await
        ),
        Placement::Database { database, .. } => assert!(
            !exists(
                "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                database.as_str().to_owned()
            )
            .await
        ),
        _ => assert!(env.stored(&source, ctx.tenant_id()).await.is_empty()),
    }
    assert!(!env.stored(&target, ctx.tenant_id()).await.is_empty());
    assert!(
        mover.purge_moved_source(ctx.tenant_id()).await.is_err(),
        "nothing left to purge"
    );
    env.cleanup().await;
}

async fn placement(tenancy: &PgTenancy, ctx: &TenantContext) -> Placement {
    tenancy
        .catalog()
        .get(ctx.tenant_id())
        .await
        .unwrap()
        .unwrap()
        .placement
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row_to_row_on_another_server() {
    move_while_writing(
        "moving::row_to_row",
        Strategy::Shared,
        false,
        Strategy::Shared,
        true,
        MoveMethod::LogicalReplication,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_to_database() {
    move_while_writing(
        "moving::schema_to_database",
        Strategy::Schema,
        false,
        Strategy::Database,
        false,
        MoveMethod::LogicalReplication,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_to_row() {
    move_while_writing(
        "moving::database_to_row",
        Strategy::Database,
        false,
        Strategy::Shared,
        false,
        MoveMethod::LogicalReplication,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row_to_schema() {
    move_while_writing(
        "moving::row_to_schema",
        Strategy::Shared,
        false,
        Strategy::Schema,
        false,
        MoveMethod::CapturedCopy,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row_to_database_with_tenant_pools() {
    move_while_writing_in(
        "moving::row_to_database_pools",
        Strategy::Shared,
        false,
        Strategy::Database,
        true,
        MoveMethod::LogicalReplication,
        ScopeMode::TenantPools,
        None,
    )
    .await;
}

/// A row tenant on server one moved to rows on server two by
/// replication, the clusters' replication connection info carrying `login`.
async fn row_to_row_with_replication_login(test: &str, login: String) {
    move_while_writing_in(
        test,
        Strategy::Shared,
        false,
        Strategy::Shared,
        true,
        MoveMethod::LogicalReplication,
        ScopeMode::Shared,
        Some(login),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row_to_row_copied_by_the_table_sync_when_replication_needs_tls() {
    let login = "user=postgres sslmode=require".to_owned();
    row_to_row_with_replication_login("moving::row_to_row_tls", login).await;
}

/// The mover's replication connection logs in with a password, as a
/// role `.ci/run` makes authenticate by SCRAM-SHA-256 (then MD5) — and
/// still copies under the slot's snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row_to_row_with_password_replication_logins() {
    for (role, encryption) in [("saas_pw_scram", "scram-sha-256"), ("saas_pw_md5", "md5")] {
        let Some(password) = password_login(role, encryption).await else {
            return;
        };
        let login = format!("user={role} password='{password}'");
        row_to_row_with_replication_login(&format!("moving::row_to_row_{role}"), login).await;
    }
}

/// Makes `role` a replication login with a fresh password stored by
/// `encryption`, and checks the server asks for it (a wrong password is
/// refused — else the test would prove nothing); `None` when skipped.
async fn password_login(role: &str, encryption: &str) -> Option<String> {
    let url = service_url(Service::Postgres, role)?;
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    let password = uuid::Uuid::new_v4().simple().to_string();
    let create = format!("CREATE ROLE {role} LOGIN REPLICATION");
    if let Err(e) = sqlx::query(AssertSqlSafe(create)).execute(&admin).await {
        // Another run made it first.
        let code = e.as_database_error().and_then(|d| d.code());
        assert_eq!(code.as_deref(), Some("42710"), "{e}");
    }
    let mut conn = admin.acquire().await.unwrap();
    sqlx::query("SELECT set_config('password_encryption', $1, false)")
        .bind(encryption)
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "ALTER ROLE {role} PASSWORD '{password}'"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    let options: PgConnectOptions = url.parse().unwrap();
    let wrong = options.username(role).password("wrong");
    assert!(
        PgConnection::connect_with(&wrong).await.is_err(),
        "the server let {role} in with a wrong password: its pg_hba.conf lacks the lines \
         .ci/run's ensure_password_logins puts first"
    );
    admin.close().await;
    Some(password)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_to_row() {
    move_while_writing(
        "moving::schema_to_row",
        Strategy::Schema,
        false,
        Strategy::Shared,
        false,
        MoveMethod::CapturedCopy,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_to_schema_on_another_server() {
    move_while_writing(
        "moving::schema_to_schema",
        Strategy::Schema,
        false,
        Strategy::Schema,
        true,
        MoveMethod::LogicalReplication,
    )
    .await;
}
