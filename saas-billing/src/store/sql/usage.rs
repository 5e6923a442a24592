//! [`UsageStore`] once for every [`UsageDialect`]: a batch is ingested in
//! one transaction (a savepoint inside the caller's) — serialize with
//! sealing, read the seals, insert the batch in one statement `ON CONFLICT
//! DO NOTHING RETURNING` the keys it stored, read back the rows that
//! conflicted, and decide every record's outcome
//! ([`IngestPlan`]). How a batch travels in one statement, how sealing
//! and ingestion are serialized and how a few columns are read are the
//! dialect's.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use rust_decimal::Decimal;
use saas_core::TenantId;
use sqlx::{Pool, Transaction};
use uuid::Uuid;

use super::dialect::{Dialect, Param, Sql, all, optional};
use super::ingest::{IngestPlan, Key, NewRow};
use super::{corrupt, from_json, instant};
use crate::error::BillingError;
use crate::ids::{MeterKey, SubscriptionId};
use crate::metering::UsageEvent;
use crate::store::{IngestOutcome, StoredUsage, UsageRecord, UsageStore};

/// The outcomes of a batch.
pub(crate) type Outcomes = Vec<Result<IngestOutcome, BillingError>>;

/// What usage needs of a database beyond [`Sql`]: its batched statements
/// and its way to serialize ingestion with sealing.
#[async_trait]
pub(crate) trait UsageDialect: Sql {
    /// The larger of two values: `GREATEST` (PostgreSQL), `max` (SQLite).
    const GREATEST: &'static str;

    /// Begins the batch's transaction on `conn`: a savepoint when `conn`
    /// is in a transaction already, else a write transaction of its own.
    async fn begin_on(conn: &mut Self::Connection) -> Result<Transaction<'_, Self>, BillingError>;

    /// Serializes with sealing the subscriptions `pairs` (sorted, distinct)
    /// until the transaction ends: `exclusive` to seal, shared to ingest.
    async fn lock_seals(
        conn: &mut Self::Connection,
        pairs: &[(TenantId, SubscriptionId)],
        exclusive: bool,
    ) -> Result<(), BillingError>;

    /// The sealed-through index of each of `pairs` that has one.
    async fn read_seals(
        conn: &mut Self::Connection,
        pairs: &[(TenantId, SubscriptionId)],
    ) -> Result<HashMap<(TenantId, SubscriptionId), i64>, BillingError>;

    /// Inserts `rows` in one statement, skipping keys already stored; the
    /// keys it stored.
    async fn insert(
        conn: &mut Self::Connection,
        rows: &[NewRow<'_>],
    ) -> Result<Vec<Key>, BillingError>;

    /// The stored rows (`SELECT {columns}`) of the keys of `events`.
    async fn find(
        conn: &mut Self::Connection,
        columns: &str,
        events: &[&UsageEvent],
    ) -> Result<Vec<Self::Row>, BillingError>;

    /// A subscription id column.
    fn uuid(row: &Self::Row, column: &str) -> Result<Uuid, BillingError>;

    /// An exact decimal column.
    fn decimal(row: &Self::Row, column: &str) -> Result<Decimal, BillingError>;

    /// The whole Unix seconds of an instant column.
    fn seconds(row: &Self::Row, column: &str) -> Result<i64, BillingError>;
}

/// A usage store on a pool of a [`UsageDialect`]: implementing it
/// implements [`UsageStore`].
pub(crate) trait UsageTable: std::fmt::Debug + Send + Sync {
    /// The database.
    type Db: UsageDialect;

