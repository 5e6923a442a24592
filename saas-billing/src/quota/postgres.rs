//! The PostgreSQL quota store.
//!
//! Schema: `billing_quota_usage` holds one row per (tenant, name, period)
//! with its `used` amount (`bigint`, `CHECK (used >= 0)`); every grant is
//! one `INSERT … ON CONFLICT DO UPDATE … WHERE used <= limit - amount
//! RETURNING used`, so racing servers are serialized by the row lock and
//! the limit is checked against the latest committed count.
//! `billing_quota_reservations` holds live reservations; their units are
//! included in `used`. An expired reservation is reclaimed (deleted and
//! subtracted, in one statement, so exactly once) before the next grant
//! or read of its key.

use std::time::Duration;

use chrono::{DateTime, Utc};
use saas_core::{SharedClock, SystemClock};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Executor, PgConnection, PgPool, Postgres};
use std::sync::Arc;
use uuid::Uuid;

use super::{
    Consumption, QuotaKey, Reservation, ReserveOutcome, check_amount, expiry, give_back_too_much,
    reservation_not_found,
};
use crate::error::BillingError;
use crate::store::postgres::db_error;

const MIGRATION: &str = r#"
CREATE TABLE IF NOT EXISTS billing_quota_usage (
    tenant_id uuid NOT NULL,
    name text NOT NULL,
    period text NOT NULL,
    used bigint NOT NULL CHECK (used >= 0),
    PRIMARY KEY (tenant_id, name, period)
);

