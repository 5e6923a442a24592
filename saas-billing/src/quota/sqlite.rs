//! The SQLite quota store: the PostgreSQL store's tables in SQLite types
//! (`STRICT`; tenant ids as `TenantId`'s 16-byte BLOB encoding, like the
//! other SQLite stores; expiry as Unix nanoseconds). Every operation runs
//! in one `BEGIN IMMEDIATE` transaction, which SQLite serializes across
//! connections and processes sharing the file, so grants are exact.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use saas_core::{SharedClock, SystemClock};
use sqlx::pool::PoolConnection;
use sqlx::{Executor, Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::{
    Consumption, QuotaKey, Reservation, ReserveOutcome, check_amount, expiry, give_back_too_much,
    reservation_not_found,
};
use crate::error::BillingError;
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
"#;

const KEY: &str = "tenant_id = ?1 AND name = ?2 AND period = ?3";

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

fn nanos(at: DateTime<Utc>) -> Result<i64, BillingError> {
    at.timestamp_nanos_opt()
        .ok_or_else(|| BillingError::InvalidInput {
            field: "reservation ttl",
            reason: format!(
                "expiry {at} is past what SQLite stores (year 2262); use a shorter ttl"
            ),
        })
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

    /// Deletes the key's expired reservations and subtracts their units.
    async fn reclaim(
        conn: &mut SqliteConnection,
        key: &QuotaKey,
        now: i64,
    ) -> Result<(), BillingError> {
        let expired: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT coalesce(sum(amount), 0) FROM billing_quota_reservations \
             WHERE {KEY} AND expires_at <= ?4"
        )))
        .bind(key.tenant())
        .bind(key.name())
        .bind(key.period())
        .bind(now)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
        if expired > 0 {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM billing_quota_reservations WHERE {KEY} AND expires_at <= ?4"
            )))
            .bind(key.tenant())
            .bind(key.name())
            .bind(key.period())
            .bind(now)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE billing_quota_usage SET used = used - ?4 WHERE {KEY}"
            )))
            .bind(key.tenant())
            .bind(key.name())
            .bind(key.period())
            .bind(expired)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        }
        Ok(())
    }

    async fn read_used(conn: &mut SqliteConnection, key: &QuotaKey) -> Result<i64, BillingError> {
        let used: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT used FROM billing_quota_usage WHERE {KEY}"
        )))
        .bind(key.tenant())
        .bind(key.name())
        .bind(key.period())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
        Ok(used.unwrap_or(0))
    }

    /// In an open write transaction on `conn`: reclaims, then adds `amount` if it
    /// fits. `Ok(Ok(remaining))` when granted, `Ok(Err(remaining))` when not.
    async fn consume(
        conn: &mut SqliteConnection,
        key: &QuotaKey,
        amount: i64,
        limit: i64,
        now: i64,
    ) -> Result<Result<u64, u64>, BillingError> {
        Self::reclaim(conn, key, now).await?;
        let used = Self::read_used(conn, key).await?;
        // used >= 0 and amount, limit <= i64::MAX: no overflow.
        if amount > limit || used > limit - amount {
            return Ok(Err(to_u64(limit.saturating_sub(used))));
        }
        sqlx::query(
            "INSERT INTO billing_quota_usage (tenant_id, name, period, used) \
             VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (tenant_id, name, period) DO UPDATE SET used = used + excluded.used",
        )
        .bind(key.tenant())
        .bind(key.name())
        .bind(key.period())
        .bind(amount)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        Ok(Ok(to_u64(limit - used - amount)))
    }
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl SqliteQuotaStore {
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
    pub async fn try_consume_in(
        &self,
        conn: &mut SqliteConnection,
        key: &QuotaKey,
        amount: u64,
        limit: u64,
    ) -> Result<Consumption, BillingError> {
        let amount = check_amount("quota amount", amount)?;
        let limit = check_amount("quota limit", limit)?;
        let now = nanos(self.clock.now())?;
        let mut tx = begin_write_on(conn).await?;
        let outcome = Self::consume(&mut tx, key, amount, limit, now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(match outcome {
            Ok(remaining) => Consumption::Granted { remaining },
            Err(remaining) => Consumption::Denied { remaining },
        })
    }

    /// [`QuotaStore::reserve`](super::QuotaStore::reserve) on `conn` (see
    /// [`try_consume_in`](Self::try_consume_in)): the reservation exists
    /// only if the caller's transaction commits.
    ///
    /// # Errors
    /// As [`QuotaStore::reserve`](super::QuotaStore::reserve).
    pub async fn reserve_in(
        &self,
        conn: &mut SqliteConnection,
        key: &QuotaKey,
        amount: u64,
        limit: u64,
        ttl: Duration,
    ) -> Result<ReserveOutcome, BillingError> {
        let amount_i = check_amount("quota amount", amount)?;
        let limit_i = check_amount("quota limit", limit)?;
        let now_at = self.clock.now();
        let expires_at = expiry(now_at, ttl)?;
        let (now, expires) = (nanos(now_at)?, nanos(expires_at)?);
        let mut tx = begin_write_on(conn).await?;
        if let Err(remaining) = Self::consume(&mut tx, key, amount_i, limit_i, now).await? {
            tx.commit().await.map_err(db_error)?;
            return Ok(ReserveOutcome::Denied { remaining });
        }
        let reservation = Reservation {
            id: Uuid::new_v4(),
            key: key.clone(),
            amount,
            expires_at,
        };
        sqlx::query(
            "INSERT INTO billing_quota_reservations \
             (id, tenant_id, name, period, amount, expires_at) VALUES (?5, ?1, ?2, ?3, ?4, ?6)",
        )
        .bind(key.tenant())
        .bind(key.name())
        .bind(key.period())
        .bind(amount_i)
        .bind(reservation.id.to_string())
        .bind(expires)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(ReserveOutcome::Reserved(reservation))
    }

    /// [`QuotaStore::commit`](super::QuotaStore::commit) on `conn` (see
    /// [`try_consume_in`](Self::try_consume_in)): reserve before the
    /// business transaction, commit the reservation inside it; if the
    /// transaction rolls back, the reservation stays uncommitted and its
    /// units go back when it expires (or on [`QuotaStore::release`](super::QuotaStore::release)).
    ///
    /// # Errors
    /// As [`QuotaStore::commit`](super::QuotaStore::commit).
    pub async fn commit_in(
        &self,
        conn: &mut SqliteConnection,
        reservation: &Reservation,
    ) -> Result<(), BillingError> {
        let key = &reservation.key;
        let now = nanos(self.clock.now())?;
        let committed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM billing_quota_reservations WHERE id = ?4 AND {KEY} AND expires_at > ?5"
        )))
        .bind(key.tenant())
        .bind(key.name())
        .bind(key.period())
        .bind(reservation.id.to_string())
        .bind(now)
        .execute(conn)
        .await
        .map_err(db_error)?
        .rows_affected();
        if committed == 1 {
            Ok(())
        } else {
            Err(reservation_not_found(reservation))
        }
    }

    /// [`QuotaStore::release`](super::QuotaStore::release) on `conn` (see
    /// [`try_consume_in`](Self::try_consume_in)).
    ///
    /// # Errors
    /// As [`QuotaStore::release`](super::QuotaStore::release).
    pub async fn release_in(
        &self,
        conn: &mut SqliteConnection,
        reservation: &Reservation,
    ) -> Result<(), BillingError> {
        let key = &reservation.key;
        let mut tx = begin_write_on(conn).await?;
        let released: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "DELETE FROM billing_quota_reservations WHERE id = ?4 AND {KEY} RETURNING amount"
        )))
        .bind(key.tenant())
        .bind(key.name())
        .bind(key.period())
        .bind(reservation.id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if let Some(amount) = released {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE billing_quota_usage SET used = used - ?4 WHERE {KEY}"
            )))
            .bind(key.tenant())
            .bind(key.name())
            .bind(key.period())
            .bind(amount)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }

    /// [`QuotaStore::give_back`](super::QuotaStore::give_back) on `conn` (see
    /// [`try_consume_in`](Self::try_consume_in)): the units go back only
    /// if the caller's transaction commits.
    ///
    /// # Errors
    /// As [`QuotaStore::give_back`](super::QuotaStore::give_back).
    pub async fn give_back_in(
        &self,
        conn: &mut SqliteConnection,
        key: &QuotaKey,
        amount: u64,
    ) -> Result<(), BillingError> {
        let amount_i = check_amount("give_back amount", amount)?;
        let now = nanos(self.clock.now())?;
        let mut tx = begin_write_on(conn).await?;
        Self::reclaim(&mut tx, key, now).await?;
        let used = Self::read_used(&mut tx, key).await?;
        let reserved: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT coalesce(sum(amount), 0) FROM billing_quota_reservations WHERE {KEY}"
        )))
        .bind(key.tenant())
        .bind(key.name())
        .bind(key.period())
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        if used - reserved < amount_i {
            tx.commit().await.map_err(db_error)?;
            return Err(give_back_too_much(key, amount));
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE billing_quota_usage SET used = used - ?4 WHERE {KEY}"
        )))
        .bind(key.tenant())
        .bind(key.name())
        .bind(key.period())
        .bind(amount_i)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    /// [`QuotaStore::used`](super::QuotaStore::used) on `conn`: what the caller's transaction
    /// sees, its own uncommitted grants included.
    ///
    /// # Errors
    /// As [`QuotaStore::used`](super::QuotaStore::used).
    pub async fn used_in(
        &self,
        conn: &mut SqliteConnection,
        key: &QuotaKey,
    ) -> Result<u64, BillingError> {
        let now = nanos(self.clock.now())?;
        let mut tx = begin_write_on(conn).await?;
        Self::reclaim(&mut tx, key, now).await?;
        let used = Self::read_used(&mut tx, key).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(to_u64(used))
    }

    async fn acquire(&self) -> Result<PoolConnection<Sqlite>, BillingError> {
        self.pool.acquire().await.map_err(db_error)
    }
}

super::quota_store_over_connections!(SqliteQuotaStore);
