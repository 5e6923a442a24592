//! Session-level state that hostile or buggy raw SQL leaves on a scoped
//! handle's connection — settings, role, search path, transaction
//! characteristics, prepared statements, listeners, advisory locks, held
//! cursors, temporary tables, sequence state, a failed COPY — must never
//! reach the next user of that connection: another tenant on a shared
//! runtime connection (ScopeMode::Shared), plain use of the runtime pool,
//! or the same tenant's next request on its own pool (TenantPools).

use saas_core::{TenantContext, TenantId};
use saas_tenancy::Strategy;
use saas_tenancy::postgres::{ScopeMode, handle_lock_key};
use saas_tenancy::testing::pg::PgSandbox;
use sqlx::{AssertSqlSafe, Executor, PgConnection};

use crate::pg_cancel::settle;
use crate::pg_env::{add_note, quoted_object_name, sandbox};

/// How the attacking tenant reaches its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Transaction,
    Connection,
}

const BOTH: [Via; 2] = [Via::Transaction, Via::Connection];

/// Runs `statements` through two handles of `ctx` held at once (the
/// runtime pool has two connections, so both get them), committing the
/// transactions; `statements` may name the connection's own prepared
/// statements, so it is built per connection.
async fn on_both_connections<F>(env: &PgSandbox, ctx: &TenantContext, via: Via, statements: F)
where
    F: AsyncFn(&mut PgConnection) -> Vec<String>,
{
    match via {
        Via::Transaction => {
            let mut held = Vec::new();
            for _ in 0..2 {
                let mut tx = env.tenancy.begin(ctx).await.unwrap();
                for sql in statements(&mut tx).await {
                    tx.execute(AssertSqlSafe(sql)).await.unwrap();
                }
                held.push(tx);
            }
            for tx in held {
                tx.commit().await.unwrap();
            }
        }
        Via::Connection => {
            let mut held = Vec::new();
            for _ in 0..2 {
                let mut conn = env.tenancy.acquire(ctx).await.unwrap();
                for sql in statements(&mut conn).await {
                    conn.execute(AssertSqlSafe(sql)).await.unwrap();
                }
                held.push(conn);
            }
        }
    }
    settle(env).await;
}

/// What a session shows of state left by earlier users, as names. The
/// handle lock a scoped handle of `own` holds itself (see
/// `postgres::handle_lock_key`) is its own state, not a leftover.
pub(crate) async fn leftovers(conn: &mut PgConnection, own: Option<TenantId>) -> Vec<String> {
    // `pg_locks` shows the two int4 keys as unsigned oids; -1 matches none.
    let (k1, k2) = own.map_or((-1, -1), |id| {
        let (k1, k2) = handle_lock_key(id);
        (i64::from(k1.cast_unsigned()), i64::from(k2.cast_unsigned()))
    });
    let found: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT CASE WHEN current_setting('saas_attack.mark', true) <> '' \
                THEN 'custom setting' END \
         UNION ALL SELECT CASE WHEN setting <> reset_val THEN 'time zone' END \
                FROM pg_settings WHERE name = 'TimeZone' \
         UNION ALL SELECT CASE WHEN current_setting('default_transaction_read_only') = 'on' \
                THEN 'read-only characteristics' END \
         UNION ALL SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_prepared_statements WHERE from_sql) \
                THEN 'prepared statement' END \
         UNION ALL SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_listening_channels()) \
                THEN 'listener' END \
         UNION ALL SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_locks \
                WHERE locktype = 'advisory' AND pid = pg_backend_pid() \
                AND NOT (objsubid = 2 AND mode = 'ShareLock' \
                         AND classid::int8 = $1 AND objid::int8 = $2)) \
                THEN 'advisory lock' END \
         UNION ALL SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_cursors WHERE is_holdable) \
                THEN 'held cursor' END \
         UNION ALL SELECT CASE WHEN to_regclass('pg_temp.attack_stage') IS NOT NULL \
                THEN 'temporary table' END",
    )
    .bind(k1)
    .bind(k2)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let mut found: Vec<String> = found.into_iter().flatten().collect();
    // `lastval()` fails in a session that has not used a sequence since
    // its sequence state was last discarded.
    if sqlx::query("SELECT lastval()")
        .execute(&mut *conn)
        .await
        .is_ok()
    {
        found.push("sequence state".to_owned());
    }
    found
}

