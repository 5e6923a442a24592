//! [`InvoiceStore`] once for every [`Dialect`](super::dialect::Dialect):
//! the invoice as JSON (`body`) plus `status`, `currency`, `total` and the
//! columns queries need; one invoice per subscription and period (a
//! unique constraint: of racing creations one commits, the others get a
//! unique violation → `AlreadyExists`); a finalized invoice is refused by
//! the store and, below it, by a trigger, except for its payment state
//! (`payment_status` and the body's `payment`). Invoice numbers come from
//! `billing_invoice_numbers`, one counter row per issuer, incremented in
//! the finalizing transaction; `(issuer, number)` is unique.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::TenantId;
use sqlx::Pool;

use super::dialect::{Param, Sql, all, optional};
use super::{corrupt, credit_notes, credits, from_json, to_json};
use crate::credit::{CreditConsumption, CreditGrant, CreditGrantBalance};
use crate::currency::Currency;
use crate::error::BillingError;
use crate::ids::{InvoiceId, SubscriptionId};
use crate::invoice::{
    CreditNote, CreditNoteRequest, Finalization, Invoice, InvoiceLine, InvoiceNumber,
    InvoiceStatus, PaymentChange,
};
use crate::store::InvoiceStore;

/// An invoice store on a pool of a [`Sql`] database: implementing it
/// implements [`InvoiceStore`].
pub(crate) trait InvoiceTable: std::fmt::Debug + Send + Sync {
    /// The database.
    type Db: Sql;

    /// The pool holding `billing_invoices`.
    fn pool(&self) -> &Pool<Self::Db>;
}

/// `SELECT` of the column [`read`] needs, then `rest`.
fn select<D: Sql>(rest: &str) -> String {
    format!(
        "SELECT body{} AS body FROM billing_invoices {rest}",
        D::JSON_TEXT
    )
}

fn read<D: Sql>(row: &D::Row) -> Result<Invoice, BillingError> {
    from_json(D::BACKEND, &D::text(row, "body").map_err(D::error)?)
}

fn status_text(status: InvoiceStatus) -> &'static str {
    match status {
        InvoiceStatus::Draft => "draft",
        InvoiceStatus::Finalized => "finalized",
    }
}

async fn create<D: Sql>(pool: &Pool<D>, invoice: Invoice) -> Result<Invoice, BillingError> {
    if invoice.status != InvoiceStatus::Draft {
        return Err(BillingError::invalid("status", "only drafts are created"));
    }
    let sql = format!(
        "INSERT INTO billing_invoices (id, tenant_id, subscription_id, period_index, \
         status, currency, total, created_at, finalize_after, finalized_at, body) \
         VALUES ($1, $2, $3, $4, 'draft', $5, $6, $7, $8, NULL, $9{})",
        D::JSON_PARAM
    );
    let params = vec![
        Param::Id(*invoice.id.as_uuid()),
        Param::Tenant(invoice.tenant_id),
        Param::Id(*invoice.subscription_id.as_uuid()),
        Param::Int(invoice.period_index),
        Param::Text(invoice.currency.code().to_owned()),
        Param::Amount(invoice.total.amount()),
        Param::At(Some(invoice.created_at)),
        Param::At(Some(invoice.finalize_after)),
        Param::Text(to_json(D::BACKEND, &invoice)?),
    ];
    let mut conn = pool.acquire().await.map_err(D::error)?;
    match D::execute(&mut *conn, sql, params).await {
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
        Err(e) => Err(D::error(e)),
    }
}

/// What [`change`] does to the invoice it locked.
enum Change {
    /// Replace a draft's lines.
    Lines(Vec<InvoiceLine>),
    /// Finalize a draft, numbered in the issuer's sequence.
    Finalize(Finalization),
    /// Change a finalized invoice's payment state.
    Payment(PaymentChange, DateTime<Utc>),
    /// Issue a credit note against a finalized invoice.
    Credit(CreditNoteRequest, DateTime<Utc>),
}

