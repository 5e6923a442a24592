//! The online copy of moves that replication cannot carry (see `plan.rs`:
//! both sides in one database, or table names that differ): triggers on
//! the source record the key of every row of the tenant written after
//! they were installed, the rows are copied while the tenant keeps
//! writing, then the recorded keys are replayed — the target's row with
//! that key deleted and the source's current row, if there is one,
//! inserted — round after round until few are left. Under the fence only
//! the last rounds run, so the write window no longer grows with the
//! tenant.
//!
//! Why it converges: a change committed before the triggers were
//! installed is in the copy's snapshot (creating a trigger waits for the
//! writes in flight on its table); every later one left a key. Replaying
//! a key reads the source's row as it is *now*, so replaying a key twice,
//! out of order or after the copy already had its row changes nothing;
//! a key is deleted from the log only after its replay committed on the
//! target, and by its id (a change committed late, with a smaller id than
//! keys already replayed, is still found). Once the fence has stopped the
//! tenant's writes and the log is empty, the target holds the source's
//! rows.
//!
//! The log and the move's trigger functions (one per table, reading the
//! key columns only) live in schema `saas_tenancy_capture` of the source
//! database, owned by the admin: the functions run as their owner
//! (`SECURITY DEFINER`, fixed `search_path`), so the tenant's roles, which
//! write the rows, need no privilege on the log — and cannot read or
//! change it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use saas_core::TenantId;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use super::plan::Table;
use crate::error::TenancyError;
use crate::postgres::sql::quote_ident;

/// Keys replayed per round (one target transaction).
const BATCH: i64 = 2_000;

/// Before the fence, rounds go on until one finds at most this many keys:
/// what is left is replayed under the fence in one or two rounds.
pub(super) const SETTLED: usize = 200;

/// The log and its index, created once per source database.
const SETUP: &str = "CREATE SCHEMA IF NOT EXISTS saas_tenancy_capture; \
    REVOKE ALL ON SCHEMA saas_tenancy_capture FROM PUBLIC; \
    CREATE TABLE IF NOT EXISTS saas_tenancy_capture.changes ( \
        id bigserial PRIMARY KEY, move_id uuid NOT NULL, relid oid NOT NULL, key jsonb NOT NULL); \
    CREATE INDEX IF NOT EXISTS changes_move ON saas_tenancy_capture.changes (move_id, id)";

/// The dollar-quote tag of the trigger functions' bodies.
const BODY: &str = "$saas_capture$";

/// A source table and what its replay needs.
pub(super) struct Captured<'a> {
    source: &'a Table,
    target: &'a Table,
    relid: i64,
    key: Vec<String>,
    columns: Vec<String>,
}

/// The key columns of `table`: its primary key, else its replica
/// identity index; a table with neither cannot have its changes replayed.
pub(super) async fn key_columns(
    conn: &mut PgConnection,
    table: &Table,
) -> Result<Vec<String>, TenancyError> {
    let key: Option<Vec<String>> = sqlx::query_scalar(
        "SELECT array_agg(a.attname::text ORDER BY k.ord) \
         FROM pg_index i \
         CROSS JOIN LATERAL unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) \
             WITH ORDINALITY AS k(attnum, ord) \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
         WHERE i.indrelid = $1::text::regclass AND (i.indisprimary OR i.indisreplident) \
         GROUP BY i.indexrelid, i.indisprimary ORDER BY i.indisprimary DESC LIMIT 1",
    )
    .bind(table.qualified())
    .fetch_optional(&mut *conn)
    .await?;
    key.filter(|k| !k.is_empty())
        .ok_or_else(|| TenancyError::NoReplicaIdentity {
            table: table.qualified(),
        })
}

