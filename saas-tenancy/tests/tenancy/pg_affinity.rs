//! Tenant affinity on the shared runtime pool (`ScopeMode::Shared`): a
//! finished handle's connection is kept for its tenant and taken again by
//! that tenant's next handle, which only sets its scope. What must hold:
//! the reuse really happens; the next handle runs as its tenant and holds
//! the handle lock whatever raw SQL left, and meets only what is
//! documented (the tenant's own session state); another tenant meets a
//! kept connection only through the full reset; a transaction refuses a
//! kept connection left in a transaction or out of step, and a
//! rolled-back one is never kept; the window and a deletion bound how
//! long a connection stays kept.

use std::time::Duration;

use saas_core::TenantContext;
use saas_tenancy::postgres::{PgTenancy, ScopeMode};
use saas_tenancy::{Placement, Strategy, TenancyError};
use sqlx::{AssertSqlSafe, Executor, PgConnection};

use crate::pg_cancel::settle;
use crate::pg_env::{add_note, insert_note, sandbox};
use crate::pg_session_state::leftovers;

async fn pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Waits until `n` connections are kept (the reset before keeping runs
/// in a task of its own).
async fn wait_kept(tenancy: &PgTenancy, n: usize) {
    for _ in 0..1000 {
        if tenancy.kept_connections() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no connection was kept within 5 s");
}

async fn run_all(conn: &mut PgConnection, statements: &[String]) {
    for sql in statements {
        conn.execute(AssertSqlSafe(sql.clone())).await.unwrap();
    }
}

/// Session-level state honest or buggy code may leave (the names
/// `leftovers` looks for), plus `role`: a role raw SQL switches to, which
/// must never outlive its handle.
fn session_state(tenant: &TenantContext, in_transaction: bool, role: &str) -> Vec<String> {
    let mut sql = vec![
        "SET saas_attack.mark = 'left'".to_owned(),
        "SET TIME ZONE 'Pacific/Chatham'".to_owned(),
        "LISTEN saas_affinity".to_owned(),
        "SELECT pg_advisory_lock(4343, 1)".to_owned(),
        "CREATE TEMP TABLE IF NOT EXISTS attack_stage AS SELECT 1 AS x".to_owned(),
        // Sequence state: `lastval()` works afterwards.
        format!(
            "INSERT INTO notes (tenant_id, body) VALUES ('{}', 'own-note')",
            tenant.tenant_id()
        ),
    ];
    if in_transaction {
        sql.push("DECLARE kept_cursor CURSOR WITH HOLD FOR SELECT 1".to_owned());
    }
    sql.push(format!("SET ROLE {role}"));
    sql
}

/// How the first handle ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    Commit,
    DropConnection,
}

/// Whether the handle runs as its tenant: the login role for a row
/// tenant, the schema's role on its own schema for a schema tenant.
async fn runs_as_its_tenant(conn: &mut PgConnection, schema_tenant: bool) -> bool {
    let sql = if schema_tenant {
        "SELECT current_user::text = current_schema()::text"
    } else {
        "SELECT current_user = session_user"
    };
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

/// A tenant's next handle gets the connection kept for it and sets only
/// its scope (in its `BEGIN`, or a prepared statement): it runs as its
/// tenant and holds the handle lock, whatever role raw SQL switched to and
/// whatever advisory locks it took, and otherwise meets the session as
/// the tenant's last handle left it (settings, listeners, temporary
/// objects, cursors, sequence state), as on a tenant pool — documented,
/// and never another tenant's (see
/// `a_kept_connection_reaches_another_tenant_only_through_the_full_reset`).
#[tokio::test]
async fn a_tenants_next_handle_reuses_its_connection() {
    let Some(mut env) = sandbox("affinity::reuse", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("kept-a", Strategy::Shared).await.unwrap();
    let s = env.tenant("kept-s", Strategy::Schema).await.unwrap();
    let schema_role = {
        let conn = env.tenancy.acquire(&s).await.unwrap();
        match conn.placement() {
            Placement::Schema { schema, .. } => schema.quoted(),
            other => panic!("a schema tenant placed at {other:?}"),
        }
    };
    for ctx in [&a, &s] {
        let schema_tenant = ctx.tenant_id() == s.tenant_id();
        // A row tenant's raw SQL switches to the schema tenant's role; the
        // schema tenant's back to the login role.
        let role = if schema_tenant { "NONE" } else { &schema_role };
        for ending in [Ending::Commit, Ending::DropConnection] {
            for next_in_transaction in [true, false] {
                settle(&env).await;
                let first = match ending {
                    Ending::DropConnection => {
                        let mut conn = env.tenancy.acquire(ctx).await.unwrap();
                        run_all(&mut conn, &session_state(ctx, false, role)).await;
                        pid(&mut conn).await
                    }
                    Ending::Commit => {
                        let mut tx = env.tenancy.begin(ctx).await.unwrap();
                        run_all(&mut tx, &session_state(ctx, true, role)).await;
                        let p = pid(&mut tx).await;
                        tx.commit().await.unwrap();
                        p
                    }
                };
                wait_kept(&env.tenancy, 1).await;
                let (again, handle_lock, own_role, left) = if next_in_transaction {
                    let mut tx = env.tenancy.begin(ctx).await.unwrap();
                    let found = (
                        pid(&mut tx).await,
                        holds_handle_lock(&mut tx, ctx).await,
                        runs_as_its_tenant(&mut tx, schema_tenant).await,
                        leftovers(&mut tx, Some(ctx.tenant_id())).await,
                    );
                    tx.commit().await.unwrap();
                    found
                } else {
                    let mut conn = env.tenancy.acquire(ctx).await.unwrap();
                    (
                        pid(&mut conn).await,
                        holds_handle_lock(&mut conn, ctx).await,
                        runs_as_its_tenant(&mut conn, schema_tenant).await,
                        leftovers(&mut conn, Some(ctx.tenant_id())).await,
                    )
                };
                let what = format!(
                    "{} after {ending:?}, next in a transaction: {next_in_transaction}",
                    ctx.slug()
                );
                assert_eq!(
                    again, first,
                    "{what}: the next handle did not get the kept connection"
                );
                let expected: Vec<&str> = match ending {
                    Ending::DropConnection => vec![
                        "custom setting",
                        "time zone",
                        "listener",
                        "temporary table",
                        "sequence state",
                    ],
                    Ending::Commit => vec![
                        "custom setting",
                        "time zone",
                        "listener",
                        "held cursor",
                        "temporary table",
                        "sequence state",
                    ],
                };
                assert_eq!(left, expected, "{what}: the session the next handle met");
                assert!(own_role, "{what}: the handle does not run as its tenant");
                // Session advisory locks are released before the scope
                // takes the handle lock again.
                assert!(handle_lock, "{what}: the handle holds no handle lock");
                settle(&env).await;
            }
        }
    }
    env.cleanup().await;
}

async fn holds_handle_lock(conn: &mut PgConnection, ctx: &TenantContext) -> bool {
    let (k1, k2) = saas_tenancy::postgres::handle_lock_key(ctx.tenant_id());
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
         AND pid = pg_backend_pid() AND objsubid = 2 AND mode = 'ShareLock' \
         AND classid::int8 = $1 AND objid::int8 = $2)",
    )
    .bind(i64::from(k1.cast_unsigned()))
    .bind(i64::from(k2.cast_unsigned()))
    .fetch_one(conn)
    .await
    .unwrap()
}

/// A rolled-back connection is never kept: it goes through the full
/// reset, which closes one with statements prepared by SQL.
#[tokio::test]
async fn a_rolled_back_transaction_is_not_kept() {
    let Some(mut env) = sandbox("affinity::rollback", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("roll-a", Strategy::Shared).await.unwrap();
    settle(&env).await;
    let mut tx = env.tenancy.begin(&a).await.unwrap();
    run_all(&mut tx, &["PREPARE rolled_back AS SELECT 1".to_owned()]).await;
    let first = pid(&mut tx).await;
    tx.rollback().await.unwrap();
    assert_eq!(
        env.tenancy.kept_connections(),
        0,
        "a rolled-back connection was kept"
    );
    let mut tx = env.tenancy.begin(&a).await.unwrap();
    assert_ne!(pid(&mut tx).await, first, "the connection was reused");
    let left = leftovers(&mut tx, Some(a.tenant_id())).await;
    assert!(left.is_empty(), "met {left:?}");
    drop(tx);
    env.cleanup().await;
}

/// Tenant A leaves session state and replaces sqlx's cached statements
/// on a connection kept for it; the pool is then exhausted (C holds the
/// other connection), so B's checkout must hand A's kept connection back
/// — and B meets it only after the full reset, or a new connection.
#[tokio::test]
async fn a_kept_connection_reaches_another_tenant_only_through_the_full_reset() {
    let Some(mut env) = sandbox("affinity::handback", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("hand-a", Strategy::Shared).await.unwrap();
    let b = env.tenant("hand-b", Strategy::Schema).await.unwrap();
    let c = env.tenant("hand-c", Strategy::Shared).await.unwrap();
    add_note(&env, &a, "a-secret").await;
    add_note(&env, &b, "b-own").await;
    for replace_statements in [false, true] {
        // Every connection idle: A's may be kept when it commits.
        settle(&env).await;
        // A: session state, and (second round) its cached read replaced
        // by one that exfiltrates whatever the next user can read.
        let kept = {
            let mut tx = env.tenancy.begin(&a).await.unwrap();
            sqlx::query("SELECT body FROM notes")
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            let mut sql = vec![
                "SET saas_attack.mark = 'a'".to_owned(),
                format!(
                    "SELECT set_config('saas.tenant_id', '{}', false)",
                    a.tenant_id()
                ),
            ];
            if replace_statements {
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM pg_prepared_statements \
                     WHERE statement = 'SELECT body FROM notes'",
                )
                .fetch_all(&mut *tx)
                .await
                .unwrap();
                assert!(!names.is_empty(), "sqlx cached no statement to replace");
                for name in names {
                    sql.push(format!("DEALLOCATE \"{name}\""));
                    sql.push(format!(
                        "PREPARE \"{name}\" AS SELECT 'forged by a'::text AS body"
                    ));
                }
            }
            run_all(&mut tx, &sql).await;
            let p = pid(&mut tx).await;
            tx.commit().await.unwrap();
            p
        };
        wait_kept(&env.tenancy, 1).await;
        let mut held = env.tenancy.begin(&c).await.unwrap();
        let c_pid = pid(&mut held).await;
        assert_ne!(c_pid, kept, "C got A's kept connection");
        // B, with the pool exhausted: A's connection is handed back first.
        let mut tx = env.tenancy.begin(&b).await.unwrap();
        let b_pid = pid(&mut tx).await;
        let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(
            bodies,
            vec!["b-own".to_owned()],
            "replaced: {replace_statements}"
        );
        let setting: Option<String> =
            sqlx::query_scalar("SELECT NULLIF(current_setting('saas.tenant_id', true), '')")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(
            setting, None,
            "B (a schema tenant) ran with a tenant setting"
        );
        let left = leftovers(&mut tx, Some(b.tenant_id())).await;
        assert!(
            left.is_empty(),
            "B met {left:?} (replaced: {replace_statements})"
        );
        if replace_statements {
            // Statements prepared by SQL: the full reset closes it.
            assert_ne!(
                b_pid, kept,
                "B got the connection whose statements A replaced"
            );
        } else {
            // Only resettable state: the full reset made it B's.
            assert_eq!(
                b_pid, kept,
                "A's kept connection was not handed back to the pool"
            );
        }
        tx.commit().await.unwrap();
        held.commit().await.unwrap();
        settle(&env).await;
    }
    env.cleanup().await;
}

/// A transaction cannot run on a kept connection where raw SQL left a
/// transaction open on a `PgTenantConn` (its `BEGIN` would only warn) or
/// left the exchange out of step (a refused raw COPY): its `BEGIN` round
/// trip fails, the kept connection is closed and the transaction runs on
/// a pool connection. The tenant's next handles work either way.
#[tokio::test]
async fn a_transaction_takes_another_connection_where_one_was_left_open() {
    let Some(mut env) = sandbox("affinity::undoable", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("undo-a", Strategy::Shared).await.unwrap();
    let s = env.tenant("undo-s", Strategy::Schema).await.unwrap();
    for ctx in [&a, &s] {
        for (what, sql) in [("a transaction left open", "BEGIN"), ("a refused COPY", "")] {
            settle(&env).await;
            let first = {
                let mut conn = env.tenancy.acquire(ctx).await.unwrap();
                let p = pid(&mut conn).await;
                if sql.is_empty() {
                    let refused = conn
                        .copy_out_raw("COPY pg_catalog.pg_authid TO STDOUT")
                        .await
                        .is_err();
                    assert!(refused, "COPY of pg_authid was not refused");
                } else {
                    conn.execute(sql).await.unwrap();
                }
                p
            };
            wait_kept(&env.tenancy, 1).await;
            let mut tx = env.tenancy.begin(ctx).await.unwrap();
            insert_note(&mut tx, ctx, what).await;
            let again = pid(&mut tx).await;
            tx.commit().await.unwrap();
            assert_ne!(again, first, "{what}: the kept connection was reused");
            wait_gone(&env.admin, first).await;
            let mut conn = env.tenancy.acquire(ctx).await.unwrap();
            insert_note(&mut conn, ctx, what).await;
            drop(conn);
            settle(&env).await;
        }
        // Every note written went through and is visible to a new handle.
        let mut conn = env.tenancy.acquire(ctx).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(n, 4, "{}", ctx.slug());
    }
    env.cleanup().await;
}

/// Session transaction characteristics raw SQL set stay with their
/// tenant's kept connection (documented: as on a tenant pool), and never
/// reach another tenant: handed back, the connection goes through the
/// full reset.
#[tokio::test]
async fn session_characteristics_stay_with_their_tenant() {
    let Some(mut env) = sandbox("affinity::characteristics", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("chars-a", Strategy::Shared).await.unwrap();
    let b = env.tenant("chars-b", Strategy::Shared).await.unwrap();
    settle(&env).await;
    let first = {
        let mut conn = env.tenancy.acquire(&a).await.unwrap();
        conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            .await
            .unwrap();
        pid(&mut conn).await
    };
    wait_kept(&env.tenancy, 1).await;
    {
        let mut tx = env.tenancy.begin(&a).await.unwrap();
        assert_eq!(
            pid(&mut tx).await,
            first,
            "the kept connection was not reused"
        );
        let (_, read_only) = characteristics(&mut tx).await;
        assert_eq!(read_only, "on", "the tenant's own setting");
        tx.commit().await.unwrap();
    }
    wait_kept(&env.tenancy, 1).await;
    assert_eq!(env.tenancy.release_kept_connections(), 1);
    settle(&env).await;
    for _ in 0..4 {
        let mut tx = env.tenancy.begin(&b).await.unwrap();
        let (isolation, read_only) = characteristics(&mut tx).await;
        assert_eq!(
            (isolation.as_str(), read_only.as_str()),
            ("read committed", "off")
        );
        insert_note(&mut tx, &b, "writable").await;
        tx.commit().await.unwrap();
    }
    env.cleanup().await;
}

/// Waits until the server session `pid` has ended (10 s at most).
async fn wait_gone(admin: &sqlx::PgPool, pid: i32) {
    for _ in 0..200 {
        let alive: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                .bind(pid)
                .fetch_one(admin)
                .await
                .unwrap();
        if !alive {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("session {pid} outlived its connection by 10 s");
}

async fn characteristics(conn: &mut PgConnection) -> (String, String) {
    sqlx::query_as(
        "SELECT current_setting('transaction_isolation'), \
         current_setting('transaction_read_only')",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

/// Statements raw SQL prepared stay with their tenant while its
/// connection is kept (documented), and no longer than the window: then
/// the connection goes through the full reset, which closes it.
#[tokio::test]
async fn what_raw_sql_prepared_stays_with_its_tenant_for_the_window_only() {
    let Some(mut env) = sandbox("affinity::window", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("window-a", Strategy::Shared).await.unwrap();
    let tenancy = env
        .tenancy_with(|b| b.connection_affinity(Duration::from_millis(200)))
        .unwrap();
    let first = {
        let mut conn = tenancy.acquire(&a).await.unwrap();
        run_all(
            &mut conn,
            &["PREPARE kept_statement AS SELECT 1".to_owned()],
        )
        .await;
        pid(&mut conn).await
    };
    wait_kept(&tenancy, 1).await;
    {
        let mut conn = tenancy.acquire(&a).await.unwrap();
        assert_eq!(pid(&mut conn).await, first, "the connection was not kept");
        let left = leftovers(&mut conn, Some(a.tenant_id())).await;
        assert_eq!(left, vec!["prepared statement".to_owned()]);
    }
    // The sweeper hands it back after the window; the reset closes it.
    wait_gone(&env.admin, first).await;
    let mut conn = tenancy.acquire(&a).await.unwrap();
    let left = leftovers(&mut conn, Some(a.tenant_id())).await;
    assert!(left.is_empty(), "met {left:?} after the window");
    drop(conn);
    tenancy.release_kept_connections();
    env.cleanup().await;
}

/// A kept session handle's connection holds its tenant's handle lock; a
/// deletion hands the tenant's kept connections back instead of waiting
/// its grace period (an hour here) for them.
#[tokio::test]
async fn a_deletion_hands_back_the_tenants_kept_connections() {
    let Some(mut env) = sandbox("affinity::delete", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("gone-a", Strategy::Schema).await.unwrap();
    let tenancy = env
        .tenancy_with(|b| b.deletion_grace(Duration::from_secs(3600)))
        .unwrap();
    {
        let mut conn = tenancy.acquire(&a).await.unwrap();
        insert_note(&mut conn, &a, "a-note").await;
    }
    let deleted = tokio::time::timeout(
        Duration::from_secs(60),
        tenancy.delete_tenant(a.tenant_id()),
    )
    .await
    .expect("the deletion waited for a kept connection")
    .unwrap();
    assert_eq!(deleted.status, saas_core::TenantStatus::Deleted);
    assert!(matches!(
        tenancy.acquire(&a).await,
        Err(TenancyError::TenantNotServable { .. })
    ));
    env.cleanup().await;
}

#[tokio::test]
async fn a_window_longer_than_ten_seconds_is_refused() {
    let catalog: saas_tenancy::DynCatalog = std::sync::Arc::new(
        saas_tenancy::InMemoryCatalog::new(std::sync::Arc::new(saas_core::SystemClock)),
    );
    let config = saas_tenancy::postgres::PgClusterConfig::new(
        saas_tenancy::ClusterName::new("main").unwrap(),
        "postgres://localhost/x".parse().unwrap(),
        saas_tenancy::postgres::SqlIdent::new("rt").unwrap(),
    );
    let build = |window| {
        saas_tenancy::postgres::PgTenancy::builder(std::sync::Arc::clone(&catalog))
            .cluster(config.clone())
            .connection_affinity(window)
            .build()
    };
    assert!(matches!(
        build(Duration::from_secs(11)),
        Err(TenancyError::InvalidInput(_))
    ));
    assert!(build(Duration::from_secs(10)).is_ok());
    assert!(build(Duration::ZERO).is_ok());
}
