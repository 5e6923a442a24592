//! PostgreSQL logical replication for one move: a publication and a
//! logical slot on the source database, a subscription on the target
//! database, all named after the move (`saas_mv_<move id>`).
//!
//! The slot is created by the mover (over a replication connection with
//! an exported snapshot, `walsender.rs`, or else with
//! `pg_create_logical_replication_slot`) and the subscription told not
//! to create one (`create_slot = false`):
//! `CREATE SUBSCRIPTION` creating a slot on its own cluster waits for its
//! own transaction and hangs. For the same reason the subscription is
//! detached from its slot (`slot_name = NONE`) before it is dropped, and
//! the mover drops the slots itself — the main one and any table-sync
//! slot (`pg_<subscription oid>_sync_…`) an interrupted initial copy left.

use std::time::{Duration, Instant};

use saas_core::TenantId;
use sqlx::{AssertSqlSafe, Executor, PgConnection};

use super::plan::Table;
use crate::error::TenancyError;
use crate::postgres::PgClusterConfig;
use crate::postgres::sql::quote_ident;

const POLL: Duration = Duration::from_millis(50);

/// The publication's, slot's and subscription's name.
pub(super) fn name(move_id: uuid::Uuid) -> String {
    format!("saas_mv_{}", move_id.simple())
}

/// Creates the publication of the tenant's tables on the source (a row
/// filter on the tenant column of shared tables), if missing. Into a
/// shared target (`to_shared`) a private source's tables are filtered by
/// their tenant column too: a schema or database tenant may have written
/// another tenant's id there, and such a row must not arrive among that
/// tenant's rows (the counts under the fence then differ and the move
/// stops).
pub(super) async fn publish(
    src: &mut PgConnection,
    name: &str,
    tables: &[Table],
    tenant: TenantId,
    to_shared: bool,
) -> Result<(), TenancyError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
            .bind(name)
            .fetch_one(&mut *src)
            .await?;
    if exists {
        return Ok(());
    }
    let list = published(tables, to_shared)
        .iter()
        .map(|t| match &t.column {
            // The row filter must be parenthesised.
            Some(c) => format!(
                "TABLE ONLY {} WHERE ({} = '{tenant}'::uuid)",
                t.qualified(),
                quote_ident(c)
            ),
            None => format!("TABLE ONLY {}", t.qualified()),
        })
        .collect::<Vec<_>>()
        .join(", ");
    src.execute(AssertSqlSafe(format!(
        "CREATE PUBLICATION {} FOR {list}",
        quote_ident(name)
    )))
    .await?;
    Ok(())
}

/// The source's tables as the publication filters them: a shared table
/// by its tenant column, and into a shared target (`to_shared`) a
/// private table by its tenant column too (see [`publish`]). A copy of
/// the rows the subscription will follow filters the same way.
pub(super) fn published(tables: &[Table], to_shared: bool) -> Vec<Table> {
    tables
        .iter()
        .map(|t| Table {
            column: t
                .column
                .clone()
                .or(t.tenant_column.clone().filter(|_| to_shared)),
            ..t.clone()
        })
        .collect()
}

/// Creates the logical slot on the source database, if missing. Its
/// consistent starting point waits for every transaction open on the
/// source *server* at that moment to end: bounded by `wait`, then refused
/// with the transactions that held it up.
pub(super) async fn create_slot(
    src: &mut PgConnection,
    name: &str,
    wait: Duration,
) -> Result<(), TenancyError> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
    )
    .bind(name)
    .fetch_one(&mut *src)
    .await?;
    if exists {
        return Ok(());
    }
    // PostgreSQL takes at most i32::MAX milliseconds.
    let millis = wait.as_millis().clamp(1, i32::MAX as u128);
    sqlx::query("SELECT set_config('lock_timeout', $1, false)")
        .bind(format!("{millis}ms"))
        .execute(&mut *src)
        .await?;
    let created = sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
        .bind(name)
        .execute(&mut *src)
        .await;
    src.execute("RESET lock_timeout").await?;
    match created {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
            Err(slot_wait_timeout(src, wait).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The error for a slot whose consistent point waited longer than
/// `wait`, naming the transactions open on the source server.
pub(super) async fn slot_wait_timeout(
    src: &mut PgConnection,
    wait: Duration,
) -> Result<TenancyError, TenancyError> {
    let open: Vec<String> = sqlx::query_scalar(
        "SELECT format('pid %s (%s, %s, open since %s)', pid, datname, \
                coalesce(nullif(application_name, ''), usename), xact_start) \
         FROM pg_stat_activity WHERE backend_xid IS NOT NULL \
           AND pid <> pg_backend_pid() ORDER BY xact_start LIMIT 5",
    )
    .fetch_all(&mut *src)
    .await?;
    Ok(TenancyError::Timeout(format!(
        "creating the move's replication slot waits for every transaction open on the \
         source server to end, and after {wait:?} these were still open: {}; end them \
         (or wait for a quieter moment) and resume the move",
        open.join("; ")
    )))
}

/// A libpq connection string reaching the source database: the
/// cluster's [`replication_conninfo`](crate::postgres::PgClusterConfig::replication_conninfo)
/// or, without one, host, port and user of its admin options (trust or a
/// `.pgpass` on the target server for the password); `dbname` added.
pub(super) fn conninfo(config: &PgClusterConfig, database: &str) -> String {
    let value = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let dbname = format!("dbname={}", value(database));
    if let Some(base) = &config.replication_conninfo {
        return format!("{base} {dbname}");
    }
    let admin = &config.admin;
    let host = match admin.get_socket() {
        Some(dir) => dir.to_string_lossy().into_owned(),
        None => admin.get_host().to_owned(),
    };
    format!(
        "host={} port={} user={} {dbname}",
        value(&host),
        admin.get_port(),
        value(admin.get_username()),
    )
}

/// Whether the subscription exists on the target database.
pub(super) async fn exists(dst: &mut PgConnection, name: &str) -> Result<bool, TenancyError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_subscription WHERE subname = $1)")
            .bind(name)
            .fetch_one(&mut *dst)
            .await?,
    )
}

