//! Row work on both sides: clearing the target, copying under the fence
//! (`COPY … TO STDOUT` on the source streamed into `COPY … FROM STDIN` on
//! the target, chunk by chunk: memory stays flat), counting rows and
//! carrying sequences over.

use std::collections::BTreeMap;

use futures_util::TryStreamExt;
use futures_util::future::try_join;
use saas_core::TenantId;
use sqlx::{AssertSqlSafe, Executor, PgConnection};

use super::plan::Table;
use crate::error::TenancyError;
use crate::postgres::sql::quote_ident;

/// Pairs each source table with the target's table of the same name; a
/// source table the target lacks is refused.
pub(super) fn pair<'a>(
    source: &'a [Table],
    target: &'a [Table],
) -> Result<Vec<(&'a Table, &'a Table)>, TenancyError> {
    pair_matching(source, target, false)
}

/// Pairs each source table with the target's table of the same schema
/// and name — the one a subscription applies its changes to; a source
/// table the target lacks is refused.
pub(super) fn pair_same_schema<'a>(
    source: &'a [Table],
    target: &'a [Table],
) -> Result<Vec<(&'a Table, &'a Table)>, TenancyError> {
    pair_matching(source, target, true)
}

fn pair_matching<'a>(
    source: &'a [Table],
    target: &'a [Table],
    same_schema: bool,
) -> Result<Vec<(&'a Table, &'a Table)>, TenancyError> {
    source
        .iter()
        .map(|s| {
            target
                .iter()
                .find(|t| t.name == s.name && (!same_schema || t.schema == s.schema))
                .map(|t| (s, t))
                .ok_or_else(|| {
                    let under = if same_schema {
                        " under the same schema"
                    } else {
                        ""
                    };
                    TenancyError::InvalidInput(format!(
                        "the target placement has no table {:?}{under} (the source's {}); \
                         migrate it to the same version first — nothing was moved",
                        s.name,
                        s.qualified()
                    ))
                })
        })
        .collect()
}

/// Deletes the tenant's rows from the target's tables (all rows of a
/// schema or database target: it is the tenant's own and not yet served).
pub(super) async fn clear(
    dst: &mut PgConnection,
    tables: &[Table],
    tenant: TenantId,
) -> Result<(), TenancyError> {
    for table in tables {
        delete_in_batches(dst, table, tenant).await?;
    }
    Ok(())
}

/// Rows deleted per transaction by [`delete_in_batches`].
const DELETE_BATCH: u64 = 5_000;

/// Deletes the tenant's rows from `table` (all of them for a table without
/// a tenant column) in transactions of [`DELETE_BATCH`] rows, in replica
/// mode (no foreign-key triggers, so the order of tables does not
/// matter), pausing after each batch as long as it took. A million rows
/// leave a shared table while the server goes on serving: one statement
/// would hold a core and write its WAL in one burst — right after a
/// cut-over, next to the moved tenant's first writes at their new place
/// when both are on one server. Stopped halfway, it is simply run again.
pub(super) async fn delete_in_batches(
    conn: &mut PgConnection,
    table: &Table,
    tenant: TenantId,
) -> Result<u64, TenancyError> {
    let name = table.qualified();
    let statement = format!(
        "DELETE FROM {name} WHERE ctid = ANY (ARRAY (SELECT ctid FROM {name}{} LIMIT {DELETE_BATCH}))",
        table.filter(tenant)
    );
    let mut deleted = 0;
    loop {
        let started = std::time::Instant::now();
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        tx.execute("SET LOCAL session_replication_role = replica")
            .await?;
        let done = tx
            .execute(AssertSqlSafe(statement.as_str()))
            .await?
            .rows_affected();
        tx.commit().await?;
        deleted += done;
        if done < DELETE_BATCH {
            return Ok(deleted);
        }
        tokio::time::sleep(started.elapsed()).await;
    }
}

/// The columns of `table` on `conn`, in order.
pub(super) async fn columns(
    conn: &mut PgConnection,
    table: &Table,
) -> Result<Vec<String>, TenancyError> {
    Ok(sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_attribute a \
         WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped \
           AND a.attgenerated = '' ORDER BY a.attnum",
    )
    .bind(table.qualified())
    .fetch_all(&mut *conn)
    .await?)
}

