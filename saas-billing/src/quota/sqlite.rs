//! The SQLite quota store: the shared quota logic ([`super::sql`]) on the
//! PostgreSQL store's tables in SQLite types (`STRICT`; tenant ids as
//! `TenantId`'s 16-byte BLOB encoding, like the other SQLite stores;
//! expiry as Unix nanoseconds). Every operation but a commit (one
//! statement) runs in one `BEGIN IMMEDIATE` transaction, which SQLite
//! serializes across connections and processes sharing the file, so
//! grants are exact.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::{SharedClock, SystemClock, TenantId};
use sqlx::Row;
use sqlx::{Executor, Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::grants::grant_conflict;
use super::sql::{self, Op, QuotaDialect};
use super::{QuotaGrant, QuotaGrantStore, check_amount};
use crate::error::BillingError;
use crate::store::sql::dialect::Param;
use crate::store::sqlite::{begin_write, begin_write_on, db_error};

const MIGRATION: &str = r#"
CREATE TABLE IF NOT EXISTS billing_quota_usage (
    tenant_id BLOB NOT NULL,
    name TEXT NOT NULL,
    period TEXT NOT NULL,
    used INTEGER NOT NULL CHECK (used >= 0),
    PRIMARY KEY (tenant_id, name, period)
) STRICT;

CREATE TABLE IF NOT EXISTS billing_quota_reservations (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id BLOB NOT NULL,
    name TEXT NOT NULL,
    period TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount >= 0),
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS billing_quota_reservations_key_idx
    ON billing_quota_reservations (tenant_id, name, period, expires_at);

CREATE TABLE IF NOT EXISTS billing_quota_grants (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id BLOB NOT NULL,
    name TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    period TEXT,
    expires_at INTEGER,
    CHECK (period IS NOT NULL OR expires_at IS NOT NULL)
) STRICT;
CREATE INDEX IF NOT EXISTS billing_quota_grants_tenant_idx
    ON billing_quota_grants (tenant_id, name);
"#;

#[async_trait]
impl QuotaDialect for Sqlite {
    // SQLite has no data-modifying CTE: subtract, then delete, inside the
    // operation's write transaction, which no other writer can interleave.
    const RECLAIM: &'static [&'static str] = &[
        "UPDATE billing_quota_usage \
         SET used = used - (SELECT coalesce(sum(amount), 0) FROM billing_quota_reservations \
                            WHERE tenant_id = $1 AND name = $2 AND period = $3 \
                            AND expires_at <= $4) \
         WHERE tenant_id = $1 AND name = $2 AND period = $3 \
         AND EXISTS (SELECT 1 FROM billing_quota_reservations \
                     WHERE tenant_id = $1 AND name = $2 AND period = $3 AND expires_at <= $4)",
        "DELETE FROM billing_quota_reservations \
         WHERE tenant_id = $1 AND name = $2 AND period = $3 AND expires_at <= $4",
    ];
    const RELEASE: &'static [&'static str] = &[
        "UPDATE billing_quota_usage \
         SET used = used - (SELECT amount FROM billing_quota_reservations \
                            WHERE tenant_id = $1 AND name = $2 AND period = $3 AND id = $4) \
         WHERE tenant_id = $1 AND name = $2 AND period = $3 \
         AND EXISTS (SELECT 1 FROM billing_quota_reservations \
                     WHERE tenant_id = $1 AND name = $2 AND period = $3 AND id = $4)",
        "DELETE FROM billing_quota_reservations \
         WHERE tenant_id = $1 AND name = $2 AND period = $3 AND id = $4",
    ];

    /// Unix nanoseconds: an `INTEGER` that compares like the instant.
    fn instant(at: DateTime<Utc>) -> Result<Param, BillingError> {
        at.timestamp_nanos_opt()
            .map(Param::Int)
            .ok_or_else(|| BillingError::InvalidInput {
                field: "reservation ttl",
                reason: format!(
                    "expiry {at} is past what SQLite stores (year 2262); use a shorter ttl"
                ),
            })
    }

    /// `BEGIN IMMEDIATE` (a savepoint in the caller's transaction): the
    /// operation holds the write lock from its first read.
    async fn begin_op(conn: &mut SqliteConnection) -> Result<Op<'_, Sqlite>, BillingError> {
        begin_write_on(conn).await.map(Op::Transaction)
    }
}

/// A [`QuotaStore`](super::QuotaStore) in SQLite (feature `sqlite`), exact across every
/// connection and process sharing the database file. Run
/// [`migrate`](SqliteQuotaStore::migrate) once (idempotent). Use a file
/// database in WAL mode with a busy timeout, as for the other SQLite
/// stores.
#[derive(Debug, Clone)]
pub struct SqliteQuotaStore {
    pool: SqlitePool,
    clock: SharedClock,
}

