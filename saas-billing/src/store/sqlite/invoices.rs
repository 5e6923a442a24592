//! [`InvoiceStore`] on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::TenantId;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use super::{BACKEND, db_error};
use crate::error::BillingError;
use crate::ids::{InvoiceId, SubscriptionId};
use crate::invoice::{Invoice, InvoiceLine, InvoiceStatus};
use crate::store::InvoiceStore;
use crate::store::sql::{from_json, sortable, to_json};

/// Invoices in `billing_invoices`: one per subscription and period (a
/// unique constraint), immutable once finalized (checked by the store and
/// by a trigger).
#[derive(Debug, Clone)]
pub struct SqliteInvoiceStore {
    pool: SqlitePool,
}

impl SqliteInvoiceStore {
    /// A store on `pool` (run [`SqliteBillingStores::migrate`](super::SqliteBillingStores::migrate) first).
    pub fn new(pool: SqlitePool) -> SqliteInvoiceStore {
        SqliteInvoiceStore { pool }
    }

    /// Changes a draft in one write transaction: applies `change`
    /// to the stored invoice and writes the result.
    async fn change_draft(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        change: impl FnOnce(&mut Invoice) -> Result<(), BillingError> + Send,
    ) -> Result<Invoice, BillingError> {
        let mut tx = super::begin_write(&self.pool).await?;
        let row = sqlx::query(
            "SELECT body FROM billing_invoices \
             WHERE id = ?1 AND tenant_id = ?2",
        )
        .bind(id.to_string())
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let mut invoice = match row {
            Some(row) => read(&row)?,
            None => return Err(BillingError::not_found("invoice", id)),
        };
        change(&mut invoice)?;
        sqlx::query(
            "UPDATE billing_invoices SET status = ?2, total = ?3, finalized_at = ?4, \
             body = ?5 WHERE id = ?1",
        )
        .bind(id.to_string())
        .bind(status_text(invoice.status))
        .bind(invoice.total.amount().to_string())
        .bind(invoice.finalized_at.map(sortable))
        .bind(to_json(BACKEND, &invoice)?)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(invoice)
    }
}

fn status_text(status: InvoiceStatus) -> &'static str {
    match status {
        InvoiceStatus::Draft => "draft",
        InvoiceStatus::Finalized => "finalized",
    }
}

fn read(row: &SqliteRow) -> Result<Invoice, BillingError> {
    let body: &str = row.try_get("body").map_err(db_error)?;
    from_json(BACKEND, body)
}

fn read_all(rows: &[SqliteRow]) -> Result<Vec<Invoice>, BillingError> {
    rows.iter().map(read).collect()
}

#[async_trait]
impl InvoiceStore for SqliteInvoiceStore {
    async fn create(&self, invoice: Invoice) -> Result<Invoice, BillingError> {
        if invoice.status != InvoiceStatus::Draft {
            return Err(BillingError::invalid("status", "only drafts are created"));
        }
        let result = sqlx::query(
            "INSERT INTO billing_invoices (id, tenant_id, subscription_id, period_index, \
             status, currency, total, created_at, finalize_after, finalized_at, body) \
             VALUES (?1, ?2, ?3, ?4, 'draft', ?5, ?6, ?7, ?8, NULL, ?9)",
        )
        .bind(invoice.id.to_string())
        .bind(invoice.tenant_id)
        .bind(invoice.subscription_id.to_string())
        .bind(invoice.period_index)
        .bind(invoice.currency.code())
        .bind(invoice.total.amount().to_string())
        .bind(sortable(invoice.created_at))
        .bind(sortable(invoice.finalize_after))
        .bind(to_json(BACKEND, &invoice)?)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(invoice),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(BillingError::AlreadyExists {
                    what: "invoice",
                    id: format!(
                        "subscription {} period {}",
                        invoice.subscription_id, invoice.period_index
                    ),
                })
            }
            Err(e) => Err(db_error(e)),
        }
    }

    async fn get(&self, tenant: TenantId, id: InvoiceId) -> Result<Invoice, BillingError> {
        let row = sqlx::query("SELECT body FROM billing_invoices WHERE id = ?1 AND tenant_id = ?2")
            .bind(id.to_string())
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        match row {
            Some(row) => read(&row),
            None => Err(BillingError::not_found("invoice", id)),
        }
    }

    async fn find(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        period: i64,
    ) -> Result<Option<Invoice>, BillingError> {
        let row = sqlx::query(
            "SELECT body FROM billing_invoices \
             WHERE subscription_id = ?1 AND period_index = ?2 AND tenant_id = ?3",
        )
        .bind(subscription.to_string())
        .bind(period)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|r| read(&r)).transpose()
    }

    async fn update_draft(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        lines: Vec<InvoiceLine>,
    ) -> Result<Invoice, BillingError> {
        self.change_draft(tenant, id, |invoice| invoice.set_lines(lines))
            .await
    }

    async fn finalize(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        lines: Vec<InvoiceLine>,
        at: DateTime<Utc>,
    ) -> Result<Invoice, BillingError> {
        self.change_draft(tenant, id, |invoice| {
            invoice.set_lines(lines)?;
            invoice.finalize(at)
        })
        .await
    }

    async fn drafts_due(
        &self,
        at: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Invoice>, BillingError> {
        let rows = sqlx::query(
            "SELECT body FROM billing_invoices \
             WHERE status = 'draft' AND finalize_after <= ?1 \
             ORDER BY finalize_after, id LIMIT ?2",
        )
        .bind(sortable(at))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        read_all(&rows)
    }

    async fn list(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Vec<Invoice>, BillingError> {
        let rows = sqlx::query(
            "SELECT body FROM billing_invoices \
             WHERE subscription_id = ?1 AND tenant_id = ?2 ORDER BY period_index",
        )
        .bind(subscription.to_string())
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        read_all(&rows)
    }
}