/// The next number of `issuer`'s sequence, taken on the counter row in
/// the caller's transaction: the row stays locked until it ends, so
/// finalizers of one issuer run one after the other, and a rollback gives
/// the number back (no gap).
async fn next_number<D: Sql>(
    conn: &mut D::Connection,
    counter: String,
) -> Result<u64, BillingError> {
    let sql = "INSERT INTO billing_invoice_numbers (issuer, last_number) VALUES ($1, 1) \
               ON CONFLICT (issuer) DO UPDATE \
               SET last_number = billing_invoice_numbers.last_number + 1 \
               RETURNING last_number";
    let row = D::fetch_optional(conn, sql.to_owned(), vec![Param::Text(counter)])
        .await
        .map_err(D::error)?
        .ok_or_else(|| corrupt(D::BACKEND, "no invoice number returned"))?;
    let last = D::int(&row, "last_number").map_err(D::error)?;
    u64::try_from(last).map_err(|_| corrupt(D::BACKEND, format!("invoice number {last}")))
}

/// Changes an invoice in one write transaction: reads the row (locked
/// where the dialect locks rows), applies `change` to the stored invoice
/// (taking an invoice number first when finalizing) and writes the
/// result. Any error rolls everything back, the number included.
async fn change<D: Sql>(
    pool: &Pool<D>,
    tenant: TenantId,
    id: InvoiceId,
    change: Change,
) -> Result<(Invoice, Option<CreditNote>), BillingError> {
    let mut tx = D::begin_write(pool).await?;
    let rest = format!("WHERE id = $1 AND tenant_id = $2{}", D::FOR_UPDATE);
    let params = vec![Param::Id(*id.as_uuid()), Param::Tenant(tenant)];
    let row = D::fetch_optional(&mut *tx, select::<D>(&rest), params)
        .await
        .map_err(D::error)?;
    let Some(mut invoice) = row.as_ref().map(read::<D>).transpose()? else {
        return Err(BillingError::not_found("invoice", id));
    };
    let mut issued = None;
    match change {
        Change::Lines(lines) => invoice.set_lines(lines)?,
        Change::Finalize(finalization) => {
            // Checked before the number is taken (a rollback would give it
            // back anyway; this spares the counter's lock).
            invoice.set_lines(finalization.lines)?;
            let counter = finalization.issuer.to_string();
            let sequence = next_number::<D>(&mut tx, counter).await?;
            let number = InvoiceNumber::new(finalization.issuer, sequence);
            invoice.finalize(finalization.at, number)?;
            if finalization.consume_credits {
                credits::consume_on::<D>(&mut tx, &mut invoice, finalization.credits_at).await?;
            }
        }
        Change::Payment(change, at) => invoice.apply_payment(&change, at)?,
        Change::Credit(request, at) => {
            let issuer = invoice.credit_note_issuer()?;
            let prior = credit_notes::of_invoice_on::<D>(&mut tx, tenant, id).await?;
            // Validated before the number is taken, as for finalization.
            let probe = InvoiceNumber::new(issuer.clone(), 1);
            CreditNote::issue(&invoice, &prior, &request, probe, at)?;
            let sequence = next_number::<D>(&mut tx, credit_notes::counter_key(&issuer)).await?;
            let number = InvoiceNumber::new(issuer, sequence);
            let (note, payment) = CreditNote::issue(&invoice, &prior, &request, number, at)?;
            credit_notes::insert::<D>(&mut tx, &note).await?;
            invoice.payment = Some(payment);
            issued = Some(note);
        }
    }
    let sql = format!(
        "UPDATE billing_invoices SET status = $2, total = $3, finalized_at = $4, \
         issuer = $5, number = $6, payment_status = $7, body = $8{} WHERE id = $1",
        D::JSON_PARAM
    );
    let number = invoice.number.as_ref();
    let params = vec![
        Param::Id(*id.as_uuid()),
        Param::Text(status_text(invoice.status).to_owned()),
        Param::Amount(invoice.total.amount()),
        Param::At(invoice.finalized_at),
        Param::MaybeText(number.map(|n| n.issuer.to_string())),
        Param::MaybeInt(
            number
                .map(|n| i64::try_from(n.sequence))
                .transpose()
                .map_err(|_| BillingError::overflow("an invoice number"))?,
        ),
        Param::MaybeText(
            invoice
                .payment
                .as_ref()
                .map(|p| p.status.as_str().to_owned()),
        ),
        Param::Text(to_json(D::BACKEND, &invoice)?),
    ];
    D::execute(&mut *tx, sql, params).await.map_err(D::error)?;
    tx.commit().await.map_err(D::error)?;
    Ok((invoice, issued))
}