/// Copies the tenant's rows of each pair, source to target; returns the
/// rows copied per table.
pub(super) async fn copy(
    src: &mut PgConnection,
    dst: &mut PgConnection,
    pairs: &[(&Table, &Table)],
    tenant: TenantId,
) -> Result<BTreeMap<String, u64>, TenancyError> {
    let mut copied = BTreeMap::new();
    dst.execute("SET session_replication_role = replica")
        .await?;
    for (s, t) in pairs {
        let names = shared_columns(src, dst, s, t).await?;
        let list = names
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let select = select_list(&names, t, tenant);
        let out = format!(
            "COPY (SELECT {select} FROM ONLY {}{}) TO STDOUT",
            s.qualified(),
            s.filter(tenant)
        );
        let into = format!("COPY {} ({list}) FROM STDIN", t.qualified());
        let mut sink = dst.copy_in_raw(&into).await?;
        let mut stream = src.copy_out_raw(&out).await?;
        while let Some(chunk) = stream.try_next().await? {
            sink.send(chunk).await?;
        }
        drop(stream);
        let rows = sink.finish().await?;
        copied.insert(t.name.clone(), rows);
    }
    dst.execute("SET session_replication_role = DEFAULT")
        .await?;
    Ok(copied)
}

/// The columns a copy of `s` into `t` carries: the target's that the
/// source has (the target's others take their defaults, as replication
/// leaves them). A source column the target lacks would be lost: refused.
pub(super) async fn shared_columns(
    src: &mut PgConnection,
    dst: &mut PgConnection,
    s: &Table,
    t: &Table,
) -> Result<Vec<String>, TenancyError> {
    let source = columns(src, s).await?;
    let target = columns(dst, t).await?;
    if let Some(missing) = source.iter().find(|c| !target.contains(c)) {
        return Err(TenancyError::InvalidInput(format!(
            "the target's table {} has no column {missing:?} (the source's {} has): migrate the \
             target to the source's version first; abort_move and move again",
            t.qualified(),
            s.qualified()
        )));
    }
    Ok(target.into_iter().filter(|c| source.contains(c)).collect())
}

/// The target's columns as read from the source, except a shared
/// target's tenant column, which is the tenant: a schema or database
/// tenant's own tables may hold any value there, and what it wrote under
/// another tenant's id must not land in that tenant's rows.
pub(super) fn select_list(columns: &[String], target: &Table, tenant: TenantId) -> String {
    columns
        .iter()
        .map(|c| match &target.column {
            Some(t) if t == c => format!("'{tenant}'::uuid AS {}", quote_ident(c)),
            _ => quote_ident(c),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Vacuums the target tables a copy filled: the counts under the fence
/// then read the key's index alone instead of every fresh heap page
/// (setting its hint bits: 0.3 s more fence for a million rows). A
/// private target's tables are the tenant's alone and analyzed too; a
/// shared table serves other tenants, so only its heap pages not yet
/// all-visible are visited (`INDEX_CLEANUP OFF`: no pass over everyone's
/// index entries; `TRUNCATE OFF`: no exclusive lock to shorten the
/// file). A table another vacuum holds is skipped (`SKIP_LOCKED`). Only
/// an optimisation: a failure is logged, not returned.
pub(super) async fn vacuum(dst: &mut PgConnection, tables: &[&Table]) {
    for table in tables {
        let how = match table.column {
            Some(_) => "INDEX_CLEANUP OFF, TRUNCATE OFF, SKIP_LOCKED",
            None => "ANALYZE, SKIP_LOCKED",
        };
        let vacuumed = dst
            .execute(AssertSqlSafe(format!(
                "VACUUM ({how}) {}",
                table.qualified()
            )))
            .await;
        if let Err(e) = vacuumed {
            tracing::warn!(table = %table.qualified(), error = %e, "vacuuming a move's target table failed; the fence's counts read its heap");
        }
    }
}

/// The tenant's rows in `table`.
pub(super) async fn count(
    conn: &mut PgConnection,
    table: &Table,
    tenant: TenantId,
) -> Result<u64, TenancyError> {
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM ONLY {}{}",
        table.qualified(),
        table.filter(tenant)
    )))
    .fetch_one(&mut *conn)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Compares the tenant's row counts per table; the first table that
/// differs, as `(name, source, target)`, or the target's counts.
pub(super) async fn verify(
    src: &mut PgConnection,
    dst: &mut PgConnection,
    pairs: &[(&Table, &Table)],
    tenant: TenantId,
) -> Result<Result<BTreeMap<String, u64>, (String, u64, u64)>, TenancyError> {
    let mut counts = BTreeMap::new();
    for (s, t) in pairs {
        // Both servers count at once: under the fence, this is the
        // longest step after the last changes' arrival.
        let (a, b) = try_join(count(src, s, tenant), count(dst, t, tenant)).await?;
        if a != b {
            return Ok(Err((t.qualified(), a, b)));
        }
        counts.insert(t.name.clone(), b);
    }
    Ok(Ok(counts))
}

/// The serial/identity sequences of `table`: (column, sequence).
async fn sequences(
    conn: &mut PgConnection,
    table: &Table,
) -> Result<Vec<(String, String)>, TenancyError> {
    Ok(sqlx::query_as(
        "SELECT a.attname::text, pg_get_serial_sequence($1, a.attname) \
         FROM pg_attribute a WHERE a.attrelid = $1::text::regclass \
           AND a.attnum > 0 AND NOT a.attisdropped \
           AND pg_get_serial_sequence($1, a.attname) IS NOT NULL",
    )
    .bind(table.qualified())
    .fetch_all(&mut *conn)
    .await?)
}

/// Moves each target sequence to at least the source's value and past
/// the tenant's largest key on the target (never backwards: a shared
/// sequence serves other tenants too), so new ids do not collide. The
/// other tenants' keys on a shared target came from its own sequence; the
/// tenant filter lets the shared table's `(tenant, key)` index answer.
pub(super) async fn carry_sequences(
    src: &mut PgConnection,
    dst: &mut PgConnection,
    pairs: &[(&Table, &Table)],
    tenant: TenantId,
) -> Result<(), TenancyError> {
    for (s, t) in pairs {
        let source: BTreeMap<String, String> = sequences(src, s).await?.into_iter().collect();
        for (column, target_seq) in sequences(dst, t).await? {
            let from = match source.get(&column) {
                // Names from pg_get_serial_sequence, quoted by PostgreSQL.
                Some(seq) => {
                    sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!(
                        "SELECT last_value FROM {seq}"
                    )))
                    .fetch_one(&mut *src)
                    .await?
                }
                None => 1,
            };
            let sql = format!(
                "SELECT setval($1::regclass, greatest($2::int8, \
                 (SELECT last_value FROM {target_seq}), \
                 (SELECT coalesce(max({}), 1) FROM {}{})::int8))",
                quote_ident(&column),
                t.qualified(),
                t.filter(tenant)
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(&target_seq)
                .bind(from)
                .execute(&mut *dst)
                .await?;
        }
    }
    Ok(())
}