/// Tenant `b`'s handles (two at once, both connections) see only `b`'s
/// own scope and rows, and plain use of the runtime pool sees no rows.
async fn next_tenant_is_clean(env: &PgSandbox, b: &TenantContext, what: &str) {
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tx = env.tenancy.begin(b).await.unwrap();
        // Row tenants carry their id in the setting; schema tenants carry
        // none (their scope is the role and the search path).
        let tenant: Option<String> =
            sqlx::query_scalar("SELECT NULLIF(current_setting('saas.tenant_id', true), '')")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        if let Some(tenant) = tenant {
            assert_eq!(tenant, b.tenant_id().to_string(), "{what}: tenant setting");
        }
        let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert!(
            bodies.iter().all(|body| body.starts_with("b-")),
            "{what}: {} read {bodies:?}",
            b.slug()
        );
        let left = leftovers(&mut tx, Some(b.tenant_id())).await;
        assert!(left.is_empty(), "{what}: {} met {left:?}", b.slug());
        held.push(tx);
    }
    drop(held);
    settle(env).await;
    let pool = env.tenancy.runtime_pool(&env.cluster).unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = pool.acquire().await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(seen, 0, "{what}: the runtime pool read tenant rows");
        let user: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(user, env.runtime_role, "{what}: role left");
        let left = leftovers(&mut conn, None).await;
        assert!(left.is_empty(), "{what}: the runtime pool met {left:?}");
        held.push(conn);
    }
}

/// Settings, time zone, transaction characteristics and the tenant
/// setting itself, set at session level by tenant A.
#[tokio::test]
async fn session_settings_never_reach_the_next_tenant() {
    let Some(mut env) = sandbox("session_state::settings", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("set-a", Strategy::Shared).await.unwrap();
    let b = env.tenant("set-b", Strategy::Schema).await.unwrap();
    add_note(&env, &a, "a-secret").await;
    add_note(&env, &b, "b-own").await;
    let id = a.tenant_id();
    for via in BOTH {
        on_both_connections(&env, &a, via, async |_| {
            vec![
                "SET saas_attack.mark = 'a'".to_owned(),
                "SET TIME ZONE 'Pacific/Chatham'".to_owned(),
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY".to_owned(),
                format!("SELECT set_config('saas.tenant_id', '{id}', false)"),
            ]
        })
        .await;
        next_tenant_is_clean(&env, &b, &format!("settings via {via:?}")).await;
        // B can still write: no read-only default was left for it.
        add_note(&env, &b, "b-write").await;
    }
    env.cleanup().await;
}

/// A schema tenant switches role and search path for the whole session;
/// a row tenant's next transaction on that connection must neither read
/// the schema tenant's rows nor write into its schema.
#[tokio::test]
async fn role_and_search_path_never_reach_the_next_tenant() {
    let Some(mut env) = sandbox("session_state::role", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("role-a", Strategy::Schema).await.unwrap();
    let b = env.tenant("role-b", Strategy::Shared).await.unwrap();
    add_note(&env, &a, "a-secret").await;
    let schema = quoted_object_name(&env, &a).await;
    for via in BOTH {
        on_both_connections(&env, &a, via, async |_| {
            vec![
                format!("SET ROLE {schema}"),
                format!("SET search_path TO {schema}"),
            ]
        })
        .await;
        next_tenant_is_clean(&env, &b, &format!("role via {via:?}")).await;
        add_note(&env, &b, "b-own").await;
        let in_schema: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {schema}.notes WHERE body LIKE 'b-%'"
        )))
        .fetch_one(&env.admin)
        .await
        .unwrap();
        assert_eq!(in_schema, 0, "via {via:?}: B's write landed in A's schema");
    }
    env.cleanup().await;
}