impl SqliteQuotaStore {
    /// A store on `pool` whose reservations expire by the system clock.
    pub fn new(pool: SqlitePool) -> SqliteQuotaStore {
        SqliteQuotaStore::with_clock(pool, Arc::new(SystemClock))
    }

    /// A store on `pool` whose reservations expire by `clock`.
    pub fn with_clock(pool: SqlitePool, clock: SharedClock) -> SqliteQuotaStore {
        SqliteQuotaStore { pool, clock }
    }

    /// Creates the quota tables if they do not exist (one `BEGIN
    /// IMMEDIATE` transaction; idempotent).
    ///
    /// # Errors
    /// `Backend` if SQLite fails.
    pub async fn migrate(&self) -> Result<(), BillingError> {
        let mut tx = begin_write(&self.pool).await?;
        tx.execute(MIGRATION).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

sql::quota_methods_in! {
    SqliteQuotaStore, Sqlite, SqliteConnection;
    /// [`QuotaStore::try_consume`](super::QuotaStore::try_consume) on `conn`: inside the caller's
    /// transaction when `conn` is in one (`&mut *tx` for a
    /// `sqlx::Transaction` or a saas-tenancy tenant transaction), so the
    /// grant commits or rolls back with the caller's writes — a
    /// rolled-back grant leaves `used` as it was. The pool method runs
    /// this on a connection of the pool.
    ///
    /// In a transaction it runs in a savepoint (whole or not at all; a
    /// failure rolls back only the savepoint); outside one, in a `BEGIN
    /// IMMEDIATE` transaction of its own. Begin the caller's transaction
    /// with `BEGIN IMMEDIATE`: SQLite serializes writers, so the count is
    /// exact, and a deferred transaction that has read first may fail
    /// with `SQLITE_BUSY` (`Backend`, retryable) when it writes. Other
    /// writers wait for the caller's transaction: keep it short. The
    /// tables are the ones `conn` reaches, not this store's pool's.
    ///
    /// # Errors
    /// As [`QuotaStore::try_consume`](super::QuotaStore::try_consume).
    fn try_consume_in;
    fn reserve_in;
    fn commit_in;
    fn release_in;
    fn give_back_in;
    fn used_in;
}

fn grant_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<QuotaGrant, BillingError> {
    let id: String = row.try_get("id").map_err(db_error)?;
    let id = Uuid::parse_str(&id).map_err(|error| BillingError::Backend {
        backend: "sqlite",
        retryable: false,
        message: format!("quota grant id {id:?} is not a UUID: {error}"),
    })?;
    let amount: i64 = row.try_get("amount").map_err(db_error)?;
    let expires_at: Option<i64> = row.try_get("expires_at").map_err(db_error)?;
    QuotaGrant::from_parts(
        id,
        row.try_get("tenant_id").map_err(db_error)?,
        row.try_get("name").map_err(db_error)?,
        // CHECK (amount > 0)
        u64::try_from(amount).unwrap_or(0),
        row.try_get("period").map_err(db_error)?,
        expires_at.map(DateTime::from_timestamp_nanos),
    )
}

#[async_trait]
impl QuotaGrantStore for SqliteQuotaStore {
    async fn add_grant(&self, grant: &QuotaGrant) -> Result<(), BillingError> {
        let amount = check_amount("quota grant amount", grant.amount())?;
        let expires_at = grant
            .expires_at()
            .map(|at| {
                at.timestamp_nanos_opt()
                    .ok_or_else(|| BillingError::InvalidInput {
                        field: "quota grant expiry",
                        reason: format!("{at} is outside the years 1677-2262 SQLite stores"),
                    })
            })
            .transpose()?;
        // One write transaction: the insert and, if the id is taken, the
        // read telling a retry from a conflict see the same row.
        let mut tx = begin_write(&self.pool).await?;
        let inserted = sqlx::query(
            "INSERT INTO billing_quota_grants (id, tenant_id, name, amount, period, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(grant.id().to_string())
        .bind(grant.tenant())
        .bind(grant.name())
        .bind(amount)
        .bind(grant.period())
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        let outcome = if inserted == 1 {
            Ok(())
        } else {
            let row = sqlx::query(
                "SELECT id, tenant_id, name, amount, period, expires_at \
                 FROM billing_quota_grants WHERE id = $1",
            )
            .bind(grant.id().to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            if &grant_from_row(&row)? == grant {
                Ok(())
            } else {
                Err(grant_conflict(grant))
            }
        };
        tx.commit().await.map_err(db_error)?;
        outcome
    }

    async fn grants(&self, tenant: TenantId, name: &str) -> Result<Vec<QuotaGrant>, BillingError> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, name, amount, period, expires_at \
             FROM billing_quota_grants WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant)
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(grant_from_row).collect()
    }
}
