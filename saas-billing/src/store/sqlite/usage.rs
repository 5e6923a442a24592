//! [`UsageStore`](crate::store::UsageStore) on SQLite: the shared
//! implementation ([`crate::store::sql::usage`]) in one `BEGIN IMMEDIATE`
//! transaction per batch (SQLite serializes writers, so sealing and
//! ingestion never interleave) — read the seals, insert the batch as one
//! JSON array through `json_each` (`ON CONFLICT DO NOTHING RETURNING`),
//! read back the rows that conflicted.
//! JSON has no bytes, so a tenant id travels in it as 32 hex digits and is
//! `unhex`ed into the BLOB that binding a `TenantId` gives.

use std::collections::HashMap;
use std::str::FromStr;

use async_trait::async_trait;
use rust_decimal::Decimal;
use saas_core::TenantId;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, Sqlite, SqliteConnection, SqlitePool, Transaction};
use uuid::Uuid;

use super::{BACKEND, begin_write_on, db_error};
use crate::error::BillingError;
use crate::ids::SubscriptionId;
use crate::metering::UsageEvent;
use crate::store::sql::ingest::{Key, NewRow};
use crate::store::sql::usage::{UsageDialect, UsageTable, ingest_on};
use crate::store::sql::{corrupt, parse_uuid, to_json};
use crate::store::{IngestOutcome, UsageRecord, UsageWriter};

/// Usage events in `billing_usage_events`, idempotent per tenant and key.
///
/// Implements [`UsageStore`](crate::store::UsageStore) through the
/// implementation it shares with the other SQL backend.
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
    /// caller's own writes; outcomes as [`UsageStore::ingest`](crate::store::UsageStore::ingest) (which
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
    /// As [`UsageStore::ingest`](crate::store::UsageStore::ingest).
    pub async fn ingest_in(
        &self,
        conn: &mut SqliteConnection,
        batch: Vec<UsageRecord>,
    ) -> Result<Vec<Result<IngestOutcome, BillingError>>, BillingError> {
        ingest_on::<Sqlite>(conn, batch).await
    }
}

/// See [`SqliteUsageStore::ingest_in`].
#[async_trait]
impl UsageWriter for SqliteConnection {
    async fn ingest_usage(
        &mut self,
        batch: Vec<UsageRecord>,
    ) -> Result<Vec<Result<IngestOutcome, BillingError>>, BillingError> {
        ingest_on::<Sqlite>(self, batch).await
    }
}

impl UsageTable for SqliteUsageStore {
    type Db = Sqlite;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

const INSERT: &str = "INSERT INTO billing_usage_events \
     (tenant_id, idempotency_key, subscription_id, meter, value, occurred_at, \
      occurred_nanos, properties, period, billed_in) \
     SELECT unhex(value ->> 0), value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
            value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9 \
     FROM json_each(?1) WHERE true \
     ON CONFLICT (tenant_id, idempotency_key) DO NOTHING \
     RETURNING tenant_id, idempotency_key";

/// The JSON array of keys `[[tenant as hex, key], …]`.
fn keys_json(events: &[&UsageEvent]) -> Result<String, BillingError> {
    let keys: Vec<(String, &str)> = events
        .iter()
        .map(|e| (e.tenant_id.simple(), e.idempotency_key.as_str()))
        .collect();
    to_json(BACKEND, &keys)
}

#[async_trait]
impl UsageDialect for Sqlite {
    const GREATEST: &'static str = "max";

    async fn begin_on(
        conn: &mut SqliteConnection,
    ) -> Result<Transaction<'_, Sqlite>, BillingError> {
        begin_write_on(conn).await
    }

    /// Nothing to take: the write transaction already excludes every other
    /// writer, sealing included.
    async fn lock_seals(
        _conn: &mut SqliteConnection,
        _pairs: &[(TenantId, SubscriptionId)],
        _exclusive: bool,
    ) -> Result<(), BillingError> {
        Ok(())
    }

    async fn read_seals(
        conn: &mut SqliteConnection,
        pairs: &[(TenantId, SubscriptionId)],
    ) -> Result<HashMap<(TenantId, SubscriptionId), i64>, BillingError> {
        let mut sealed = HashMap::new();
        for &(t, s) in pairs {
            let through: Option<i64> = sqlx::query_scalar(
                "SELECT sealed_through FROM billing_usage_seals \
                 WHERE tenant_id = ?1 AND subscription_id = ?2",
            )
            .bind(t)
            .bind(s.to_string())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
            if let Some(through) = through {
                sealed.insert((t, s), through);
            }
        }
        Ok(sealed)
    }

    async fn insert(
        conn: &mut SqliteConnection,
        rows: &[NewRow<'_>],
    ) -> Result<Vec<Key>, BillingError> {
        let mut json = Vec::with_capacity(rows.len());
        for row in rows {
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
        let inserted = sqlx::query(INSERT)
            .bind(to_json(BACKEND, &json)?)
            .fetch_all(conn)
            .await
            .map_err(db_error)?;
        inserted
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("tenant_id").map_err(db_error)?,
                    row.try_get("idempotency_key").map_err(db_error)?,
                ))
            })
            .collect()
    }

    async fn find(
        conn: &mut SqliteConnection,
        columns: &str,
        events: &[&UsageEvent],
    ) -> Result<Vec<SqliteRow>, BillingError> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {columns} FROM billing_usage_events WHERE (tenant_id, idempotency_key) IN \
             (SELECT unhex(value ->> 0), value ->> 1 FROM json_each(?1))"
        )))
        .bind(keys_json(events)?)
        .fetch_all(conn)
        .await
        .map_err(db_error)
    }

    fn uuid(row: &SqliteRow, column: &str) -> Result<Uuid, BillingError> {
        parse_uuid(BACKEND, row.try_get(column).map_err(db_error)?)
    }

    fn decimal(row: &SqliteRow, column: &str) -> Result<Decimal, BillingError> {
        let text: &str = row.try_get(column).map_err(db_error)?;
        Decimal::from_str(text).map_err(|e| corrupt(BACKEND, e))
    }

    fn seconds(row: &SqliteRow, column: &str) -> Result<i64, BillingError> {
        row.try_get(column).map_err(db_error)
    }
}