/// Prepared statements (SQL `PREPARE`), listeners, session advisory
/// locks, cursors held past commit, temporary tables without `ON COMMIT
/// DROP` and sequence state.
#[tokio::test]
async fn statements_listeners_locks_cursors_and_temp_objects_never_survive() {
    let Some(mut env) = sandbox("session_state::objects", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("obj-a", Strategy::Shared).await.unwrap();
    let b = env.tenant("obj-b", Strategy::Shared).await.unwrap();
    add_note(&env, &a, "a-secret").await;
    for via in BOTH {
        on_both_connections(&env, &a, via, async |_| {
            let mut sql = vec![
                "PREPARE attack_statement AS SELECT body FROM notes".to_owned(),
                "LISTEN attack_channel".to_owned(),
                "SELECT pg_advisory_lock(pg_backend_pid())".to_owned(),
                "CREATE TEMP TABLE IF NOT EXISTS attack_stage AS SELECT body FROM notes".to_owned(),
                "SELECT nextval(pg_get_serial_sequence('notes', 'id'))".to_owned(),
            ];
            if via == Via::Transaction {
                sql.push(
                    "DECLARE attack_cursor CURSOR WITH HOLD FOR SELECT body FROM notes".to_owned(),
                );
            }
            sql
        })
        .await;
        next_tenant_is_clean(&env, &b, &format!("objects via {via:?}")).await;
    }
    env.cleanup().await;
}

/// `DEALLOCATE ALL` removes the statements sqlx has cached for the
/// connection: the next tenant's queries must still run.
#[tokio::test]
async fn deallocating_cached_statements_never_breaks_the_next_tenant() {
    let Some(mut env) = sandbox("session_state::deallocate", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("dealloc-a", Strategy::Shared).await.unwrap();
    let b = env.tenant("dealloc-b", Strategy::Shared).await.unwrap();
    add_note(&env, &b, "b-own").await;
    for via in BOTH {
        on_both_connections(&env, &a, via, async |conn| {
            // Cache the statement the next tenant runs, then drop it.
            sqlx::query("SELECT body FROM notes")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            vec!["DEALLOCATE ALL".to_owned()]
        })
        .await;
        next_tenant_is_clean(&env, &b, &format!("deallocate via {via:?}")).await;
    }
    env.cleanup().await;
}

/// The exfiltration: tenant A replaces the statement sqlx has cached for
/// `SELECT body FROM notes` with one that copies every visible body into
/// a session setting. Tenant B's next query on that connection would run
/// it under B's scope, and A would read B's rows from the setting.
#[tokio::test]
async fn a_replaced_cached_statement_never_runs_for_the_next_tenant() {
    let Some(mut env) = sandbox("session_state::replaced", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("steal-a", Strategy::Shared).await.unwrap();
    let b = env.tenant("steal-b", Strategy::Shared).await.unwrap();
    add_note(&env, &b, "b-secret").await;
    for via in BOTH {
        on_both_connections(&env, &a, via, async |conn| {
            sqlx::query("SELECT body FROM notes")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM pg_prepared_statements \
                 WHERE statement = 'SELECT body FROM notes'",
            )
            .fetch_all(&mut *conn)
            .await
            .unwrap();
            assert!(!names.is_empty(), "sqlx cached no statement to replace");
            names
                .into_iter()
                .flat_map(|name| {
                    [
                        format!("DEALLOCATE \"{name}\""),
                        format!(
                            "PREPARE \"{name}\" AS SELECT set_config('saas_attack.stolen', \
                             coalesce((SELECT string_agg(body, ',') FROM notes), ''), false)"
                        ),
                    ]
                })
                .collect()
        })
        .await;
        // B runs the query on both connections.
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut conn = env.tenancy.acquire(&b).await.unwrap();
            let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            assert_eq!(bodies, vec!["b-secret".to_owned()], "via {via:?}");
            held.push(conn);
        }
        drop(held);
        settle(&env).await;
        // A looks for B's rows in the setting on both connections.
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut conn = env.tenancy.acquire(&a).await.unwrap();
            let stolen: Option<String> =
                sqlx::query_scalar("SELECT current_setting('saas_attack.stolen', true)")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
            assert!(
                !stolen.unwrap_or_default().contains("b-secret"),
                "via {via:?}: A read B's rows through a replaced statement"
            );
            held.push(conn);
        }
        drop(held);
        settle(&env).await;
    }
    env.cleanup().await;
}

