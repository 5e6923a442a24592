//! [`UsageStore`] on PostgreSQL: one transaction per batch — shared
//! advisory locks on the batch's subscriptions (sealing takes them
//! exclusively), one multi-row `INSERT … SELECT FROM unnest(…) ON CONFLICT
//! DO NOTHING RETURNING`, then one read of the rows that conflicted.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use saas_core::TenantId;
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, PgPool, Row};
use uuid::Uuid;

use super::{BACKEND, db_error};
use crate::error::BillingError;
use crate::ids::{MeterKey, SubscriptionId};
use crate::metering::UsageEvent;
use crate::store::sql::ingest::{IngestPlan, Key};
use crate::store::sql::{corrupt, from_json, instant, to_json};
use crate::store::{IngestOutcome, StoredUsage, UsageRecord, UsageStore, UsageWriter};

/// Usage events in `billing_usage_events`, idempotent per tenant and key.
///
/// Within one batch, new rows are inserted (and numbered) in (tenant,
/// key) order, so that concurrent batches sharing keys take their row
/// locks in one order and cannot deadlock.
#[derive(Debug, Clone)]
pub struct PostgresUsageStore {
    pool: PgPool,
}

impl PostgresUsageStore {
    /// A store on `pool` (run [`PostgresBillingStores::migrate`](super::PostgresBillingStores::migrate) first).
    pub fn new(pool: PgPool) -> PostgresUsageStore {
        PostgresUsageStore { pool }
    }

    /// Stores `batch` on `conn`, inside the caller's transaction when
    /// `conn` is in one, so the usage commits or rolls back with the
    /// caller's own writes; outcomes as [`UsageStore::ingest`] (which
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
    /// As [`UsageStore::ingest`].
    pub async fn ingest_in(
        &self,
        conn: &mut PgConnection,
        batch: Vec<UsageRecord>,
    ) -> Result<Vec<Result<IngestOutcome, BillingError>>, BillingError> {
        ingest_on(conn, batch).await
    }
}

/// See [`PostgresUsageStore::ingest_in`].
#[async_trait]
impl UsageWriter for PgConnection {
    async fn ingest_usage(
        &mut self,
        batch: Vec<UsageRecord>,
    ) -> Result<Vec<Result<IngestOutcome, BillingError>>, BillingError> {
        ingest_on(self, batch).await
    }
}

macro_rules! usage_columns {
    () => {
        "tenant_id, idempotency_key, subscription_id, meter, value, occurred_at, \
         occurred_nanos, properties::text AS properties, period, billed_in, sequence"
    };
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

fn read(row: &PgRow) -> Result<StoredUsage, BillingError> {
    let get_err = db_error;
    let occurred: DateTime<Utc> = row.try_get("occurred_at").map_err(get_err)?;
    let nanos: i32 = row.try_get("occurred_nanos").map_err(get_err)?;
    let meter: String = row.try_get("meter").map_err(get_err)?;
    let properties: &str = row.try_get("properties").map_err(get_err)?;
    let properties: BTreeMap<String, String> = from_json(BACKEND, properties)?;
    let sequence: i64 = row.try_get("sequence").map_err(get_err)?;
    let event = UsageEvent {
        tenant_id: tenant(row.try_get("tenant_id").map_err(get_err)?)?,
        subscription_id: SubscriptionId::from_uuid(
            row.try_get("subscription_id").map_err(get_err)?,
        ),
        meter: MeterKey::new(meter).map_err(|e| corrupt(BACKEND, e))?,
        value: row.try_get("value").map_err(get_err)?,
        timestamp: instant(BACKEND, occurred.timestamp(), i64::from(nanos))?,
        properties,
        idempotency_key: row.try_get("idempotency_key").map_err(get_err)?,
    };
    Ok(StoredUsage {
        event,
        period: row.try_get("period").map_err(get_err)?,
        billed_in: row.try_get("billed_in").map_err(get_err)?,
        sequence: u64::try_from(sequence).map_err(|e| corrupt(BACKEND, e))?,
    })
}

fn read_all(rows: &[PgRow]) -> Result<Vec<StoredUsage>, BillingError> {
    rows.iter().map(read).collect()
}

/// Ingests `batch` on `conn` (see [`PostgresUsageStore::ingest_in`]).
async fn ingest_on(
    conn: &mut PgConnection,
    batch: Vec<UsageRecord>,
) -> Result<Vec<Result<IngestOutcome, BillingError>>, BillingError> {
    let plan = IngestPlan::new(batch);
    if plan.is_empty() {
        return Ok(Vec::new());
    }
    let pairs = plan.subscriptions();
    let mut locks: Vec<i64> = pairs.iter().map(|&(t, s)| lock_key(t, s)).collect();
    locks.sort_unstable();
    locks.dedup();
    let (seal_tenants, seal_subs): (Vec<Uuid>, Vec<Uuid>) = pairs
        .iter()
        .map(|(t, s)| (*t.as_uuid(), *s.as_uuid()))
        .unzip();

    // A savepoint inside the caller's transaction, else a transaction of
    // its own: the batch is stored whole or not at all either way.
    let mut tx = conn.begin().await.map_err(db_error)?;
    sqlx::query("SELECT pg_advisory_xact_lock_shared(k) FROM unnest($1::int8[]) AS k")
        .bind(&locks)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let seal_rows = sqlx::query(
        "SELECT tenant_id, subscription_id, sealed_through FROM billing_usage_seals \
         WHERE (tenant_id, subscription_id) IN \
               (SELECT * FROM unnest($1::uuid[], $2::uuid[]))",
    )
    .bind(&seal_tenants)
    .bind(&seal_subs)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error)?;
    let mut sealed = HashMap::with_capacity(seal_rows.len());
    for row in &seal_rows {
        let t = tenant(row.try_get("tenant_id").map_err(db_error)?)?;
        let s = SubscriptionId::from_uuid(row.try_get("subscription_id").map_err(db_error)?);
        sealed.insert(
            (t, s),
            row.try_get::<i64, _>("sealed_through").map_err(db_error)?,
        );
    }

    let mut rows = plan.rows(&sealed);
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
    let inserted_rows = sqlx::query(INSERT)
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
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
    let mut inserted: Vec<Key> = Vec::with_capacity(inserted_rows.len());
    for row in &inserted_rows {
        inserted.push((
            tenant(row.try_get("tenant_id").map_err(db_error)?)?,
            row.try_get("idempotency_key").map_err(db_error)?,
        ));
    }

    let missing = IngestPlan::not_inserted(&rows, &inserted);
    let mut existing = Vec::with_capacity(missing.len());
    if !missing.is_empty() {
        let (t, k): (Vec<Uuid>, Vec<&str>) = missing
            .iter()
            .map(|e| (*e.tenant_id.as_uuid(), e.idempotency_key.as_str()))
            .unzip();
        let found = sqlx::query(concat!(
            "SELECT ",
            usage_columns!(),
            " FROM billing_usage_events WHERE (tenant_id, idempotency_key) IN \
              (SELECT * FROM unnest($1::uuid[], $2::text[]))"
        ))
        .bind(&t)
        .bind(&k)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        for row in &found {
            let stored = read(row)?;
            existing.push((stored.event, stored.billed_in));
        }
    }
    tx.commit().await.map_err(db_error)?;
    Ok(plan.outcomes(&rows, &inserted, &existing, BACKEND))
}