CREATE TABLE IF NOT EXISTS billing_quota_reservations (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    name text NOT NULL,
    period text NOT NULL,
    amount bigint NOT NULL CHECK (amount >= 0),
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS billing_quota_reservations_key_idx
    ON billing_quota_reservations (tenant_id, name, period, expires_at);
"#;

const RECLAIM: &str = "WITH expired AS ( \
       DELETE FROM billing_quota_reservations \
       WHERE tenant_id = $1 AND name = $2 AND period = $3 AND expires_at <= $4 \
       RETURNING amount) \
     UPDATE billing_quota_usage \
     SET used = used - (SELECT coalesce(sum(amount), 0) FROM expired)::bigint \
     WHERE tenant_id = $1 AND name = $2 AND period = $3 AND EXISTS (SELECT 1 FROM expired)";

// `used <= limit - amount` rather than `used + amount <= limit`: the
// caller checked `amount <= limit`, so neither side can overflow.
const CONSUME: &str = "INSERT INTO billing_quota_usage (tenant_id, name, period, used) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (tenant_id, name, period) DO UPDATE \
     SET used = billing_quota_usage.used + EXCLUDED.used \
     WHERE billing_quota_usage.used <= $5 - EXCLUDED.used \
     RETURNING used";

const USED: &str =
    "SELECT used FROM billing_quota_usage WHERE tenant_id = $1 AND name = $2 AND period = $3";

/// A [`QuotaStore`](super::QuotaStore) in PostgreSQL (feature `postgres`), exact across every
/// server sharing the database, on a [`PgPool`] whose `search_path` holds
/// the tables. Run [`migrate`](PgQuotaStore::migrate) once (it is
/// idempotent and safe to run concurrently).
///
/// ```no_run
/// use saas_billing::quota::{PgQuotaStore, QuotaKey, QuotaStore};
/// use saas_billing::TenantId;
///
/// # async fn run(tenant: TenantId) -> Result<(), Box<dyn std::error::Error>> {
/// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/app").await?;
/// let quotas = PgQuotaStore::new(pool);
/// quotas.migrate().await?;
/// let key = QuotaKey::new(tenant, "api_calls", "2026-12")?;
/// if !quotas.try_consume(&key, 1, 10_000).await?.is_granted() {
///     // answer 429
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PgQuotaStore {
    pool: PgPool,
    clock: SharedClock,
}

impl PgQuotaStore {
    /// A store on `pool` whose reservations expire by the system clock.
    pub fn new(pool: PgPool) -> PgQuotaStore {
        PgQuotaStore::with_clock(pool, Arc::new(SystemClock))
    }

    /// A store on `pool` whose reservations expire by `clock`.
    pub fn with_clock(pool: PgPool, clock: SharedClock) -> PgQuotaStore {
        PgQuotaStore { pool, clock }
    }

    /// Creates the quota tables if they do not exist, in one transaction
    /// under the same advisory lock as
    /// [`PgBillingStores::migrate`](crate::store::postgres::PgBillingStores::migrate).
    ///
    /// # Errors
    /// `Backend` if PostgreSQL fails.
    pub async fn migrate(&self) -> Result<(), BillingError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('saas_billing.migrate'))")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.execute(MIGRATION).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn reclaim<'e, E>(
        executor: E,
        key: &QuotaKey,
        now: DateTime<Utc>,
    ) -> Result<(), BillingError>
    where
        E: Executor<'e, Database = Postgres>,
    {
        sqlx::query(RECLAIM)
            .bind(key.tenant().as_uuid())
            .bind(key.name())
            .bind(key.period())
            .bind(now)
            .execute(executor)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Adds `amount` if it fits; `Ok(Some(used))` when granted.
    async fn consume<'e, E>(
        executor: E,
        key: &QuotaKey,
        amount: i64,
        limit: i64,
    ) -> Result<Option<i64>, BillingError>
    where
        E: Executor<'e, Database = Postgres>,
    {
        if amount > limit {
            return Ok(None);
        }
        sqlx::query_scalar::<_, i64>(CONSUME)
            .bind(key.tenant().as_uuid())
            .bind(key.name())
            .bind(key.period())
            .bind(amount)
            .bind(limit)
            .fetch_optional(executor)
            .await
            .map_err(db_error)
    }

    /// [`QuotaStore::try_consume`](super::QuotaStore::try_consume) on `conn`: inside the caller's
    /// transaction when `conn` is in one (`&mut *tx` for a
    /// `sqlx::Transaction` or a saas-tenancy `PgTenantTx`), so the grant
    /// commits or rolls back with the caller's writes — a rolled-back
    /// grant leaves `used` as it was. The pool method runs this on a
    /// connection of the pool.
    ///
    /// The tables are the ones `conn`'s `search_path` finds (a shared
    /// schema on every tenant's search path, or the tenant's own schema,
    /// as the host placed them), not this store's pool's. The grant's row
    /// lock on the key is held until the caller's transaction ends: other
    /// grants of the same key (tenant, name, period) wait for it, which is
    /// what keeps the count exact — keep the transaction short. A failed
    /// statement aborts the caller's PostgreSQL transaction, as any does:
    /// roll it back.
    ///
    /// # Errors
    /// As [`QuotaStore::try_consume`](super::QuotaStore::try_consume).
    pub async fn try_consume_in(
        &self,
        conn: &mut PgConnection,
        key: &QuotaKey,
        amount: u64,
        limit: u64,
    ) -> Result<Consumption, BillingError> {
        let amount = check_amount("quota amount", amount)?;
        let limit = check_amount("quota limit", limit)?;
        Self::reclaim(&mut *conn, key, self.clock.now()).await?;
        match Self::consume(&mut *conn, key, amount, limit).await? {
            Some(used) => Ok(Consumption::Granted {
                remaining: to_u64(limit - used),
            }),
            None => Ok(Consumption::Denied {
                remaining: self.remaining_in(conn, key, limit).await?,
            }),
        }
    }

    /// [`QuotaStore::reserve`](super::QuotaStore::reserve) on `conn` (see
    /// [`try_consume_in`](Self::try_consume_in)): the reservation exists
    /// only if the caller's transaction commits. Runs in a savepoint (a
    /// transaction of its own outside one).
    ///
    /// # Errors
    /// As [`QuotaStore::reserve`](super::QuotaStore::reserve).
    pub async fn reserve_in(
        &self,
        conn: &mut PgConnection,
        key: &QuotaKey,
        amount: u64,
        limit: u64,
        ttl: Duration,
    ) -> Result<ReserveOutcome, BillingError> {
        let amount_i = check_amount("quota amount", amount)?;
        let limit_i = check_amount("quota limit", limit)?;
        let now = self.clock.now();
        let expires_at = expiry(now, ttl)?;
        Self::reclaim(&mut *conn, key, now).await?;
        let mut tx = conn.begin().await.map_err(db_error)?;
        if Self::consume(&mut *tx, key, amount_i, limit_i)
            .await?
            .is_none()
        {
            tx.rollback().await.map_err(db_error)?;
            return Ok(ReserveOutcome::Denied {
                remaining: self.remaining_in(conn, key, limit_i).await?,
            });
        }
        let reservation = Reservation {
            id: Uuid::new_v4(),
            key: key.clone(),
            amount,
            expires_at,
        };
        sqlx::query(
            "INSERT INTO billing_quota_reservations \
             (id, tenant_id, name, period, amount, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(reservation.id)
        .bind(key.tenant().as_uuid())
        .bind(key.name())
        .bind(key.period())
        .bind(amount_i)
        .bind(expires_at)
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
        conn: &mut PgConnection,
        reservation: &Reservation,
    ) -> Result<(), BillingError> {
        let key = &reservation.key;
        let committed = sqlx::query(
            "DELETE FROM billing_quota_reservations \
             WHERE id = $1 AND tenant_id = $2 AND name = $3 AND period = $4 AND expires_at > $5",
        )
        .bind(reservation.id)
        .bind(key.tenant().as_uuid())
        .bind(key.name())
        .bind(key.period())
        .bind(self.clock.now())
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
        conn: &mut PgConnection,
        reservation: &Reservation,
    ) -> Result<(), BillingError> {
        let key = &reservation.key;
        sqlx::query(
            "WITH released AS ( \
               DELETE FROM billing_quota_reservations \
               WHERE id = $1 AND tenant_id = $2 AND name = $3 AND period = $4 \
               RETURNING amount) \
             UPDATE billing_quota_usage SET used = used - released.amount \
             FROM released \
             WHERE tenant_id = $2 AND name = $3 AND period = $4",
        )
        .bind(reservation.id)
        .bind(key.tenant().as_uuid())
        .bind(key.name())
        .bind(key.period())
        .execute(conn)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// [`QuotaStore::give_back`](super::QuotaStore::give_back) on `conn` (see
    /// [`try_consume_in`](Self::try_consume_in)): the units go back only
    /// if the caller's transaction commits (a project deleted in it).
    ///
    /// # Errors
    /// As [`QuotaStore::give_back`](super::QuotaStore::give_back).
    pub async fn give_back_in(
        &self,
        conn: &mut PgConnection,
        key: &QuotaKey,
        amount: u64,
    ) -> Result<(), BillingError> {
        let amount_i = check_amount("give_back amount", amount)?;
        Self::reclaim(&mut *conn, key, self.clock.now()).await?;
        let updated = sqlx::query(
            "UPDATE billing_quota_usage SET used = used - $4 \
             WHERE tenant_id = $1 AND name = $2 AND period = $3 \
             AND used - $4 >= (SELECT coalesce(sum(amount), 0) FROM billing_quota_reservations \
                               WHERE tenant_id = $1 AND name = $2 AND period = $3)",
        )
        .bind(key.tenant().as_uuid())
        .bind(key.name())
        .bind(key.period())
        .bind(amount_i)
        .execute(conn)
        .await
        .map_err(db_error)?
        .rows_affected();
        if updated == 1 || amount == 0 {
            Ok(())
        } else {
            Err(give_back_too_much(key, amount))
        }
    }

    /// [`QuotaStore::used`](super::QuotaStore::used) on `conn`: what the caller's transaction sees,
    /// its own uncommitted grants included.
    ///
    /// # Errors
    /// As [`QuotaStore::used`](super::QuotaStore::used).
    pub async fn used_in(
        &self,
        conn: &mut PgConnection,
        key: &QuotaKey,
    ) -> Result<u64, BillingError> {
        Self::reclaim(&mut *conn, key, self.clock.now()).await?;
        let used = sqlx::query_scalar::<_, i64>(USED)
            .bind(key.tenant().as_uuid())
            .bind(key.name())
            .bind(key.period())
            .fetch_optional(conn)
            .await
            .map_err(db_error)?;
        Ok(used.map_or(0, to_u64))
    }

    async fn remaining_in(
        &self,
        conn: &mut PgConnection,
        key: &QuotaKey,
        limit: i64,
    ) -> Result<u64, BillingError> {
        let used = self.used_in(conn, key).await?;
        Ok(u64::try_from(limit).unwrap_or(0).saturating_sub(used))
    }

    async fn acquire(&self) -> Result<PoolConnection<Postgres>, BillingError> {
        self.pool.acquire().await.map_err(db_error)
    }
}

fn to_u64(value: i64) -> u64 {
    // `used` has CHECK (used >= 0).
    u64::try_from(value).unwrap_or(0)
}

super::quota_store_over_connections!(PgQuotaStore);
