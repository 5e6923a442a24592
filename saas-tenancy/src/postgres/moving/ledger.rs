//! The move ledger: a table `saas_tenant_moves` next to `saas_tenants`
//! (in the catalog's database), one row per move, its phase written as
//! each phase ends — and the catalog changes of the fence and the
//! cut-over, each in one transaction with its `NOTIFY`.

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
    ON saas_tenant_moves (tenant_id) WHERE phase NOT IN ('done', 'aborted')";

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

/// Records a new move; a tenant with an open move is refused.
pub(super) async fn insert(
    pool: &PgPool,
    row: &MoveRow,
    now: DateTime<Utc>,
) -> Result<(), TenancyError> {
    let inserted = sqlx::query(
        "INSERT INTO saas_tenant_moves (id, tenant_id, source_strategy, source_cluster, \
         source_object, target_strategy, target_cluster, target_object, method, staging_schema, \
         phase, keep_source, started_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
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
    .execute(pool)
    .await;
    match inserted {
        Ok(_) => Ok(()),
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
    fence_lsn::text, keep_source FROM saas_tenant_moves ";

/// The tenant's unfinished move, if any.
pub(super) async fn open_for(
    pool: &PgPool,
    tenant: TenantId,
) -> Result<Option<MoveRow>, TenancyError> {
    let sql = format!("{COLUMNS} WHERE tenant_id = $1 AND phase NOT IN ('done', 'aborted')");
    read(pool, &sql, tenant).await
}

/// The tenant's last finished move that kept its source, if any.
pub(super) async fn last_kept(
    pool: &PgPool,
    tenant: TenantId,
) -> Result<Option<MoveRow>, TenancyError> {
    let sql = format!(
        "{COLUMNS} WHERE tenant_id = $1 AND phase = 'done' AND keep_source \
         ORDER BY updated_at DESC LIMIT 1"
    );
    read(pool, &sql, tenant).await
}

/// Records that a kept source was purged.
pub(super) async fn source_purged(pool: &PgPool, id: uuid::Uuid) -> Result<(), TenancyError> {
    sqlx::query("UPDATE saas_tenant_moves SET keep_source = false WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

async fn read(pool: &PgPool, sql: &str, tenant: TenantId) -> Result<Option<MoveRow>, TenancyError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(tenant)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let placement = |s: &str, c: &str, o: Option<String>| Placement::from_parts(s, c, o.as_deref());
    Ok(Some(MoveRow {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        from: placement(row.try_get(2)?, row.try_get(3)?, row.try_get(4)?)?,
        to: placement(row.try_get(5)?, row.try_get(6)?, row.try_get(7)?)?,
        method: MoveMethod::parse(row.try_get(8)?)?,
        staging: row.try_get(9)?,
        phase: MovePhase::parse(row.try_get(10)?)?,
        fence_lsn: row.try_get(11)?,
        keep_source: row.try_get(12)?,
    }))
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
            sqlx::query(
                "UPDATE saas_tenant_moves SET phase = 'cut_over', updated_at = $2 WHERE id = $1",
            )
            .bind(row.id)
            .bind(now)
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
