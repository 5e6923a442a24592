//! The SQLite move ledger: a table `saas_tenant_moves` in a file of its
//! own, `saas_tenant_moves.sqlite`, in the *source* cluster's tenant
//! directory (for the reasons the migration ledger lives there, see
//! `sqlite/ledger.rs`: the catalog may be any catalog, and the shared file
//! holds only the host's data). Resuming looks in every configured
//! cluster's directory, since after a cut-over the catalog names the
//! target's cluster.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use saas_core::TenantId;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{Connection, Executor, Row, SqliteConnection};

use crate::error::TenancyError;
use crate::moving::MovePhase;
use crate::placement::Placement;

/// The ledger file's name in a cluster's tenant directory.
const LEDGER_FILE: &str = "saas_tenant_moves.sqlite";

const MIGRATION: &str = "CREATE TABLE IF NOT EXISTS saas_tenant_moves (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL,
    source_strategy TEXT NOT NULL,
    source_cluster TEXT NOT NULL,
    source_object TEXT,
    target_strategy TEXT NOT NULL,
    target_cluster TEXT NOT NULL,
    target_object TEXT,
    target_backend TEXT NOT NULL CHECK (target_backend IN ('sqlite', 'postgres')),
    phase TEXT NOT NULL,
    keep_source INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS saas_tenant_moves_open
    ON saas_tenant_moves (tenant_id) WHERE phase NOT IN ('done', 'aborted');";

/// One move as the ledger holds it, and the directory of its ledger.
#[derive(Debug, Clone)]
pub(super) struct MoveRow {
    pub(super) id: uuid::Uuid,
    pub(super) tenant: TenantId,
    pub(super) from: Placement,
    pub(super) to: Placement,
    pub(super) phase: MovePhase,
    pub(super) keep_source: bool,
    /// The target is a PostgreSQL placement (a move across backends).
    pub(super) to_postgres: bool,
    pub(super) dir: PathBuf,
}

async fn open(dir: &Path, create: bool) -> Result<Option<SqliteConnection>, TenancyError> {
    let file = dir.join(LEDGER_FILE);
    if !create && !file.is_file() {
        return Ok(None);
    }
    let options = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    let mut conn = SqliteConnection::connect_with(&options).await?;
    conn.execute(MIGRATION).await?;
    Ok(Some(conn))
}

/// Records a new move in `row.dir`; a tenant with an open move there is
/// refused.
pub(super) async fn insert(row: &MoveRow, now: DateTime<Utc>) -> Result<(), TenancyError> {
    let Some(mut conn) = open(&row.dir, true).await? else {
        return Err(TenancyError::InvalidInput("no ledger".to_owned()));
    };
    let inserted = sqlx::query(
        "INSERT INTO saas_tenant_moves (id, tenant_id, source_strategy, source_cluster, \
         source_object, target_strategy, target_cluster, target_object, phase, keep_source, \
         started_at, updated_at, target_backend) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12)",
    )
    .bind(row.id.to_string())
    .bind(row.tenant.to_string())
    .bind(row.from.strategy().as_str())
    .bind(row.from.cluster().as_str())
    .bind(row.from.object_name().map(|n| n.as_str()))
    .bind(row.to.strategy().as_str())
    .bind(row.to.cluster().as_str())
    .bind(row.to.object_name().map(|n| n.as_str()))
    .bind(row.phase.as_str())
    .bind(row.keep_source)
    .bind(now.to_rfc3339())
    .bind(if row.to_postgres {
        "postgres"
    } else {
        "sqlite"
    })
    .execute(&mut conn)
    .await;
    conn.close().await?;
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

/// The tenant's unfinished move, looked for in each of `dirs`.
pub(super) async fn open_for(
    dirs: impl IntoIterator<Item = &Path>,
    tenant: TenantId,
) -> Result<Option<MoveRow>, TenancyError> {
    find(dirs, tenant, "phase NOT IN ('done', 'aborted')").await
}

/// The tenant's finished moves that kept their source, looked for in
/// each of `dirs` (the newest first in each).
pub(super) async fn kept_for(
    dirs: impl IntoIterator<Item = &Path>,
    tenant: TenantId,
) -> Result<Option<MoveRow>, TenancyError> {
    find(dirs, tenant, "phase = 'done' AND keep_source").await
}

/// Records that a kept source was purged.
pub(super) async fn source_purged(row: &MoveRow) -> Result<(), TenancyError> {
    let Some(mut conn) = open(&row.dir, false).await? else {
        return Ok(());
    };
    let result = sqlx::query("UPDATE saas_tenant_moves SET keep_source = 0 WHERE id = ?1")
        .bind(row.id.to_string())
        .execute(&mut conn)
        .await;
    conn.close().await?;
    result?;
    Ok(())
}

/// The first row of `tenant` matching `filter` (one of the constants
/// above) in each of `dirs`.
async fn find(
    dirs: impl IntoIterator<Item = &Path>,
    tenant: TenantId,
    filter: &str,
) -> Result<Option<MoveRow>, TenancyError> {
    for dir in dirs {
        let Some(mut conn) = open(dir, false).await? else {
            continue;
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, source_strategy, source_cluster, source_object, target_strategy, \
             target_cluster, target_object, phase, keep_source, target_backend FROM saas_tenant_moves \
             WHERE tenant_id = ?1 AND {filter} ORDER BY updated_at DESC LIMIT 1"
        )))
        .bind(tenant.to_string())
        .fetch_optional(&mut conn)
        .await;
        conn.close().await?;
        let Some(row) = row? else { continue };
        let placement =
            |s: &str, c: &str, o: Option<String>| Placement::from_parts(s, c, o.as_deref());
        let id: String = row.try_get(0)?;
        return Ok(Some(MoveRow {
            id: id
                .parse()
                .map_err(|e| TenancyError::Corrupt(format!("move id {id:?}: {e}")))?,
            tenant,
            from: placement(row.try_get(1)?, row.try_get(2)?, row.try_get(3)?)?,
            to: placement(row.try_get(4)?, row.try_get(5)?, row.try_get(6)?)?,
            phase: MovePhase::parse(row.try_get(7)?)?,
            keep_source: row.try_get(8)?,
            to_postgres: row.try_get::<String, _>(9)? == "postgres",
            dir: dir.to_path_buf(),
        }));
    }
    Ok(None)
}

/// Records that `row.phase` is done.
pub(super) async fn record(row: &MoveRow, now: DateTime<Utc>) -> Result<(), TenancyError> {
    let Some(mut conn) = open(&row.dir, false).await? else {
        return Err(TenancyError::Corrupt(format!(
            "the move ledger of move {} is gone from {}",
            row.id,
            row.dir.display()
        )));
    };
    let result =
        sqlx::query("UPDATE saas_tenant_moves SET phase = ?2, updated_at = ?3 WHERE id = ?1")
            .bind(row.id.to_string())
            .bind(row.phase.as_str())
            .bind(now.to_rfc3339())
            .execute(&mut conn)
            .await;
    conn.close().await?;
    result?;
    Ok(())
}
