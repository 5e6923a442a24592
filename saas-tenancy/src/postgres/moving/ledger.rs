//! The move ledger: a table `saas_tenant_moves` next to `saas_tenants`
//! (in the catalog's database), one row per move, its phase written as
//! each phase ends — and the catalog changes of the fence and the
//! cut-over, each in one transaction with its `NOTIFY`.
//!
//! A kept source (see `MoveOptions::keep_source_for`) is the `done` row
//! with `keep_source` set: `keep_until` (from the tenancy's clock, set at
//! the cut-over) says when it may be purged, `NULL` meaning only when
//! asked. It stops being kept — `keep_source` cleared, `source_released`
//! saying why — when it is purged, or when a move *to* that placement
//! starts (the move back reuses it as its target).

use chrono::{DateTime, Utc};
use saas_core::TenantId;
use sqlx::{PgPool, Row};

use super::{MoveMethod, MovePhase};
use crate::error::TenancyError;
use crate::placement::Placement;

const MIGRATION: &str = "CREATE TABLE IF NOT EXISTS saas_tenant_moves (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    source_strategy text NOT NULL,
    source_cluster text NOT NULL,
    source_object text,
    target_strategy text NOT NULL,
    target_cluster text NOT NULL,
    target_object text,
    method text NOT NULL,
    staging_schema text,
    phase text NOT NULL,
    fence_lsn pg_lsn,
    keep_source boolean NOT NULL,
    started_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS saas_tenant_moves_open
    ON saas_tenant_moves (tenant_id) WHERE phase NOT IN ('done', 'aborted');
ALTER TABLE saas_tenant_moves ADD COLUMN IF NOT EXISTS keep_for_ms bigint;
ALTER TABLE saas_tenant_moves ADD COLUMN IF NOT EXISTS keep_until timestamptz;
ALTER TABLE saas_tenant_moves ADD COLUMN IF NOT EXISTS source_released text;
ALTER TABLE saas_tenant_moves ADD COLUMN IF NOT EXISTS source_released_at timestamptz;
CREATE INDEX IF NOT EXISTS saas_tenant_moves_kept
    ON saas_tenant_moves (keep_until) WHERE keep_source AND phase = 'done';
ALTER TABLE saas_tenant_moves ADD COLUMN IF NOT EXISTS target_backend text";

/// One move as the ledger holds it.
#[derive(Debug, Clone)]
pub(super) struct MoveRow {
    pub(super) id: uuid::Uuid,
    pub(super) tenant: TenantId,
    pub(super) from: Placement,
    pub(super) to: Placement,
    pub(super) method: MoveMethod,
    /// The name the target's private schema carries while it replicates
    /// (the source's schema name), if it needs another one.
    pub(super) staging: Option<String>,
    pub(super) phase: MovePhase,
    pub(super) fence_lsn: Option<String>,
    pub(super) keep_source: bool,
    /// How long a kept source is kept after the cut-over (`None`: until
    /// purged by hand).
    pub(super) keep_for: Option<chrono::Duration>,
    /// When a kept source may be purged (set at the cut-over).
    pub(super) keep_until: Option<DateTime<Utc>>,
    /// The target is a SQLite placement (`target_backend = 'sqlite'`; see
    /// `to_sqlite.rs`); `NULL` in the ledger: a PostgreSQL placement.
    pub(super) to_sqlite: bool,
}

