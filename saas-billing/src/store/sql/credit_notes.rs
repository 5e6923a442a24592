//! Credit notes in `billing_credit_notes`, written in the transaction
//! that holds their invoice's row (see [`super::invoices`]): one row per
//! note, the note as JSON (`body`), `(issuer, number)` unique, rows
//! immutable (a trigger refuses updates and deletes). Credit-note numbers
//! come from the same counter table as invoice numbers, under the key
//! `credit_note:<issuer>` — a colon never appears in an issuer id, so the
//! key cannot meet an invoice sequence.

use saas_core::TenantId;
use sqlx::Pool;

use super::dialect::{Param, Sql, all};
use super::{from_json, to_json};
use crate::error::BillingError;
use crate::ids::{InvoiceId, IssuerId};
use crate::invoice::CreditNote;

/// The counter key of `issuer`'s credit-note sequence.
pub(crate) fn counter_key(issuer: &IssuerId) -> String {
    format!("credit_note:{issuer}")
}

fn read<D: Sql>(row: &D::Row) -> Result<CreditNote, BillingError> {
    from_json(D::BACKEND, &D::text(row, "body").map_err(D::error)?)
}

fn select<D: Sql>() -> String {
    format!(
        "SELECT body{} AS body FROM billing_credit_notes \
         WHERE invoice_id = $1 AND tenant_id = $2 ORDER BY number",
        D::JSON_TEXT
    )
}

fn params(tenant: TenantId, invoice: InvoiceId) -> Vec<Param> {
    vec![Param::Id(*invoice.as_uuid()), Param::Tenant(tenant)]
}

/// The invoice's credit notes, on the caller's connection.
pub(crate) async fn of_invoice_on<D: Sql>(
    conn: &mut D::Connection,
    tenant: TenantId,
    invoice: InvoiceId,
) -> Result<Vec<CreditNote>, BillingError> {
    let rows = D::fetch_all(conn, select::<D>(), params(tenant, invoice))
        .await
        .map_err(D::error)?;
    rows.iter().map(read::<D>).collect()
}

/// The invoice's credit notes, on a connection of `pool`.
pub(crate) async fn of_invoice<D: Sql>(
    pool: &Pool<D>,
    tenant: TenantId,
    invoice: InvoiceId,
) -> Result<Vec<CreditNote>, BillingError> {
    all(pool, select::<D>(), params(tenant, invoice), read::<D>).await
}

/// Stores `note` on the caller's connection.
pub(crate) async fn insert<D: Sql>(
    conn: &mut D::Connection,
    note: &CreditNote,
) -> Result<(), BillingError> {
    let sql = format!(
        "INSERT INTO billing_credit_notes (id, tenant_id, invoice_id, issuer, number, \
         issued_at, body) VALUES ($1, $2, $3, $4, $5, $6, $7{})",
        D::JSON_PARAM
    );
    let number = i64::try_from(note.number.sequence)
        .map_err(|_| BillingError::overflow("a credit note number"))?;
    let params = vec![
        Param::Id(*note.id.as_uuid()),
        Param::Tenant(note.tenant_id),
        Param::Id(*note.invoice_id.as_uuid()),
        Param::Text(note.number.issuer.to_string()),
        Param::Int(number),
        Param::At(Some(note.issued_at)),
        Param::Text(to_json(D::BACKEND, note)?),
    ];
    D::execute(conn, sql, params).await.map_err(D::error)?;
    Ok(())
}
