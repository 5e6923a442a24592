//! [`UsageStore`](crate::store::UsageStore) on PostgreSQL: the shared
//! implementation ([`crate::store::sql::usage`]) with shared advisory
//! locks on the batch's subscriptions (sealing takes them exclusively) and
//! the batch as arrays: one multi-row `INSERT … SELECT FROM unnest(…) ON
//! CONFLICT DO NOTHING RETURNING`, then one read of the rows that
//! conflicted.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use saas_core::TenantId;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::{BACKEND, db_error};
use crate::error::BillingError;
use crate::ids::SubscriptionId;
use crate::metering::UsageEvent;
use crate::store::sql::corrupt;
use crate::store::sql::ingest::{Key, NewRow};
use crate::store::sql::to_json;
use crate::store::sql::usage::{UsageDialect, UsageTable, ingest_on};
use crate::store::{IngestOutcome, UsageRecord, UsageWriter};

/// Usage events in `billing_usage_events`, idempotent per tenant and key.
///
/// Implements [`UsageStore`](crate::store::UsageStore) through the
/// implementation it shares with the other SQL backend.
///
/// Within one batch, new rows are inserted (and numbered) in (tenant,
/// key) order, so that concurrent batches sharing keys take their row
/// locks in one order and cannot deadlock.
#[derive(Debug, Clone)]
pub struct PgUsageStore {
    pool: PgPool,
}

impl PgUsageStore {
    /// A store on `pool` (run [`PgBillingStores::migrate`](super::PgBillingStores::migrate) first).
    pub fn new(pool: PgPool) -> PgUsageStore {
        PgUsageStore { pool }
    }

    /// Stores `batch` on `conn`, inside the caller's transaction when
    /// `conn` is in one, so the usage commits or rolls back with the
    /// caller's own writes; outcomes as [`UsageStore::ingest`](crate::store::UsageStore::ingest) (which
    /// runs this on a connection of the store's pool).
    ///
    /// Pass `&mut *tx` for a `sqlx::Transaction<'_, Postgres>` or a
    /// saas-tenancy `PgTenantTx` (any placement): both dereference to a
    /// [`PgConnection`]. Engine-level validation (subscription, meter,
    /// timestamps) is [`BillingEngine::record_usage_in`](crate::BillingEngine::record_usage_in),
    /// which calls this through [`UsageWriter`].
    ///
    /// - **Where**: the tables are the ones `conn`'s `search_path` finds
    ///   (`billing_usage_events`, `billing_usage_seals`), not this store's
    ///   pool's. The host decides where they live: in a shared schema on
    ///   every tenant transaction's search path, or in each tenant's own
    ///   schema (migrate each, and read them with stores whose pools
    ///   reach that schema). The caller's transaction must see them, or
    ///   this fails with `Backend` (relation does not exist).
    /// - **Atomic**: in a transaction, the batch runs in a savepoint:
    ///   stored whole or not at all, and a failure here rolls back only
    ///   the savepoint, leaving the caller's transaction usable. Outside a
    ///   transaction it runs in one of its own.
    /// - **Idempotent** per tenant and key as `ingest`, decided by the
    ///   unique key inside the caller's transaction: a key recorded by a
    ///   transaction that rolls back is not recorded (recording it again
    ///   stores it); a transaction that records a key another open
    ///   transaction holds waits for it. Under `REPEATABLE READ` or
    ///   `SERIALIZABLE` such a wait may end in a serialization failure
    ///   (`Backend`, retryable: retry the whole transaction).
    /// - **Locks**: the subscription's seal lock is held shared until the
    ///   caller's transaction ends, so sealing it (finalizing an invoice)
    ///   waits for that transaction: keep it short.
    ///
    /// # Errors
    /// As [`UsageStore::ingest`](crate::store::UsageStore::ingest).
    pub async fn ingest_in(
        &self,
        conn: &mut PgConnection,
        batch: Vec<UsageRecord>,
    ) -> Result<Vec<Result<IngestOutcome, BillingError>>, BillingError> {
        ingest_on::<Postgres>(conn, batch).await
    }
}

