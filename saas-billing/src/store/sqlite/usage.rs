//! [`UsageStore`] on SQLite: one `BEGIN IMMEDIATE` transaction per batch —
//! read the seals, insert the batch as one JSON array through `json_each`
//! (`ON CONFLICT DO NOTHING RETURNING`), read back the rows that conflicted.
//! JSON has no bytes, so a tenant id travels in it as 32 hex digits and is
//! `unhex`ed into the BLOB that binding a `TenantId` gives.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use async_trait::async_trait;
use rust_decimal::Decimal;
use saas_core::TenantId;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::{BACKEND, begin_write, begin_write_on, db_error};
use crate::error::BillingError;
use crate::ids::{MeterKey, SubscriptionId};
use crate::metering::UsageEvent;
use crate::store::sql::ingest::{IngestPlan, Key};
use crate::store::sql::{corrupt, from_json, instant, parse_uuid, to_json};
use crate::store::{IngestOutcome, StoredUsage, UsageRecord, UsageStore, UsageWriter};

/// Usage events in `billing_usage_events`, idempotent per tenant and key.
#[derive(Debug, Clone)]
pub struct SqliteUsageStore {
    pool: SqlitePool,
}

impl SqliteUsageStore {
    /// A store on `pool` (run [`SqliteBillingStores::migrate`](super::SqliteBillingStores::migrate) first).
    pub fn new(pool: SqlitePool) -> SqliteUsageStore {
        SqliteUsageStore { pool }
    }

    /// Stores `batch` on `conn`, inside the caller's transaction when
    /// `conn` is in one, so the usage commits or rolls back with the
    /// caller's own writes; outcomes as [`UsageStore::ingest`] (which
    /// runs this on a connection of the store's pool).
    ///
    /// Pass `&mut *tx` for a `sqlx::Transaction<'_, Sqlite>` or a
    /// saas-tenancy SQLite tenant transaction: both dereference to a
    /// [`SqliteConnection`]. Engine-level validation is
    /// [`BillingEngine::record_usage_in`](crate::BillingEngine::record_usage_in),
    /// which calls this through [`UsageWriter`].
    ///
    /// - **Where**: the tables `conn` reaches (`billing_usage_events`,
    ///   `billing_usage_seals`, in `main` or an attached database the host
    ///   chose), not this store's pool's.
    /// - **Atomic**: in a transaction, the batch runs in a savepoint
    ///   (stored whole or not at all; a failure rolls back only the
    ///   savepoint); outside one, in a `BEGIN IMMEDIATE` transaction of its
    ///   own. Begin the caller's transaction with `BEGIN IMMEDIATE`
    ///   (`pool.begin_with("BEGIN IMMEDIATE")`): a deferred transaction
    ///   that has read first may fail with `SQLITE_BUSY` (`Backend`,
    ///   retryable) when it comes to write.
    /// - **Idempotent** per tenant and key as `ingest`: a key recorded by
    ///   a transaction that rolls back is not recorded. SQLite serializes
    ///   writers, so another writer (sealing included) waits for the
    ///   caller's transaction, up to the busy timeout: keep it short.
    ///
    /// # Errors
    /// As [`UsageStore::ingest`].
    pub async fn ingest_in(
        &self,
        conn: &mut SqliteConnection,
        batch: Vec<UsageRecord>,
    ) -> Result<Vec<Result<IngestOutcome, BillingError>>, BillingError> {
        ingest_on(conn, batch).await
    }
}

/// See [`SqliteUsageStore::ingest_in`].
#[async_trait]
impl UsageWriter for SqliteConnection {
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
         occurred_nanos, properties, period, billed_in, sequence"
    };
}

const INSERT: &str = "INSERT INTO billing_usage_events \
     (tenant_id, idempotency_key, subscription_id, meter, value, occurred_at, \
      occurred_nanos, properties, period, billed_in) \
     SELECT unhex(value ->> 0), value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
            value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9 \
     FROM json_each(?1) WHERE true \
     ON CONFLICT (tenant_id, idempotency_key) DO NOTHING \
     RETURNING tenant_id, idempotency_key";

fn read(row: &SqliteRow) -> Result<StoredUsage, BillingError> {
    let text = |name: &str| -> Result<String, BillingError> { row.try_get(name).map_err(db_error) };
    let int = |name: &str| -> Result<i64, BillingError> { row.try_get(name).map_err(db_error) };
    let value = text("value")?;
    let properties: BTreeMap<String, String> = from_json(BACKEND, &text("properties")?)?;
    let event = UsageEvent {
        tenant_id: row.try_get("tenant_id").map_err(db_error)?,
        subscription_id: SubscriptionId::from_uuid(parse_uuid(BACKEND, &text("subscription_id")?)?),
        meter: MeterKey::new(text("meter")?).map_err(|e| corrupt(BACKEND, e))?,
        value: Decimal::from_str(&value).map_err(|e| corrupt(BACKEND, e))?,
        timestamp: instant(BACKEND, int("occurred_at")?, int("occurred_nanos")?)?,
        properties,
        idempotency_key: text("idempotency_key")?,
    };
    Ok(StoredUsage {
        event,
        period: int("period")?,
        billed_in: int("billed_in")?,
        sequence: u64::try_from(int("sequence")?).map_err(|e| corrupt(BACKEND, e))?,
    })
}

