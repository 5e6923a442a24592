//! The prepaid credit ledger in SQL: `billing_credit_grants` (one row per
//! grant, the grant as JSON) and `billing_credit_consumptions` (one row
//! per amount an invoice drew from a grant), both append-only (triggers
//! refuse updates and deletes). Balances are computed from the two, in
//! exact decimals, never kept. A finalization locks the tenant's grants
//! in the invoice's currency (`FOR UPDATE`; SQLite's write transaction)
//! before reading the consumptions, so two finalizations never draw the
//! same balance.

use chrono::{DateTime, Utc};
use saas_core::TenantId;
use sqlx::Pool;

use super::dialect::{Param, Sql, all};
use super::{from_json, to_json};
use crate::credit::{self, CreditConsumption, CreditGrant, CreditGrantBalance};
use crate::currency::Currency;
use crate::error::BillingError;
use crate::invoice::Invoice;

fn read_grant<D: Sql>(row: &D::Row) -> Result<CreditGrant, BillingError> {
    from_json(D::BACKEND, &D::text(row, "body").map_err(D::error)?)
}

fn read_consumption<D: Sql>(row: &D::Row) -> Result<CreditConsumption, BillingError> {
    from_json(D::BACKEND, &D::text(row, "body").map_err(D::error)?)
}

fn of_tenant(tenant: TenantId, currency: Currency) -> Vec<Param> {
    vec![
        Param::Tenant(tenant),
        Param::Text(currency.code().to_owned()),
    ]
}

fn grants_sql<D: Sql>(lock: &str) -> String {
    format!(
        "SELECT body{} AS body FROM billing_credit_grants \
         WHERE tenant_id = $1 AND currency = $2 ORDER BY granted_at, id{lock}",
        D::JSON_TEXT
    )
}

fn consumptions_sql<D: Sql>() -> String {
    format!(
        "SELECT body{} AS body FROM billing_credit_consumptions \
         WHERE tenant_id = $1 AND currency = $2 ORDER BY sequence",
        D::JSON_TEXT
    )
}

/// Draws the tenant's available credits for what the just finalized
/// `invoice` leaves due, in the caller's transaction, and records them
/// on the invoice.
pub(crate) async fn consume_on<D: Sql>(
    conn: &mut D::Connection,
    invoice: &mut Invoice,
    at: DateTime<Utc>,
) -> Result<(), BillingError> {
    let params = of_tenant(invoice.tenant_id, invoice.currency);
    let rows = D::fetch_all(&mut *conn, grants_sql::<D>(D::FOR_UPDATE), params.clone())
        .await
        .map_err(D::error)?;
    if rows.is_empty() {
        return Ok(());
    }
    let grants = rows
        .iter()
        .map(read_grant::<D>)
        .collect::<Result<Vec<_>, _>>()?;
    let rows = D::fetch_all(&mut *conn, consumptions_sql::<D>(), params)
        .await
        .map_err(D::error)?;
    let used = rows
        .iter()
        .map(read_consumption::<D>)
        .collect::<Result<Vec<_>, _>>()?;
    let available = credit::balances(&grants, &used)?;
    let due = invoice.payment_state()?.amount_remaining()?;
    let consumed = credit::consume(&available, invoice.id, due, at)?;
    for consumption in &consumed {
        let sql = format!(
            "INSERT INTO billing_credit_consumptions (grant_id, tenant_id, currency, invoice_id, \
             body) VALUES ($1, $2, $3, $4, $5{})",
            D::JSON_PARAM
        );
        let params = vec![
            Param::Id(*consumption.grant_id.as_uuid()),
            Param::Tenant(consumption.tenant_id),
            Param::Text(invoice.currency.code().to_owned()),
            Param::Id(*invoice.id.as_uuid()),
            Param::Text(to_json(D::BACKEND, consumption)?),
        ];
        D::execute(&mut *conn, sql, params)
            .await
            .map_err(D::error)?;
    }
    invoice.apply_credits(&consumed)
}

/// Stores a grant.
pub(crate) async fn grant<D: Sql>(
    pool: &Pool<D>,
    grant: CreditGrant,
) -> Result<CreditGrant, BillingError> {
    let sql = format!(
        "INSERT INTO billing_credit_grants (id, tenant_id, currency, granted_at, body) \
         VALUES ($1, $2, $3, $4, $5{})",
        D::JSON_PARAM
    );
    let params = vec![
        Param::Id(*grant.id.as_uuid()),
        Param::Tenant(grant.tenant_id),
        Param::Text(grant.currency().code().to_owned()),
        Param::At(Some(grant.granted_at)),
        Param::Text(to_json(D::BACKEND, &grant)?),
    ];
    let mut conn = pool.acquire().await.map_err(D::error)?;
    match D::execute(&mut *conn, sql, params).await {
        Ok(_) => Ok(grant),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
            Err(BillingError::AlreadyExists {
                what: "credit grant",
                id: grant.id.to_string(),
            })
        }
        Err(e) => Err(D::error(e)),
    }
}

/// The tenant's grants in `currency` with their balances.
pub(crate) async fn balances<D: Sql>(
    pool: &Pool<D>,
    tenant: TenantId,
    currency: Currency,
) -> Result<Vec<CreditGrantBalance>, BillingError> {
    let grants = all(
        pool,
        grants_sql::<D>(""),
        of_tenant(tenant, currency),
        read_grant::<D>,
    )
    .await?;
    let used = all(
        pool,
        consumptions_sql::<D>(),
        of_tenant(tenant, currency),
        read_consumption::<D>,
    )
    .await?;
    credit::balances(&grants, &used)
}

/// Every consumption of the tenant's grants, in order.
pub(crate) async fn consumptions<D: Sql>(
    pool: &Pool<D>,
    tenant: TenantId,
) -> Result<Vec<CreditConsumption>, BillingError> {
    let sql = format!(
        "SELECT body{} AS body FROM billing_credit_consumptions WHERE tenant_id = $1 \
         ORDER BY sequence",
        D::JSON_TEXT
    );
    all(
        pool,
        sql,
        vec![Param::Tenant(tenant)],
        read_consumption::<D>,
    )
    .await
}