/// See [`PgUsageStore::ingest_in`].
#[async_trait]
impl UsageWriter for PgConnection {
    async fn ingest_usage(
        &mut self,
        batch: Vec<UsageRecord>,
    ) -> Result<Vec<Result<IngestOutcome, BillingError>>, BillingError> {
        ingest_on::<Postgres>(self, batch).await
    }
}

impl UsageTable for PgUsageStore {
    type Db = Postgres;

    fn pool(&self) -> &PgPool {
        &self.pool
    }
}

const INSERT: &str = "INSERT INTO billing_usage_events \
     (tenant_id, idempotency_key, subscription_id, meter, value, occurred_at, \
      occurred_nanos, properties, period, billed_in) \
     SELECT t, k, s, m, v, o, n, p::jsonb, pe, b \
     FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::numeric[], \
                 $6::timestamptz[], $7::int4[], $8::text[], $9::int8[], $10::int8[]) \
          AS u(t, k, s, m, v, o, n, p, pe, b) \
     ON CONFLICT (tenant_id, idempotency_key) DO NOTHING \
     RETURNING tenant_id, idempotency_key";

/// The advisory-lock key of a subscription's seal.
fn lock_key(tenant: TenantId, subscription: SubscriptionId) -> i64 {
    let (a, b) = tenant.as_uuid().as_u64_pair();
    let (c, d) = subscription.as_uuid().as_u64_pair();
    i64::from_ne_bytes(
        (a ^ b.rotate_left(17) ^ c.rotate_left(31) ^ d.rotate_left(47)).to_ne_bytes(),
    )
}

fn tenant(uuid: Uuid) -> Result<TenantId, BillingError> {
    TenantId::from_uuid(uuid).map_err(|e| corrupt(BACKEND, e))
}

#[async_trait]
impl UsageDialect for Postgres {
    const GREATEST: &'static str = "GREATEST";