fn read_all(rows: &[SqliteRow]) -> Result<Vec<StoredUsage>, BillingError> {
    rows.iter().map(read).collect()
}

/// The JSON array of keys `[[tenant as hex, key], …]`.
fn keys_json<'e>(events: impl Iterator<Item = &'e UsageEvent>) -> Result<String, BillingError> {
    let keys: Vec<(String, &str)> = events
        .map(|e| (e.tenant_id.simple(), e.idempotency_key.as_str()))
        .collect();
    to_json(BACKEND, &keys)
}

/// Ingests `batch` on `conn` (see [`SqliteUsageStore::ingest_in`]).
async fn ingest_on(
    conn: &mut SqliteConnection,
    batch: Vec<UsageRecord>,
) -> Result<Vec<Result<IngestOutcome, BillingError>>, BillingError> {
    let plan = IngestPlan::new(batch);
    if plan.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = begin_write_on(conn).await?;
    let mut sealed = HashMap::new();
    for (t, s) in plan.subscriptions() {
        let through: Option<i64> = sqlx::query_scalar(
            "SELECT sealed_through FROM billing_usage_seals \
             WHERE tenant_id = ?1 AND subscription_id = ?2",
        )
        .bind(t)
        .bind(s.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if let Some(through) = through {
            sealed.insert((t, s), through);
        }
    }
    let rows = plan.rows(&sealed);
    let mut json = Vec::with_capacity(rows.len());
    for row in &rows {
        let e = &row.record.event;
        json.push((
            e.tenant_id.simple(),
            e.idempotency_key.as_str(),
            e.subscription_id.to_string(),
            e.meter.as_str(),
            e.value.to_string(),
            e.timestamp.timestamp(),
            e.timestamp.timestamp_subsec_nanos(),
            to_json(BACKEND, &e.properties)?,
            row.record.period,
            row.billed_in,
        ));
    }
    let inserted_rows = sqlx::query(INSERT)
        .bind(to_json(BACKEND, &json)?)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
    let mut inserted: Vec<Key> = Vec::with_capacity(inserted_rows.len());
    for row in &inserted_rows {
        inserted.push((
            row.try_get("tenant_id").map_err(db_error)?,
            row.try_get("idempotency_key").map_err(db_error)?,
        ));
    }
    let missing = IngestPlan::not_inserted(&rows, &inserted);
    let mut existing = Vec::with_capacity(missing.len());
    if !missing.is_empty() {
        let found = sqlx::query(concat!(
            "SELECT ",
            usage_columns!(),
            " FROM billing_usage_events WHERE (tenant_id, idempotency_key) IN \
              (SELECT unhex(value ->> 0), value ->> 1 FROM json_each(?1))"
        ))
        .bind(keys_json(missing.into_iter())?)
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
impl UsageStore for SqliteUsageStore {
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
        let mut tx = begin_write(&self.pool).await?;
        let sealed: i64 = sqlx::query_scalar(
            "INSERT INTO billing_usage_seals (tenant_id, subscription_id, sealed_through) \
             VALUES (?1, ?2, ?3) ON CONFLICT (tenant_id, subscription_id) DO UPDATE \
             SET sealed_through = max(sealed_through, excluded.sealed_through) \
             RETURNING sealed_through",
        )
        .bind(tenant)
        .bind(subscription.to_string())
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
             WHERE tenant_id = ?1 AND subscription_id = ?2",
        )
        .bind(tenant)
        .bind(subscription.to_string())
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
              WHERE tenant_id = ?1 AND subscription_id = ?2 AND billed_in = ?3 \
              ORDER BY sequence"
        ))
        .bind(tenant)
        .bind(subscription.to_string())
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
        let rows = sqlx::query(concat!(
            "SELECT ",
            usage_columns!(),
            " FROM billing_usage_events \
              WHERE tenant_id = ?1 AND subscription_id = ?2 \
                AND billed_in >= ?3 AND billed_in < ?4 AND period = ?3 \
              ORDER BY sequence"
        ))
        .bind(tenant)
        .bind(subscription.to_string())
        .bind(period)
        .bind(billed_before)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        read_all(&rows)
    }
}