/// A refused `COPY … TO STDOUT` (another tenant's schema) and a rollback:
/// the next tenant's transaction on that connection must begin and work.
#[tokio::test]
async fn a_refused_copy_never_breaks_the_next_tenant() {
    let Some(mut env) = sandbox("session_state::copy", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("copy-a", Strategy::Schema).await.unwrap();
    let b = env.tenant("copy-b", Strategy::Schema).await.unwrap();
    add_note(&env, &b, "b-own").await;
    let other = quoted_object_name(&env, &b).await;
    let copy = format!("COPY {other}.notes TO STDOUT");
    for round in 0..2 {
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut tx = env.tenancy.begin(&a).await.unwrap();
            let refused = if round == 0 {
                tx.execute(AssertSqlSafe(copy.clone())).await.is_err()
            } else {
                tx.copy_out_raw(&copy).await.is_err()
            };
            assert!(refused, "round {round}: A copied B's schema");
            held.push(tx);
        }
        // What A's own handle reports after the refusal is A's business.
        for tx in held {
            tx.rollback().await.ok();
        }
        settle(&env).await;
        next_tenant_is_clean(&env, &b, &format!("failed copy, round {round}")).await;
    }
    env.cleanup().await;
}

/// On a tenant's own pool (TenantPools) what raw SQL leaves stays with
/// that tenant's connections: another tenant's requests (its own pool)
/// and plain use of the runtime pool never meet it — even a session-level
/// `SET ROLE` to the other tenant's role (the runtime role is a member of
/// every tenant role) leaves the other tenant's own handles as they were.
#[tokio::test]
async fn what_a_tenant_leaves_on_its_own_pool_stays_there() {
    let Some(mut env) = sandbox("session_state::tenant_pools", ScopeMode::TenantPools).await else {
        return;
    };
    let a = env.tenant("pool-a", Strategy::Schema).await.unwrap();
    let b = env.tenant("pool-b", Strategy::Schema).await.unwrap();
    add_note(&env, &b, "b-own").await;
    let other = quoted_object_name(&env, &b).await;
    for via in BOTH {
        let tampering = [
            format!("SET ROLE {other}"),
            format!("SET search_path TO {other}"),
            "SET saas_attack.mark = 'a'".to_owned(),
            "LISTEN attack_channel".to_owned(),
            "SELECT pg_advisory_lock(pg_backend_pid())".to_owned(),
        ];
        match via {
            Via::Transaction => {
                let mut tx = env.tenancy.begin(&a).await.unwrap();
                assert!(!tx.on_shared_connection());
                for sql in tampering {
                    tx.execute(AssertSqlSafe(sql)).await.unwrap();
                }
                tx.commit().await.unwrap();
            }
            Via::Connection => {
                let mut conn = env.tenancy.acquire(&a).await.unwrap();
                assert!(!conn.on_shared_connection());
                for sql in tampering {
                    conn.execute(AssertSqlSafe(sql)).await.unwrap();
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut conn = env.tenancy.acquire(&b).await.unwrap();
            let user: String = sqlx::query_scalar("SELECT current_user::text")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(format!("\"{user}\""), other, "via {via:?}: B's role");
            let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            assert_eq!(bodies, vec!["b-own".to_owned()], "via {via:?}");
            let mut left = leftovers(&mut conn, Some(b.tenant_id())).await;
            // B's own insert used the sequence on B's own connection.
            left.retain(|what| what != "sequence state");
            assert!(left.is_empty(), "via {via:?}: B met {left:?}");
            held.push(conn);
        }
        drop(held);
        let pool = env.tenancy.runtime_pool(&env.cluster).unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let left = leftovers(&mut conn, None).await;
        assert!(
            left.is_empty(),
            "via {via:?}: the runtime pool met {left:?}"
        );
    }
    env.cleanup().await;
}

/// An ordinary role may set defaults on itself, so raw SQL through any
/// row tenant's handle can run `ALTER ROLE CURRENT_USER SET role = '<a
/// schema tenant's role>'`: every connection the runtime role opens from
/// then on would start as that tenant — in every process, until someone
/// notices. The tenancy's connections name their role in the startup
/// packet, which outranks such a default; `audit` reports it.
#[tokio::test]
async fn a_role_default_set_by_the_runtime_role_is_ignored() {
    let Some(mut env) = sandbox("session_state::role_default", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("default-a", Strategy::Schema).await.unwrap();
    let b = env.tenant("default-b", Strategy::Shared).await.unwrap();
    add_note(&env, &a, "a-secret").await;
    let schema = quoted_object_name(&env, &a).await;
    let mut tx = env.tenancy.begin(&b).await.unwrap();
    for sql in [
        format!("ALTER ROLE CURRENT_USER SET role = {schema}"),
        format!("ALTER ROLE CURRENT_USER SET search_path = {schema}"),
    ] {
        tx.execute(AssertSqlSafe(sql)).await.unwrap();
    }
    tx.commit().await.unwrap();
    // A tenancy whose pools open new connections, in both scope modes.
    for mode in [ScopeMode::Shared, ScopeMode::TenantPools] {
        let tenancy = env
            .tenancy_with(|builder| builder.scope_mode(mode))
            .unwrap();
        let mut tx = tenancy.begin(&b).await.unwrap();
        let (user, bodies): (String, Vec<String>) = (
            sqlx::query_scalar("SELECT current_user::text")
                .fetch_one(&mut *tx)
                .await
                .unwrap(),
            sqlx::query_scalar("SELECT body FROM notes")
                .fetch_all(&mut *tx)
                .await
                .unwrap(),
        );
        assert_eq!(user, env.runtime_role, "{mode:?}: B runs as another role");
        assert!(bodies.is_empty(), "{mode:?}: B read {bodies:?}");
        tx.rollback().await.unwrap();
        let pool = tenancy.runtime_pool(&env.cluster).unwrap();
        let user: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(user, env.runtime_role, "{mode:?}: the runtime pool's role");
    }
    sqlx::query(AssertSqlSafe(format!(
        "ALTER ROLE \"{}\" RESET ALL",
        env.runtime_role
    )))
    .execute(&env.admin)
    .await
    .unwrap();
    env.cleanup().await;
}

/// A `sqlx::Transaction` leaked on a scoped connection after a raw
/// `COMMIT` leaves the server idle but sqlx's transaction depth at one:
/// the next tenant's `begin` on that connection would make a savepoint
/// (or fail). The connection is closed instead of going back.
#[tokio::test]
async fn a_leaked_sqlx_transaction_never_reaches_the_next_tenant() {
    let Some(mut env) = sandbox("session_state::leaked_tx", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("leak-tx-a", Strategy::Shared).await.unwrap();
    let b = env.tenant("leak-tx-b", Strategy::Shared).await.unwrap();
    add_note(&env, &b, "b-own").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = env.tenancy.acquire(&a).await.unwrap();
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        tx.execute("COMMIT").await.unwrap();
        std::mem::forget(tx);
        held.push(conn);
    }
    drop(held);
    settle(&env).await;
    next_tenant_is_clean(&env, &b, "a leaked sqlx transaction").await;
    add_note(&env, &b, "b-write").await;
    env.cleanup().await;
}