/// Creates the ledger if missing (serialised between processes).
pub(super) async fn migrate(pool: &PgPool) -> Result<(), TenancyError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('saas_tenant_moves.migrate'))")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(MIGRATION).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Records a new move; a tenant with an open move is refused. In the same
/// transaction, a source an earlier move kept at the new move's target is
/// no longer kept: the move clears it and moves the tenant back into it.
pub(super) async fn insert(
    pool: &PgPool,
    row: &MoveRow,
    now: DateTime<Utc>,
) -> Result<(), TenancyError> {
    let now = crate::record::catalog_time(now);
    let mut tx = pool.begin().await?;
    let keep_for_ms = row
        .keep_for
        .map(|d| d.num_milliseconds())
        .filter(|_| row.keep_source);
    let inserted = sqlx::query(
        "INSERT INTO saas_tenant_moves (id, tenant_id, source_strategy, source_cluster, \
         source_object, target_strategy, target_cluster, target_object, method, staging_schema, \
         phase, keep_source, started_at, updated_at, keep_for_ms, target_backend) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14, $15)",
    )
    .bind(row.id)
    .bind(row.tenant)
    .bind(row.from.strategy().as_str())
    .bind(row.from.cluster().as_str())
    .bind(row.from.object_name().map(|n| n.as_str()))
    .bind(row.to.strategy().as_str())
    .bind(row.to.cluster().as_str())
    .bind(row.to.object_name().map(|n| n.as_str()))
    .bind(row.method.as_str())
    .bind(row.staging.as_deref())
    .bind(row.phase.as_str())
    .bind(row.keep_source)
    .bind(now)
    .bind(keep_for_ms)
    .bind(row.to_sqlite.then_some("sqlite"))
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {
            sqlx::query(
                "UPDATE saas_tenant_moves SET keep_source = false, source_released = 'reused', \
                 source_released_at = $5 \
                 WHERE tenant_id = $1 AND phase = 'done' AND keep_source \
                   AND source_strategy = $2 AND source_cluster = $3 \
                   AND source_object IS NOT DISTINCT FROM $4",
            )
            .bind(row.tenant)
            .bind(row.to.strategy().as_str())
            .bind(row.to.cluster().as_str())
            .bind(row.to.object_name().map(|n| n.as_str()))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(TenancyError::InvalidInput(format!(
                "tenant {} has a move that is not finished; resume_move or abort_move it first",
                row.tenant
            )))
        }
        Err(e) => Err(e.into()),
    }
}

const COLUMNS: &str = "SELECT id, tenant_id, source_strategy, source_cluster, source_object, \
    target_strategy, target_cluster, target_object, method, staging_schema, phase, \
    fence_lsn::text, keep_source, keep_for_ms, keep_until, target_backend \
    FROM saas_tenant_moves ";

/// The tenant's unfinished move, if any.
pub(super) async fn open_for(
    pool: &PgPool,
    tenant: TenantId,
) -> Result<Option<MoveRow>, TenancyError> {
    let sql = format!("{COLUMNS} WHERE tenant_id = $1 AND phase NOT IN ('done', 'aborted')");
    read(pool, &sql, tenant).await
}