/// Moves the tenant's rows of queue table `s` into `t`: the target's
/// rows of the tenant (an earlier, interrupted attempt's) are deleted,
/// the source's copied in key order without their serial keys (the
/// target's sequence numbers them) and with the tenant column set to the
/// tenant, announced on `wake` (payload: the target table's schema) when
/// they commit, then deleted from the source. Returns the rows moved.
pub(super) async fn move_queue(
    src: &mut PgConnection,
    dst: &mut PgConnection,
    s: &Table,
    t: &Table,
    tenant: TenantId,
    tenant_columns: &[String],
    wake: Option<&str>,
) -> Result<u64, TenancyError> {
    let serial: Vec<String> = sequences(dst, t)
        .await?
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    let names: Vec<String> = columns(dst, t)
        .await?
        .into_iter()
        .filter(|c| !serial.contains(c))
        .collect();
    let select = names
        .iter()
        .map(|c| match tenant_columns.contains(c) {
            // Formatted from a TenantId: hex digits and hyphens.
            true => format!("'{tenant}'::uuid"),
            false => quote_ident(c),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let order = match sequences(src, s).await?.first() {
        Some((key, _)) => format!(" ORDER BY {}", quote_ident(key)),
        None => String::new(),
    };
    let list = names
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let mut tx_dst = sqlx::Connection::begin(&mut *dst).await?;
    tx_dst
        .execute(AssertSqlSafe(format!(
            "DELETE FROM {}{}",
            t.qualified(),
            t.filter(tenant)
        )))
        .await?;
    let out = format!(
        "COPY (SELECT {select} FROM {}{}{order}) TO STDOUT",
        s.qualified(),
        s.filter(tenant)
    );
    let into = format!("COPY {} ({list}) FROM STDIN", t.qualified());
    let moved = {
        let mut sink = tx_dst.copy_in_raw(&into).await?;
        let mut stream = src.copy_out_raw(&out).await?;
        while let Some(chunk) = stream.try_next().await? {
            sink.send(chunk).await?;
        }
        drop(stream);
        sink.finish().await?
    };
    if let Some(channel) = wake.filter(|_| moved > 0) {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(&t.schema)
            .execute(&mut *tx_dst)
            .await?;
    }
    tx_dst.commit().await?;
    src.execute(AssertSqlSafe(format!(
        "DELETE FROM {}{}",
        s.qualified(),
        s.filter(tenant)
    )))
    .await?;
    Ok(moved)
}