#[async_trait]
impl UsageStore for PostgresUsageStore {
    async fn ingest(
        &self,
        batch: Vec<UsageRecord>,
    ) -> Result<Vec<Result<IngestOutcome, BillingError>>, BillingError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        ingest_on(&mut conn, batch).await
    }

    async fn seal(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        through: i64,
    ) -> Result<i64, BillingError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock_key(tenant, subscription))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let sealed: i64 = sqlx::query_scalar(
            "INSERT INTO billing_usage_seals (tenant_id, subscription_id, sealed_through) \
             VALUES ($1, $2, $3) ON CONFLICT (tenant_id, subscription_id) DO UPDATE \
             SET sealed_through = GREATEST(billing_usage_seals.sealed_through, \
                                           EXCLUDED.sealed_through) \
             RETURNING sealed_through",
        )
        .bind(tenant.as_uuid())
        .bind(subscription.as_uuid())
        .bind(through)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(sealed)
    }

    async fn sealed_through(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Option<i64>, BillingError> {
        sqlx::query_scalar(
            "SELECT sealed_through FROM billing_usage_seals \
             WHERE tenant_id = $1 AND subscription_id = $2",
        )
        .bind(tenant.as_uuid())
        .bind(subscription.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)
    }

    async fn billed_in(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        invoice_period: i64,
    ) -> Result<Vec<StoredUsage>, BillingError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            usage_columns!(),
            " FROM billing_usage_events \
              WHERE tenant_id = $1 AND subscription_id = $2 AND billed_in = $3 \
              ORDER BY sequence"
        ))
        .bind(tenant.as_uuid())
        .bind(subscription.as_uuid())
        .bind(invoice_period)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        read_all(&rows)
    }

    async fn for_period(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        period: i64,
        billed_before: i64,
    ) -> Result<Vec<StoredUsage>, BillingError> {
        // `billed_in >= period` always holds: the range uses the index.
        let rows = sqlx::query(concat!(
            "SELECT ",
            usage_columns!(),
            " FROM billing_usage_events \
              WHERE tenant_id = $1 AND subscription_id = $2 \
                AND billed_in >= $3 AND billed_in < $4 AND period = $3 \
              ORDER BY sequence"
        ))
        .bind(tenant.as_uuid())
        .bind(subscription.as_uuid())
        .bind(period)
        .bind(billed_before)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        read_all(&rows)
    }
}
