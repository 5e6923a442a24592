//! [`SubscriptionStore`] once for every [`Dialect`]: the subscription as
//! JSON (`state`) plus the columns queries need; an update is one
//! conditional `UPDATE … WHERE version = $expected`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::TenantId;
use sqlx::Pool;

use super::dialect::{Dialect, Param, Sql, all, optional};
use super::{from_json, to_json, version_from_db, version_to_db};
use crate::error::BillingError;
use crate::ids::SubscriptionId;
use crate::store::SubscriptionStore;
use crate::subscription::Subscription;

/// A subscription store on a pool of a [`Sql`] database: implementing it
/// implements [`SubscriptionStore`].
pub(crate) trait SubscriptionTable: std::fmt::Debug + Send + Sync {
    /// The database.
    type Db: Sql;

    /// The pool holding `billing_subscriptions`.
    fn pool(&self) -> &Pool<Self::Db>;
}

/// `SELECT` of the columns [`read`] needs, then `rest`.
fn select<D: Sql>(rest: &str) -> String {
    format!(
        "SELECT version, state{} AS state FROM billing_subscriptions {rest}",
        D::JSON_TEXT
    )
}

fn read<D: Sql>(row: &D::Row) -> Result<Subscription, BillingError> {
    let state = D::text(row, "state").map_err(D::error)?;
    let version = D::int(row, "version").map_err(D::error)?;
    let mut subscription: Subscription = from_json(D::BACKEND, &state)?;
    subscription.version = version_from_db(D::BACKEND, version)?;
    Ok(subscription)
}

async fn insert<D: Sql>(
    pool: &Pool<D>,
    mut subscription: Subscription,
) -> Result<Subscription, BillingError> {
    subscription.version = 1;
    let state = to_json(D::BACKEND, &subscription)?;
    let mut conn = pool.acquire().await.map_err(D::error)?;
    let sql = format!(
        "INSERT INTO billing_subscriptions \
         (id, tenant_id, version, created_at, next_due_at, state) \
         VALUES ($1, $2, 1, $3, $4, $5{})",
        D::JSON_PARAM
    );
    let params = vec![
        Param::Id(*subscription.id.as_uuid()),
        Param::Tenant(subscription.tenant_id),
        Param::At(Some(subscription.created_at)),
        Param::At(subscription.next_due_at()),
        Param::Text(state),
    ];
    match D::execute(&mut *conn, sql, params).await {
        Ok(_) => Ok(subscription),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
            Err(BillingError::AlreadyExists {
                what: "subscription",
                id: subscription.id.to_string(),
            })
        }
        Err(e) => Err(D::error(e)),
    }
}

async fn update<D: Sql>(
    pool: &Pool<D>,
    mut subscription: Subscription,
) -> Result<Subscription, BillingError> {
    let expected = subscription.version;
    subscription.version = expected.saturating_add(1);
    let state = to_json(D::BACKEND, &subscription)?;
    let key = || {
        vec![
            Param::Id(*subscription.id.as_uuid()),
            Param::Tenant(subscription.tenant_id),
        ]
    };
    let mut params = key();
    params.extend([
        Param::Int(version_to_db(expected)?),
        Param::At(subscription.next_due_at()),
        Param::Text(state),
    ]);
    let mut conn = pool.acquire().await.map_err(D::error)?;
    let sql = format!(
        "UPDATE billing_subscriptions \
         SET version = version + 1, next_due_at = $4, state = $5{} \
         WHERE id = $1 AND tenant_id = $2 AND version = $3",
        D::JSON_PARAM
    );
    let updated = D::execute(&mut *conn, sql, params)
        .await
        .map_err(D::error)?;
    if updated == 1 {
        return Ok(subscription);
    }
    // Nothing changed: tell absent from stale (the version read here is
    // only for the message; the decision was the UPDATE's).
    let found = D::fetch_optional(
        &mut *conn,
        "SELECT version FROM billing_subscriptions WHERE id = $1 AND tenant_id = $2".to_owned(),
        key(),
    )
    .await
    .map_err(D::error)?;
    match found {
        None => Err(BillingError::not_found("subscription", subscription.id)),
        Some(row) => Err(BillingError::StaleVersion {
            what: "subscription",
            id: subscription.id.to_string(),
            expected,
            found: version_from_db(D::BACKEND, D::int(&row, "version").map_err(D::error)?)?,
        }),
    }
}

#[async_trait]
impl<S: SubscriptionTable> SubscriptionStore for S {
    async fn insert(&self, subscription: Subscription) -> Result<Subscription, BillingError> {
        insert(self.pool(), subscription).await
    }

    async fn get(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
    ) -> Result<Subscription, BillingError> {
        let params = vec![Param::Id(*id.as_uuid()), Param::Tenant(tenant)];
        let rest = "WHERE id = $1 AND tenant_id = $2";
        optional(self.pool(), select::<S::Db>(rest), params, read::<S::Db>)
            .await?
            .ok_or_else(|| BillingError::not_found("subscription", id))
    }

    async fn update(&self, subscription: Subscription) -> Result<Subscription, BillingError> {
        update(self.pool(), subscription).await
    }

    async fn due(
        &self,
        at: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Subscription>, BillingError> {
        let rest = "WHERE next_due_at IS NOT NULL AND next_due_at <= $1 \
                    ORDER BY next_due_at, id LIMIT $2";
        let params = vec![Param::At(Some(at)), Param::limit(limit)];
        all(self.pool(), select::<S::Db>(rest), params, read::<S::Db>).await
    }

    async fn list(&self, tenant: TenantId) -> Result<Vec<Subscription>, BillingError> {
        let rest = "WHERE tenant_id = $1 ORDER BY created_at, id";
        let params = vec![Param::Tenant(tenant)];
        all(self.pool(), select::<S::Db>(rest), params, read::<S::Db>).await
    }

    async fn open(
        &self,
        after: Option<SubscriptionId>,
        limit: usize,
    ) -> Result<Vec<Subscription>, BillingError> {
        let rest = format!(
            "WHERE next_due_at IS NOT NULL AND ($1{} IS NULL OR id > $1) \
             ORDER BY id LIMIT $2",
            S::Db::ID_PARAM
        );
        let params = vec![
            Param::MaybeId(after.map(|a| *a.as_uuid())),
            Param::limit(limit),
        ];
        all(self.pool(), select::<S::Db>(&rest), params, read::<S::Db>).await
    }
}
