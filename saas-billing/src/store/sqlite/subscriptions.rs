//! [`SubscriptionStore`] on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::TenantId;
use sqlx::Row;
use sqlx::SqlitePool;
use sqlx::sqlite::SqliteRow;

use super::{BACKEND, db_error};
use crate::error::BillingError;
use crate::ids::SubscriptionId;
use crate::store::SubscriptionStore;
use crate::store::sql::{from_json, sortable, to_json, version_from_db, version_to_db};
use crate::subscription::Subscription;

/// Subscriptions in `billing_subscriptions`, with optimistic versions.
#[derive(Debug, Clone)]
pub struct SqliteSubscriptionStore {
    pool: SqlitePool,
}

impl SqliteSubscriptionStore {
    /// A store on `pool` (run [`SqliteBillingStores::migrate`](super::SqliteBillingStores::migrate) first).
    pub fn new(pool: SqlitePool) -> SqliteSubscriptionStore {
        SqliteSubscriptionStore { pool }
    }
}

fn read(row: &SqliteRow) -> Result<Subscription, BillingError> {
    let state: &str = row.try_get("state").map_err(db_error)?;
    let version: i64 = row.try_get("version").map_err(db_error)?;
    let mut subscription: Subscription = from_json(BACKEND, state)?;
    subscription.version = version_from_db(BACKEND, version)?;
    Ok(subscription)
}

fn read_all(rows: &[SqliteRow]) -> Result<Vec<Subscription>, BillingError> {
    rows.iter().map(read).collect()
}

#[async_trait]
impl SubscriptionStore for SqliteSubscriptionStore {
    async fn insert(&self, mut subscription: Subscription) -> Result<Subscription, BillingError> {
        subscription.version = 1;
        let state = to_json(BACKEND, &subscription)?;
        let result = sqlx::query(
            "INSERT INTO billing_subscriptions \
             (id, tenant_id, version, created_at, next_due_at, state) \
             VALUES (?1, ?2, 1, ?3, ?4, ?5)",
        )
        .bind(subscription.id.to_string())
        .bind(subscription.tenant_id)
        .bind(sortable(subscription.created_at))
        .bind(subscription.next_due_at().map(sortable))
        .bind(state)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(subscription),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(BillingError::AlreadyExists {
                    what: "subscription",
                    id: subscription.id.to_string(),
                })
            }
            Err(e) => Err(db_error(e)),
        }
    }

    async fn get(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
    ) -> Result<Subscription, BillingError> {
        let row = sqlx::query(
            "SELECT version, state FROM billing_subscriptions WHERE id = ?1 AND tenant_id = ?2",
        )
        .bind(id.to_string())
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        match row {
            Some(row) => read(&row),
            None => Err(BillingError::not_found("subscription", id)),
        }
    }

    async fn update(&self, mut subscription: Subscription) -> Result<Subscription, BillingError> {
        let expected = subscription.version;
        subscription.version = expected.saturating_add(1);
        let state = to_json(BACKEND, &subscription)?;
        let updated = sqlx::query(
            "UPDATE billing_subscriptions \
             SET version = version + 1, next_due_at = ?4, state = ?5 \
             WHERE id = ?1 AND tenant_id = ?2 AND version = ?3",
        )
        .bind(subscription.id.to_string())
        .bind(subscription.tenant_id)
        .bind(version_to_db(expected)?)
        .bind(subscription.next_due_at().map(sortable))
        .bind(state)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        if updated.rows_affected() == 1 {
            return Ok(subscription);
        }
        // Nothing changed: tell absent from stale (the version read here is
        // only for the message; the decision was the UPDATE's).
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM billing_subscriptions WHERE id = ?1 AND tenant_id = ?2",
        )
        .bind(subscription.id.to_string())
        .bind(subscription.tenant_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        match found {
            None => Err(BillingError::not_found("subscription", subscription.id)),
            Some(found) => Err(BillingError::StaleVersion {
                what: "subscription",
                id: subscription.id.to_string(),
                expected,
                found: version_from_db(BACKEND, found)?,
            }),
        }
    }

    async fn due(
        &self,
        at: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Subscription>, BillingError> {
        let rows = sqlx::query(
            "SELECT version, state FROM billing_subscriptions \
             WHERE next_due_at IS NOT NULL AND next_due_at <= ?1 \
             ORDER BY next_due_at, id LIMIT ?2",
        )
        .bind(sortable(at))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        read_all(&rows)
    }

    async fn list(&self, tenant: TenantId) -> Result<Vec<Subscription>, BillingError> {
        let rows = sqlx::query(
            "SELECT version, state FROM billing_subscriptions \
             WHERE tenant_id = ?1 ORDER BY created_at, id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        read_all(&rows)
    }

    async fn open(
        &self,
        after: Option<SubscriptionId>,
        limit: usize,
    ) -> Result<Vec<Subscription>, BillingError> {
        // Ids are stored as lowercase hyphenated UUIDs, whose text order is
        // the UUIDs' byte order (the order the other stores page in).
        let rows = sqlx::query(
            "SELECT version, state FROM billing_subscriptions \
             WHERE next_due_at IS NOT NULL AND (?1 IS NULL OR id > ?1) \
             ORDER BY id LIMIT ?2",
        )
        .bind(after.map(|a| a.to_string()))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        read_all(&rows)
    }
}