/// Creates the subscription on the target database, if missing:
/// copying the tables' rows first (`copy_data`: PostgreSQL's table sync)
/// or, when the mover copied them under the slot's snapshot, streaming
/// from the slot's starting point only.
pub(super) async fn subscribe(
    dst: &mut PgConnection,
    name: &str,
    conninfo: &str,
    copy_data: bool,
) -> Result<(), TenancyError> {
    if exists(dst, name).await? {
        return Ok(());
    }
    let n = quote_ident(name);
    let literal = format!("'{}'", conninfo.replace('\'', "''"));
    let slot = format!("'{}'", name.replace('\'', "''"));
    dst.execute(AssertSqlSafe(format!(
        "CREATE SUBSCRIPTION {n} CONNECTION {literal} PUBLICATION {n} \
         WITH (create_slot = false, slot_name = {slot}, copy_data = {copy_data})"
    )))
    .await?;
    Ok(())
}

/// How far the subscription's tables are, by their state in
/// `pg_subscription_rel`.
#[derive(Debug, Clone, Copy)]
pub(super) struct TableStates {
    /// Copied and caught up (`r`).
    pub(super) ready: usize,
    /// Initial copy finished (`f`, `s` or `r`), maybe still catching up.
    pub(super) copied: usize,
    /// All of the subscription's tables.
    pub(super) all: usize,
    /// Whether its apply worker is streaming from the slot (it has heard
    /// from the source's WAL sender). A subscription made after the
    /// mover's own copy has every table ready at once, while PostgreSQL's
    /// launcher may start its worker only seconds later.
    pub(super) streaming: bool,
}

/// Where the subscription's tables are.
pub(super) async fn table_states(
    dst: &mut PgConnection,
    name: &str,
) -> Result<TableStates, TenancyError> {
    let (ready, copied, all, streaming): (i64, i64, i64, bool) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE r.srsubstate = 'r'), \
                count(*) FILTER (WHERE r.srsubstate IN ('f', 's', 'r')), count(*), \
                EXISTS (SELECT 1 FROM pg_stat_subscription w WHERE w.subname = $1 \
                        AND w.relid IS NULL AND w.latest_end_lsn IS NOT NULL) \
         FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid \
         WHERE s.subname = $1",
    )
    .bind(name)
    .fetch_one(&mut *dst)
    .await?;
    let count = |n: i64| usize::try_from(n).unwrap_or(0);
    Ok(TableStates {
        ready: count(ready),
        copied: count(copied),
        all: count(all),
        streaming,
    })
}

/// The slot's lag: WAL bytes the subscriber has not confirmed.
pub(super) async fn lag(src: &mut PgConnection, name: &str) -> Result<Option<u64>, TenancyError> {
    let lag: Option<i64> = sqlx::query_scalar(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8 \
         FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(name)
    .fetch_optional(&mut *src)
    .await?
    .flatten();
    Ok(lag.map(|l| u64::try_from(l).unwrap_or(0)))
}

/// The source's current WAL position (the fence's, once locked out).
pub(super) async fn current_lsn(src: &mut PgConnection) -> Result<String, TenancyError> {
    Ok(sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut *src)
        .await?)
}

