//! The PostgreSQL quota store: the shared quota logic ([`super::sql`])
//! in PostgreSQL types.
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

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::{SharedClock, SystemClock, TenantId};
use sqlx::Row;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use super::grants::grant_conflict;
use super::sql::{self, Op, QuotaDialect};
use super::{QuotaGrant, QuotaGrantStore, check_amount};
use crate::error::BillingError;
use crate::store::postgres::{db_error, migrate_locked};
use crate::store::sql::dialect::Param;

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

CREATE TABLE IF NOT EXISTS billing_quota_grants (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    name text NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    period text,
    expires_at timestamptz,
    CHECK (period IS NOT NULL OR expires_at IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS billing_quota_grants_tenant_idx
    ON billing_quota_grants (tenant_id, name);
"#;

#[async_trait]
impl QuotaDialect for Postgres {
    // One statement each (a data-modifying CTE): on a connection outside
    // a transaction the delete and the subtraction still happen together,
    // and of two racing reclaims only the one that deleted subtracts.
    const RECLAIM: &'static [&'static str] = &["WITH expired AS ( \
           DELETE FROM billing_quota_reservations \
           WHERE tenant_id = $1 AND name = $2 AND period = $3 AND expires_at <= $4 \
           RETURNING amount) \
         UPDATE billing_quota_usage \
         SET used = used - (SELECT coalesce(sum(amount), 0) FROM expired)::bigint \
         WHERE tenant_id = $1 AND name = $2 AND period = $3 AND EXISTS (SELECT 1 FROM expired)"];
    const RELEASE: &'static [&'static str] = &["WITH released AS ( \
           DELETE FROM billing_quota_reservations \
           WHERE tenant_id = $1 AND name = $2 AND period = $3 AND id = $4 \
           RETURNING amount) \
         UPDATE billing_quota_usage SET used = used - released.amount \
         FROM released \
         WHERE tenant_id = $1 AND name = $2 AND period = $3"];

    fn instant(at: DateTime<Utc>) -> Result<Param, BillingError> {
        Ok(Param::At(Some(at)))
    }

    /// No transaction of its own: each statement serializes itself (the
    /// grant by the key's row lock), so an operation inside the caller's
    /// transaction holds no more than those locks.
    async fn begin_op(conn: &mut PgConnection) -> Result<Op<'_, Postgres>, BillingError> {
        Ok(Op::Statements(conn))
    }
}

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
        migrate_locked(&self.pool, MIGRATION).await
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

sql::quota_methods_in! {
    PgQuotaStore, Postgres, PgConnection;
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
    fn try_consume_in;
    /// Runs in a savepoint (a transaction of its own outside one).
    fn reserve_in;
    fn commit_in;
    fn release_in;
    fn give_back_in;
    fn used_in;
}

fn grant_from_row(row: &sqlx::postgres::PgRow) -> Result<QuotaGrant, BillingError> {
    let amount: i64 = row.try_get("amount").map_err(db_error)?;
    QuotaGrant::from_parts(
        row.try_get::<Uuid, _>("id").map_err(db_error)?,
        row.try_get("tenant_id").map_err(db_error)?,
        row.try_get("name").map_err(db_error)?,
        // CHECK (amount > 0)
        u64::try_from(amount).unwrap_or(0),
        row.try_get("period").map_err(db_error)?,
        row.try_get("expires_at").map_err(db_error)?,
    )
}

#[async_trait]
impl QuotaGrantStore for PgQuotaStore {
    async fn add_grant(&self, grant: &QuotaGrant) -> Result<(), BillingError> {
        let amount = check_amount("quota grant amount", grant.amount())?;
        // Insert or keep the first: a retry of the same grant is a no-op,
        // and a conflicting one is told apart by reading what is stored.
        let inserted = sqlx::query(
            "INSERT INTO billing_quota_grants (id, tenant_id, name, amount, period, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(grant.id())
        .bind(grant.tenant())
        .bind(grant.name())
        .bind(amount)
        .bind(grant.period())
        .bind(grant.expires_at())
        .execute(&self.pool)
        .await
        .map_err(db_error)?
        .rows_affected();
        if inserted == 1 {
            return Ok(());
        }
        let row = sqlx::query(
            "SELECT id, tenant_id, name, amount, period, expires_at \
                 FROM billing_quota_grants WHERE id = $1",
        )
        .bind(grant.id())
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        if &grant_from_row(&row)? == grant {
            Ok(())
        } else {
            Err(grant_conflict(grant))
        }
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