#[async_trait]
impl<S: InvoiceTable> InvoiceStore for S {
    async fn create(&self, invoice: Invoice) -> Result<Invoice, BillingError> {
        create(self.pool(), invoice).await
    }

    async fn get(&self, tenant: TenantId, id: InvoiceId) -> Result<Invoice, BillingError> {
        let params = vec![Param::Id(*id.as_uuid()), Param::Tenant(tenant)];
        let rest = "WHERE id = $1 AND tenant_id = $2";
        optional(self.pool(), select::<S::Db>(rest), params, read::<S::Db>)
            .await?
            .ok_or_else(|| BillingError::not_found("invoice", id))
    }

    async fn find(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        period: i64,
    ) -> Result<Option<Invoice>, BillingError> {
        let rest = "WHERE subscription_id = $1 AND period_index = $2 AND tenant_id = $3";
        let params = vec![
            Param::Id(*subscription.as_uuid()),
            Param::Int(period),
            Param::Tenant(tenant),
        ];
        optional(self.pool(), select::<S::Db>(rest), params, read::<S::Db>).await
    }

    async fn update_draft(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        lines: Vec<InvoiceLine>,
    ) -> Result<Invoice, BillingError> {
        Ok(change(self.pool(), tenant, id, Change::Lines(lines))
            .await?
            .0)
    }

    async fn finalize(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        finalization: Finalization,
    ) -> Result<Invoice, BillingError> {
        Ok(
            change(self.pool(), tenant, id, Change::Finalize(finalization))
                .await?
                .0,
        )
    }

    async fn apply_payment(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        payment: PaymentChange,
        at: DateTime<Utc>,
    ) -> Result<Invoice, BillingError> {
        Ok(
            change(self.pool(), tenant, id, Change::Payment(payment, at))
                .await?
                .0,
        )
    }

    async fn issue_credit_note(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        request: CreditNoteRequest,
        at: DateTime<Utc>,
    ) -> Result<(Invoice, CreditNote), BillingError> {
        let (invoice, note) = change(self.pool(), tenant, id, Change::Credit(request, at)).await?;
        let note = note.ok_or_else(|| {
            corrupt(
                <S::Db as super::dialect::Dialect>::BACKEND,
                "no credit note issued",
            )
        })?;
        Ok((invoice, note))
    }

    async fn credit_notes(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> Result<Vec<CreditNote>, BillingError> {
        credit_notes::of_invoice(self.pool(), tenant, invoice).await
    }

    async fn grant_credit(&self, grant: CreditGrant) -> Result<CreditGrant, BillingError> {
        credits::grant(self.pool(), grant).await
    }

    async fn credit_balances(
        &self,
        tenant: TenantId,
        currency: Currency,
    ) -> Result<Vec<CreditGrantBalance>, BillingError> {
        credits::balances(self.pool(), tenant, currency).await
    }

    async fn credit_consumptions(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<CreditConsumption>, BillingError> {
        credits::consumptions(self.pool(), tenant).await
    }

    async fn drafts_due(
        &self,
        at: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Invoice>, BillingError> {
        let rest = "WHERE status = 'draft' AND finalize_after <= $1 \
                    ORDER BY finalize_after, id LIMIT $2";
        let params = vec![Param::At(Some(at)), Param::limit(limit)];
        all(self.pool(), select::<S::Db>(rest), params, read::<S::Db>).await
    }

    async fn list(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Vec<Invoice>, BillingError> {
        let rest = "WHERE subscription_id = $1 AND tenant_id = $2 ORDER BY period_index";
        let params = vec![Param::Id(*subscription.as_uuid()), Param::Tenant(tenant)];
        all(self.pool(), select::<S::Db>(rest), params, read::<S::Db>).await
    }
}