/// Waits until the subscription has applied everything up to `lsn` on
/// the source: its worker reports a position past it (`latest_end_lsn`:
/// what the source's WAL sender sent and the worker, applying in order,
/// has taken). A small logical message nudges the sender along.
pub(super) async fn wait_for_lsn(
    src: &mut PgConnection,
    dst: &mut PgConnection,
    name: &str,
    lsn: &str,
    timeout: Duration,
) -> Result<bool, TenancyError> {
    let deadline = super::deadline(timeout);
    loop {
        let done: Option<bool> = sqlx::query_scalar(
            "SELECT bool_or(latest_end_lsn >= $2::text::pg_lsn) FROM pg_stat_subscription \
             WHERE subname = $1 AND relid IS NULL",
        )
        .bind(name)
        .bind(lsn)
        .fetch_one(&mut *dst)
        .await?;
        if done == Some(true) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        sqlx::query("SELECT pg_logical_emit_message(false, 'saas_move', '')")
            .execute(&mut *src)
            .await?;
        tokio::time::sleep(POLL).await;
    }
}

/// Drops the subscription (target side), if it is there; returns its oid
/// so the caller can drop the table-sync slots it may have left.
pub(super) async fn drop_subscription(
    dst: &mut PgConnection,
    name: &str,
) -> Result<Option<i64>, TenancyError> {
    let oid: Option<i64> =
        sqlx::query_scalar("SELECT oid::int8 FROM pg_subscription WHERE subname = $1")
            .bind(name)
            .fetch_optional(&mut *dst)
            .await?;
    if oid.is_some() {
        let n = quote_ident(name);
        for statement in [
            format!("ALTER SUBSCRIPTION {n} DISABLE"),
            format!("ALTER SUBSCRIPTION {n} SET (slot_name = NONE)"),
            format!("DROP SUBSCRIPTION {n}"),
        ] {
            dst.execute(AssertSqlSafe(statement)).await?;
        }
    }
    Ok(oid)
}

/// Drops the move's slot, the table-sync slots of subscription `oid`
/// and the publication on the source, if there; a slot still held by an
/// exiting WAL sender is waited for, then its sender terminated.
pub(super) async fn drop_source_objects(
    src: &mut PgConnection,
    name: &str,
    subscription: Option<i64>,
) -> Result<(), TenancyError> {
    drop_slots(src, name, subscription).await?;
    src.execute(AssertSqlSafe(format!(
        "DROP PUBLICATION IF EXISTS {}",
        quote_ident(name)
    )))
    .await?;
    Ok(())
}

/// Drops the move's slot and the table-sync slots of subscription `oid`,
/// if there.
pub(super) async fn drop_slots(
    src: &mut PgConnection,
    name: &str,
    subscription: Option<i64>,
) -> Result<(), TenancyError> {
    let sync = subscription.map(|oid| format!("pg\\_{oid}\\_sync\\_%"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let slots: Vec<(String, Option<i32>)> = sqlx::query_as(
            "SELECT slot_name::text, active_pid FROM pg_replication_slots \
             WHERE database = current_database() \
               AND (slot_name = $1 OR ($2::text IS NOT NULL AND slot_name LIKE $2))",
        )
        .bind(name)
        .bind(sync.as_deref())
        .fetch_all(&mut *src)
        .await?;
        if slots.is_empty() {
            break;
        }
        for (slot, pid) in slots {
            match pid {
                None => {
                    sqlx::query("SELECT pg_drop_replication_slot($1)")
                        .bind(&slot)
                        .execute(&mut *src)
                        .await?;
                }
                Some(pid) if Instant::now() >= deadline => {
                    sqlx::query("SELECT pg_terminate_backend($1)")
                        .bind(pid)
                        .execute(&mut *src)
                        .await?;
                }
                Some(_) => {}
            }
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Renames schema `from` to `to` on `conn` if `from` exists (staging a
/// target's schema under the source's name, and back).
pub(super) async fn rename_schema(
    conn: &mut PgConnection,
    from: &str,
    to: &str,
) -> Result<(), TenancyError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(from)
            .fetch_one(&mut *conn)
            .await?;
    if exists {
        conn.execute(AssertSqlSafe(format!(
            "ALTER SCHEMA {} RENAME TO {}",
            quote_ident(from),
            quote_ident(to)
        )))
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::ClusterName;
    use crate::postgres::SqlIdent;

    fn config(url: &str) -> PgClusterConfig {
        let (Ok(name), Ok(admin), Ok(role)) = (
            ClusterName::new("main"),
            url.parse(),
            SqlIdent::new("app_runtime"),
        ) else {
            panic!("test configuration");
        };
        PgClusterConfig::new(name, admin, role)
    }

    #[test]
    fn conninfo_quotes_values_and_names_the_database() {
        let info = conninfo(&config("postgres://o%27neil@db.internal:6543/app"), "t_1");
        assert_eq!(
            info,
            "host='db.internal' port=6543 user='o\\'neil' dbname='t_1'"
        );
    }

    #[test]
    fn a_configured_conninfo_is_used_with_the_database_added() {
        let config = config("postgres://admin@db.internal/app")
            .with_replication_conninfo("host=10.0.0.5 user=replicator password=s3cret");
        assert_eq!(
            conninfo(&config, "app"),
            "host=10.0.0.5 user=replicator password=s3cret dbname='app'"
        );
    }
}