    /// The pool holding `billing_usage_events` and `billing_usage_seals`.
    fn pool(&self) -> &Pool<Self::Db>;
}

/// The columns [`read`] needs.
fn columns<D: Dialect>() -> String {
    format!(
        "tenant_id, idempotency_key, subscription_id, meter, value, occurred_at, \
         CAST(occurred_nanos AS bigint) AS occurred_nanos, \
         properties{} AS properties, period, billed_in, sequence",
        D::JSON_TEXT
    )
}

fn read<D: UsageDialect>(row: &D::Row) -> Result<StoredUsage, BillingError> {
    let text = |column: &str| D::text(row, column).map_err(D::error);
    let int = |column: &str| D::int(row, column).map_err(D::error);
    let properties: BTreeMap<String, String> = from_json(D::BACKEND, &text("properties")?)?;
    let event = UsageEvent {
        tenant_id: D::tenant(row, "tenant_id").map_err(D::error)?,
        subscription_id: SubscriptionId::from_uuid(D::uuid(row, "subscription_id")?),
        meter: MeterKey::new(text("meter")?).map_err(|e| corrupt(D::BACKEND, e))?,
        value: D::decimal(row, "value")?,
        timestamp: instant(
            D::BACKEND,
            D::seconds(row, "occurred_at")?,
            int("occurred_nanos")?,
        )?,
        properties,
        idempotency_key: text("idempotency_key")?,
    };
    Ok(StoredUsage {
        event,
        period: int("period")?,
        billed_in: int("billed_in")?,
        sequence: u64::try_from(int("sequence")?).map_err(|e| corrupt(D::BACKEND, e))?,
    })
}

/// Ingests `batch` on `conn`, inside the caller's transaction when `conn`
/// is in one (see the stores' `ingest_in`).
pub(crate) async fn ingest_on<D: UsageDialect>(
    conn: &mut D::Connection,
    batch: Vec<UsageRecord>,
) -> Result<Outcomes, BillingError> {
    let plan = IngestPlan::new(batch);
    if plan.is_empty() {
        return Ok(Vec::new());
    }
    let pairs = plan.subscriptions();
    // The batch is stored whole or not at all.
    let mut tx = D::begin_on(conn).await?;
    D::lock_seals(&mut *tx, &pairs, false).await?;
    let sealed = D::read_seals(&mut *tx, &pairs).await?;
    let rows = plan.rows(&sealed);
    let inserted = D::insert(&mut *tx, &rows).await?;
    let missing = IngestPlan::not_inserted(&rows, &inserted);
    let mut existing = Vec::with_capacity(missing.len());
    if !missing.is_empty() {
        for row in D::find(&mut *tx, &columns::<D>(), &missing).await? {
            let stored = read::<D>(&row)?;
            existing.push((stored.event, stored.billed_in));
        }
    }
    tx.commit().await.map_err(D::error)?;
    Ok(plan.outcomes(&rows, &inserted, &existing, D::BACKEND))
}

async fn seal<D: UsageDialect>(
    pool: &Pool<D>,
    tenant: TenantId,
    subscription: SubscriptionId,
    through: i64,
) -> Result<i64, BillingError> {
    let mut tx = D::begin_write(pool).await?;
    D::lock_seals(&mut *tx, &[(tenant, subscription)], true).await?;
    let sql = format!(
        "INSERT INTO billing_usage_seals (tenant_id, subscription_id, sealed_through) \
         VALUES ($1, $2, $3) ON CONFLICT (tenant_id, subscription_id) DO UPDATE \
         SET sealed_through = {}(billing_usage_seals.sealed_through, \
                                 excluded.sealed_through) \
         RETURNING sealed_through",
        D::GREATEST
    );
    let params = vec![
        Param::Tenant(tenant),
        Param::Id(*subscription.as_uuid()),
        Param::Int(through),
    ];
    let row = D::fetch_optional(&mut *tx, sql, params)
        .await
        .map_err(D::error)?
        .ok_or_else(|| D::error(sqlx::Error::RowNotFound))?;
    let sealed = D::int(&row, "sealed_through").map_err(D::error)?;
    tx.commit().await.map_err(D::error)?;
    Ok(sealed)
}

/// A subscription's events, `filter` applying from `$3`, in arrival order.
async fn events<D: UsageDialect>(
    pool: &Pool<D>,
    tenant: TenantId,
    subscription: SubscriptionId,
    filter: &str,
    more: impl IntoIterator<Item = Param> + Send,
) -> Result<Vec<StoredUsage>, BillingError> {
    let sql = format!(
        "SELECT {} FROM billing_usage_events \
         WHERE tenant_id = $1 AND subscription_id = $2 AND {filter} ORDER BY sequence",
        columns::<D>()
    );
    let mut params = vec![Param::Tenant(tenant), Param::Id(*subscription.as_uuid())];
    params.extend(more);
    all(pool, sql, params, read::<D>).await
}

#[async_trait]
impl<S: UsageTable> UsageStore for S {
    async fn ingest(&self, batch: Vec<UsageRecord>) -> Result<Outcomes, BillingError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool().acquire().await.map_err(S::Db::error)?;
        ingest_on::<S::Db>(&mut *conn, batch).await
    }

    async fn seal(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        through: i64,
    ) -> Result<i64, BillingError> {
        seal(self.pool(), tenant, subscription, through).await
    }

    async fn sealed_through(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Option<i64>, BillingError> {
        let sql = "SELECT sealed_through FROM billing_usage_seals \
                   WHERE tenant_id = $1 AND subscription_id = $2";
        let params = vec![Param::Tenant(tenant), Param::Id(*subscription.as_uuid())];
        optional(self.pool(), sql.to_owned(), params, |row| {
            S::Db::int(row, "sealed_through").map_err(S::Db::error)
        })
        .await
    }

    async fn billed_in(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        invoice_period: i64,
    ) -> Result<Vec<StoredUsage>, BillingError> {
        events(
            self.pool(),
            tenant,
            subscription,
            "billed_in = $3",
            [Param::Int(invoice_period)],
        )
        .await
    }

    async fn for_period(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        period: i64,
        billed_before: i64,
    ) -> Result<Vec<StoredUsage>, BillingError> {
        // `billed_in >= period` always holds: the range uses the index.
        events(
            self.pool(),
            tenant,
            subscription,
            "billed_in >= $3 AND billed_in < $4 AND period = $3",
            [Param::Int(period), Param::Int(billed_before)],
        )
        .await
    }
}