/// Reads what replaying `pairs` needs: each source table's oid and key,
/// each target table's columns.
pub(super) async fn prepare<'a>(
    src: &mut PgConnection,
    dst: &mut PgConnection,
    pairs: &[(&'a Table, &'a Table)],
) -> Result<Vec<Captured<'a>>, TenancyError> {
    let mut captured = Vec::with_capacity(pairs.len());
    for (source, target) in pairs {
        let relid: i64 = sqlx::query_scalar("SELECT $1::text::regclass::oid::int8")
            .bind(source.qualified())
            .fetch_one(&mut *src)
            .await?;
        captured.push(Captured {
            source,
            target,
            relid,
            key: key_columns(src, source).await?,
            columns: super::copy::columns(dst, target).await?,
        });
    }
    Ok(captured)
}

/// `…_a_old` sorts before `…_b_new`: see `install`.
fn trigger(move_id: uuid::Uuid, side: &str) -> String {
    let order = if side == "old" { "a" } else { "b" };
    format!("saas_mv_{}_{order}_{side}", move_id.simple())
}

async fn trigger_exists(
    conn: &mut PgConnection,
    table: &Table,
    name: &str,
) -> Result<bool, TenancyError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_trigger \
         WHERE tgrelid = $1::text::regclass AND tgname = $2)",
    )
    .bind(table.qualified())
    .bind(name)
    .fetch_one(&mut *conn)
    .await?)
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Creates the log (once per database) and the move's two triggers on
/// each source table, if missing. Each DDL statement waits at most half a
/// second for the table's lock (writes in flight on a shared table are
/// waited for; a long transaction would queue every writer behind the
/// waiting trigger), and is tried again for up to `wait`.
pub(super) async fn install(
    src: &mut PgConnection,
    move_id: uuid::Uuid,
    tables: &[Captured<'_>],
    tenant: TenantId,
    wait: Duration,
) -> Result<(), TenancyError> {
    let mut tx = src.begin().await?;
    // Two movers creating the log at once would collide.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('saas_tenancy_capture'))")
        .await?;
    tx.execute(SETUP).await?;
    tx.commit().await?;
    for table in tables {
        let s = table.source;
        let function = function(move_id, table.relid);
        src.execute(AssertSqlSafe(capture_function(
            &function, move_id, &table.key,
        )?))
        .await?;
        // Triggers of one event fire in name order: the old key is logged
        // before the new one, so a round that takes an update's first key
        // deletes the old row before it inserts the new.
        for (side, events, row) in [
            ("old", "UPDATE OR DELETE", "OLD"),
            ("new", "INSERT OR UPDATE", "NEW"),
        ] {
            let name = trigger(move_id, side);
            if trigger_exists(src, s, &name).await? {
                continue;
            }
            let when = match &s.column {
                Some(c) => format!(" WHEN ({row}.{} = '{tenant}'::uuid)", quote_ident(c)),
                None => String::new(),
            };
            let statement = format!(
                "CREATE TRIGGER {} AFTER {events} ON {} FOR EACH ROW{when} \
                 EXECUTE FUNCTION {function}({})",
                quote_ident(&name),
                s.qualified(),
                literal(side)
            );
            ddl(src, &statement, wait).await?;
        }
    }
    Ok(())
}

/// The trigger function of one source table of a move, schema-qualified.
fn function(move_id: uuid::Uuid, relid: i64) -> String {
    format!(
        "saas_tenancy_capture.{}",
        quote_ident(&format!("mv_{}_{relid}", move_id.simple()))
    )
}

/// The trigger function that logs the key of the row written (`NEW`, or
/// `OLD` for the trigger whose argument says `old`), built from the key
/// columns alone: the rest of the row, however large, is not read. It
/// runs as its owner, the admin (`SECURITY DEFINER`, fixed
/// `search_path`): the tenant's roles write the rows but hold no
/// privilege on the log.
fn capture_function(
    function: &str,
    move_id: uuid::Uuid,
    key: &[String],
) -> Result<String, TenancyError> {
    let key_of = |row: &str| {
        key.iter()
            .map(|k| format!("{}, {row}.{}", literal(k), quote_ident(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (new, old) = (key_of("NEW"), key_of("OLD"));
    if new.contains(BODY) || old.contains(BODY) {
        return Err(TenancyError::InvalidInput(format!(
            "a key column's name contains {BODY}, which quotes the capture trigger's body; \
             rename the column to move this tenant"
        )));
    }
    Ok(format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql \
         SECURITY DEFINER SET search_path = pg_catalog SET standard_conforming_strings = on \
         AS {BODY} \
         BEGIN \
             IF TG_ARGV[0] = 'new' THEN \
                 INSERT INTO saas_tenancy_capture.changes (move_id, relid, key) \
                 VALUES ('{move_id}'::uuid, TG_RELID, jsonb_build_object({new})); \
             ELSE \
                 INSERT INTO saas_tenancy_capture.changes (move_id, relid, key) \
                 VALUES ('{move_id}'::uuid, TG_RELID, jsonb_build_object({old})); \
             END IF; \
             RETURN NULL; \
         END {BODY}; \
         REVOKE ALL ON FUNCTION {function}() FROM PUBLIC"
    ))
}

/// Runs one DDL statement with a short lock timeout, again until `wait`.
async fn ddl(conn: &mut PgConnection, statement: &str, wait: Duration) -> Result<(), TenancyError> {
    let deadline = super::deadline(wait);
    loop {
        let mut tx = conn.begin().await?;
        tx.execute("SET LOCAL lock_timeout = '500ms'").await?;
        match tx.execute(AssertSqlSafe(statement)).await {
            Ok(_) => {
                tx.commit().await?;
                return Ok(());
            }
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("55P03") && Instant::now() < deadline =>
            {
                tx.rollback().await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// How long dropping a trigger retries for its table's lock.
const DROP_WAIT: Duration = Duration::from_secs(60);

/// Drops the move's triggers and its keys left in the log, if there.
pub(super) async fn remove(
    src: &mut PgConnection,
    move_id: uuid::Uuid,
    tables: &[Table],
) -> Result<(), TenancyError> {
    let logged: bool =
        sqlx::query_scalar("SELECT to_regclass('saas_tenancy_capture.changes') IS NOT NULL")
            .fetch_one(&mut *src)
            .await?;
    if !logged {
        return Ok(());
    }
    for table in tables {
        for side in ["new", "old"] {
            let name = trigger(move_id, side);
            if trigger_exists(src, table, &name).await? {
                let statement = format!(
                    "DROP TRIGGER {} ON {}",
                    quote_ident(&name),
                    table.qualified()
                );
                ddl(src, &statement, DROP_WAIT).await?;
            }
        }
    }
    let functions: Vec<String> = sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_proc p \
         JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = 'saas_tenancy_capture' AND p.proname LIKE $1",
    )
    .bind(format!("mv\\_{}\\_%", move_id.simple()))
    .fetch_all(&mut *src)
    .await?;
    for function in functions {
        // Named by PostgreSQL (`regprocedure`), quoted where needed.
        src.execute(AssertSqlSafe(format!("DROP FUNCTION IF EXISTS {function}")))
            .await?;
    }
    sqlx::query("DELETE FROM saas_tenancy_capture.changes WHERE move_id = $1")
        .bind(move_id)
        .execute(&mut *src)
        .await?;
    Ok(())
}

/// Replays rounds of recorded keys until one finds at most `settled`
/// (0: the log is empty), or fails after `deadline`; returns the keys
/// replayed.
pub(super) async fn drain(
    src: &mut PgConnection,
    dst: &mut PgConnection,
    move_id: uuid::Uuid,
    tables: &[Captured<'_>],
    tenant: TenantId,
    settled: usize,
    deadline: Instant,
) -> Result<u64, TenancyError> {
    let mut replayed = 0;
    loop {
        let n = round(src, dst, move_id, tables, tenant).await?;
        replayed += n as u64;
        if n <= settled {
            return Ok(replayed);
        }
        if Instant::now() >= deadline {
            return Err(TenancyError::Timeout(format!(
                "the tenant's changes kept coming faster than the move replays them ({n} \
                 keys in the last round); resume the move at a quieter moment"
            )));
        }
    }
}

/// One round: up to [`BATCH`] keys read from the log, replayed on the
/// target in one transaction, then deleted from the log by id.
async fn round(
    src: &mut PgConnection,
    dst: &mut PgConnection,
    move_id: uuid::Uuid,
    tables: &[Captured<'_>],
    tenant: TenantId,
) -> Result<usize, TenancyError> {
    let logged: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT id, relid::int8, key::text FROM saas_tenancy_capture.changes \
         WHERE move_id = $1 ORDER BY id LIMIT $2",
    )
    .bind(move_id)
    .bind(BATCH)
    .fetch_all(&mut *src)
    .await?;
    if logged.is_empty() {
        return Ok(0);
    }
    let mut keys: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
    for (_, relid, key) in &logged {
        keys.entry(*relid).or_default().insert(key.as_str());
    }
    // The source's current rows, read before the target's transaction
    // opens (a change after this read left a key for the next round).
    let mut replays = Vec::with_capacity(keys.len());
    for table in tables {
        let Some(keys) = keys.get(&table.relid) else {
            continue;
        };
        let keys = format!("[{}]", keys.iter().copied().collect::<Vec<_>>().join(","));
        let rows: String = sqlx::query_scalar(AssertSqlSafe(format!(
            // A semi-join: one key logged in two spellings (a time zone,
            // a case-insensitive text) still reads its row once.
            "SELECT coalesce(jsonb_agg(to_jsonb(s)), '[]')::text FROM {src} s \
             WHERE EXISTS (SELECT 1 FROM jsonb_populate_recordset(NULL::{src}, $1::jsonb) k \
                           WHERE {on}){tenant}",
            src = table.source.qualified(),
            on = matching(&table.key, "s", "k"),
            tenant = tenant_filter(table.source, "s", tenant),
        )))
        .bind(&keys)
        .fetch_one(&mut *src)
        .await?;
        replays.push((table, keys, rows));
    }
    let mut tx = dst.begin().await?;
    tx.execute("SET LOCAL session_replication_role = replica")
        .await?;
    for (table, keys, rows) in &replays {
        let t = table.target.qualified();
        tx.execute(
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {t} t USING jsonb_populate_recordset(NULL::{t}, $1::jsonb) k \
                 WHERE {on}{tenant}",
                on = matching(&table.key, "t", "k"),
                tenant = tenant_filter(table.target, "t", tenant),
            )))
            .bind(keys),
        )
        .await?;
        let columns = table
            .columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let select = super::copy::select_list(&table.columns, table.target, tenant);
        tx.execute(
            sqlx::query(AssertSqlSafe(format!(
                // The source's keys, also into a `GENERATED ALWAYS`
                // identity (as `COPY` writes them).
                "INSERT INTO {t} ({columns}) OVERRIDING SYSTEM VALUE SELECT {select} \
                 FROM jsonb_populate_recordset(NULL::{t}, $1::jsonb)"
            )))
            .bind(rows),
        )
        .await?;
    }
    tx.commit().await?;
    let ids: Vec<i64> = logged.iter().map(|(id, _, _)| *id).collect();
    sqlx::query("DELETE FROM saas_tenancy_capture.changes WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *src)
        .await?;
    Ok(logged.len())
}

/// `a.k1 = b.k1 AND a.k2 = b.k2 …` over the key columns.
fn matching(key: &[String], a: &str, b: &str) -> String {
    key.iter()
        .map(|c| {
            let c = quote_ident(c);
            format!("{a}.{c} = {b}.{c}")
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// ` AND <alias>.<tenant column> = '<tenant>'` on a shared table: a key
/// of the tenant's own tables may be another tenant's key there.
fn tenant_filter(table: &Table, alias: &str, tenant: TenantId) -> String {
    match &table.column {
        Some(c) => format!(" AND {alias}.{} = '{tenant}'::uuid", quote_ident(c)),
        None => String::new(),
    }
}