    async fn begin_on(conn: &mut PgConnection) -> Result<Transaction<'_, Postgres>, BillingError> {
        conn.begin().await.map_err(db_error)
    }

    async fn lock_seals(
        conn: &mut PgConnection,
        pairs: &[(TenantId, SubscriptionId)],
        exclusive: bool,
    ) -> Result<(), BillingError> {
        let mut locks: Vec<i64> = pairs.iter().map(|&(t, s)| lock_key(t, s)).collect();
        locks.sort_unstable();
        locks.dedup();
        let sql = if exclusive {
            "SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS k"
        } else {
            "SELECT pg_advisory_xact_lock_shared(k) FROM unnest($1::int8[]) AS k"
        };
        sqlx::query(sql)
            .bind(&locks)
            .execute(conn)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn read_seals(
        conn: &mut PgConnection,
        pairs: &[(TenantId, SubscriptionId)],
    ) -> Result<HashMap<(TenantId, SubscriptionId), i64>, BillingError> {
        let (tenants, subs): (Vec<Uuid>, Vec<Uuid>) = pairs
            .iter()
            .map(|(t, s)| (*t.as_uuid(), *s.as_uuid()))
            .unzip();
        let rows = sqlx::query(
            "SELECT tenant_id, subscription_id, sealed_through FROM billing_usage_seals \
             WHERE (tenant_id, subscription_id) IN \
                   (SELECT * FROM unnest($1::uuid[], $2::uuid[]))",
        )
        .bind(&tenants)
        .bind(&subs)
        .fetch_all(conn)
        .await
        .map_err(db_error)?;
        let mut sealed = HashMap::with_capacity(rows.len());
        for row in &rows {
            let t = tenant(row.try_get("tenant_id").map_err(db_error)?)?;
            let s = SubscriptionId::from_uuid(row.try_get("subscription_id").map_err(db_error)?);
            sealed.insert(
                (t, s),
                row.try_get::<i64, _>("sealed_through").map_err(db_error)?,
            );
        }
        Ok(sealed)
    }

    /// New rows are inserted (and numbered) in (tenant, key) order, so
    /// that concurrent batches sharing keys take their row locks in one
    /// order and cannot deadlock.
    async fn insert(
        conn: &mut PgConnection,
        rows: &[NewRow<'_>],
    ) -> Result<Vec<Key>, BillingError> {
        let mut rows: Vec<&NewRow<'_>> = rows.iter().collect();
        rows.sort_unstable_by(|a, b| {
            let (a, b) = (&a.record.event, &b.record.event);
            (a.tenant_id, &a.idempotency_key).cmp(&(b.tenant_id, &b.idempotency_key))
        });
        let n = rows.len();
        let mut tenants = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        let mut subs = Vec::with_capacity(n);
        let mut meters = Vec::with_capacity(n);
        let mut values: Vec<Decimal> = Vec::with_capacity(n);
        let mut times: Vec<DateTime<Utc>> = Vec::with_capacity(n);
        let mut nanos: Vec<i32> = Vec::with_capacity(n);
        let mut props = Vec::with_capacity(n);
        let mut periods = Vec::with_capacity(n);
        let mut billed = Vec::with_capacity(n);
        for row in &rows {
            let e = &row.record.event;
            tenants.push(*e.tenant_id.as_uuid());
            keys.push(e.idempotency_key.as_str());
            subs.push(*e.subscription_id.as_uuid());
            meters.push(e.meter.as_str());
            values.push(e.value);
            times.push(e.timestamp);
            // Below 2 · 10⁹ (a leap second), so it fits.
            nanos.push(i32::try_from(e.timestamp.timestamp_subsec_nanos()).unwrap_or(i32::MAX));
            props.push(if e.properties.is_empty() {
                String::from("{}")
            } else {
                to_json(BACKEND, &e.properties)?
            });
            periods.push(row.record.period);
            billed.push(row.billed_in);
        }
        let inserted = sqlx::query(INSERT)
            .bind(&tenants)
            .bind(&keys)
            .bind(&subs)
            .bind(&meters)
            .bind(&values)
            .bind(&times)
            .bind(&nanos)
            .bind(&props)
            .bind(&periods)
            .bind(&billed)
            .fetch_all(conn)
            .await
            .map_err(db_error)?;
        inserted
            .iter()
            .map(|row| {
                Ok((
                    tenant(row.try_get("tenant_id").map_err(db_error)?)?,
                    row.try_get("idempotency_key").map_err(db_error)?,
                ))
            })
            .collect()
    }

    async fn find(
        conn: &mut PgConnection,
        columns: &str,
        events: &[&UsageEvent],
    ) -> Result<Vec<PgRow>, BillingError> {
        let (t, k): (Vec<Uuid>, Vec<&str>) = events
            .iter()
            .map(|e| (*e.tenant_id.as_uuid(), e.idempotency_key.as_str()))
            .unzip();
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {columns} FROM billing_usage_events WHERE (tenant_id, idempotency_key) IN \
             (SELECT * FROM unnest($1::uuid[], $2::text[]))"
        )))
        .bind(&t)
        .bind(&k)
        .fetch_all(conn)
        .await
        .map_err(db_error)
    }

    fn uuid(row: &PgRow, column: &str) -> Result<Uuid, BillingError> {
        row.try_get(column).map_err(db_error)
    }

    fn decimal(row: &PgRow, column: &str) -> Result<Decimal, BillingError> {
        row.try_get(column).map_err(db_error)
    }

    fn seconds(row: &PgRow, column: &str) -> Result<i64, BillingError> {
        let at: DateTime<Utc> = row.try_get(column).map_err(db_error)?;
        Ok(at.timestamp())
    }
}