/// The tenant's finished moves whose source is kept, oldest first.
pub(super) async fn kept(pool: &PgPool, tenant: TenantId) -> Result<Vec<MoveRow>, TenancyError> {
    let sql = format!(
        "{COLUMNS} WHERE tenant_id = $1 AND phase = 'done' AND keep_source ORDER BY updated_at"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .fetch_all(pool)
        .await?;
    rows.iter().map(parse).collect()
}

/// The move `id` if its source is still kept.
pub(super) async fn kept_by_id(
    pool: &PgPool,
    id: uuid::Uuid,
) -> Result<Option<MoveRow>, TenancyError> {
    let sql = format!("{COLUMNS} WHERE id = $1 AND phase = 'done' AND keep_source");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(parse).transpose()
}

/// Finished moves whose kept source's retention ended at or before `now`,
/// oldest first, at most `limit`.
pub(super) async fn expired(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<MoveRow>, TenancyError> {
    let sql = format!(
        "{COLUMNS} WHERE phase = 'done' AND keep_source AND keep_until <= $1 \
         ORDER BY keep_until LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter().map(parse).collect()
}

/// Records that a kept source is no longer kept: `how` is `purged` or
/// `reused` (the tenant is served from it again).
pub(super) async fn source_released(
    pool: &PgPool,
    id: uuid::Uuid,
    how: &'static str,
    now: DateTime<Utc>,
) -> Result<(), TenancyError> {
    sqlx::query(
        "UPDATE saas_tenant_moves SET keep_source = false, source_released = $3, \
         source_released_at = $2 WHERE id = $1",
    )
    .bind(id)
    .bind(crate::record::catalog_time(now))
    .bind(how)
    .execute(pool)
    .await?;
    Ok(())
}

async fn read(pool: &PgPool, sql: &str, tenant: TenantId) -> Result<Option<MoveRow>, TenancyError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(tenant)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(parse).transpose()
}

fn parse(row: &sqlx::postgres::PgRow) -> Result<MoveRow, TenancyError> {
    let placement = |s: &str, c: &str, o: Option<String>| Placement::from_parts(s, c, o.as_deref());
    let keep_for_ms: Option<i64> = row.try_get(13)?;
    Ok(MoveRow {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        from: placement(row.try_get(2)?, row.try_get(3)?, row.try_get(4)?)?,
        to: placement(row.try_get(5)?, row.try_get(6)?, row.try_get(7)?)?,
        method: MoveMethod::parse(row.try_get(8)?)?,
        staging: row.try_get(9)?,
        phase: MovePhase::parse(row.try_get(10)?)?,
        fence_lsn: row.try_get(11)?,
        keep_source: row.try_get(12)?,
        keep_for: keep_for_ms.map(chrono::Duration::milliseconds),
        keep_until: row.try_get(14)?,
        to_sqlite: row.try_get::<Option<String>, _>(15)?.as_deref() == Some("sqlite"),
    })
}

/// Records that `row.phase` is done.
pub(super) async fn record(
    pool: &PgPool,
    row: &MoveRow,
    now: DateTime<Utc>,
) -> Result<(), TenancyError> {
    sqlx::query(
        "UPDATE saas_tenant_moves SET phase = $2, fence_lsn = $3::text::pg_lsn, updated_at = $4 \
         WHERE id = $1",
    )
    .bind(row.id)
    .bind(row.phase.as_str())
    .bind(row.fence_lsn.as_deref())
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks the tenant `moving` (its fence) and announces it, in one
/// transaction. A tenant neither active nor moving is refused.
pub(super) async fn fence(
    pool: &PgPool,
    tenant: TenantId,
    now: DateTime<Utc>,
) -> Result<(), TenancyError> {
    set_status(pool, tenant, "moving", &["active", "moving"], None, now).await
}

/// Marks a fenced tenant `active` again on its source (an abort).
pub(super) async fn unfence(
    pool: &PgPool,
    tenant: TenantId,
    now: DateTime<Utc>,
) -> Result<(), TenancyError> {
    set_status(pool, tenant, "active", &["moving", "active"], None, now).await
}

/// The cut-over: the catalog names the target and the tenant is active
/// again, the ledger says `cut_over`, and every listening process is told
/// — one transaction.
pub(super) async fn cut_over(
    pool: &PgPool,
    row: &MoveRow,
    now: DateTime<Utc>,
) -> Result<(), TenancyError> {
    set_status(pool, row.tenant, "active", &["moving"], Some(row), now).await
}

async fn set_status(
    pool: &PgPool,
    tenant: TenantId,
    to: &str,
    from: &[&str],
    cut_over: Option<&MoveRow>,
    now: DateTime<Utc>,
) -> Result<(), TenancyError> {
    let now = crate::record::catalog_time(now);
    let mut tx = pool.begin().await?;
    let changed = match cut_over {
        None => sqlx::query(
            "UPDATE saas_tenants SET status = $2, updated_at = $4 \
             WHERE id = $1 AND status = ANY($3)",
        )
        .bind(tenant)
        .bind(to)
        .bind(from)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected(),
        Some(row) => {
            // The retention of a kept source runs from the cut-over.
            let keep_until = row
                .keep_for
                .filter(|_| row.keep_source)
                .and_then(|d| now.checked_add_signed(d));
            sqlx::query(
                "UPDATE saas_tenant_moves SET phase = 'cut_over', updated_at = $2, \
                 keep_until = $3 WHERE id = $1",
            )
            .bind(row.id)
            .bind(now)
            .bind(keep_until)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE saas_tenants SET status = $2, updated_at = $4, strategy = $5, \
                 cluster = $6, object_name = $7 WHERE id = $1 AND status = ANY($3)",
            )
            .bind(tenant)
            .bind(to)
            .bind(from)
            .bind(now)
            .bind(row.to.strategy().as_str())
            .bind(row.to.cluster().as_str())
            .bind(row.to.object_name().map(|n| n.as_str()))
            .execute(&mut *tx)
            .await?
            .rows_affected()
        }
    };
    if changed == 0 {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM saas_tenants WHERE id = $1")
                .bind(tenant)
                .fetch_optional(&mut *tx)
                .await?;
        return Err(match status {
            None => TenancyError::TenantNotFound(format!("with id {tenant}")),
            Some(status) => TenancyError::InvalidInput(format!(
                "tenant {tenant} is {status}; a move needs it active (or moving, to resume)"
            )),
        });
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(super::MOVE_CHANNEL)
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
