//! Credit notes through the engine.

use saas_core::TenantId;

use super::BillingEngine;
use crate::error::BillingError;
use crate::events::BillingEvent;
use crate::ids::InvoiceId;
use crate::invoice::{CreditNote, CreditNoteRequest, Invoice, PaymentStatus};

impl BillingEngine {
    /// Issues a credit note against a finalized invoice at the clock's
    /// time ([`InvoiceStore::issue_credit_note`](crate::InvoiceStore::issue_credit_note)):
    /// the invoice never changes but for what remains due; publishes
    /// [`BillingEvent::CreditNoteIssued`]; when the note settles the
    /// invoice, the subscription's standing is updated as after a
    /// payment (see [`change_payment`](Self::change_payment)).
    ///
    /// ```
    /// # use saas_billing::*;
    /// # async fn run(engine: &BillingEngine, tenant: TenantId, invoice: InvoiceId) -> Result<(), BillingError> {
    /// // Credit the whole of the invoice's second line.
    /// let request = CreditNoteRequest::whole_line(CreditReason::Correction, 1);
    /// let (invoice, note) = engine.issue_credit_note(tenant, invoice, request).await?;
    /// println!("{} credits {}", note.number, note.total);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`InvoiceStore::issue_credit_note`](crate::InvoiceStore::issue_credit_note).
    pub async fn issue_credit_note(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
        request: CreditNoteRequest,
    ) -> Result<(Invoice, CreditNote), BillingError> {
        let at = self.clock.now();
        let before = self.stores.invoices.get(tenant, invoice).await?;
        let from = before.payment_state()?.status;
        let (after, note) = self
            .stores
            .invoices
            .issue_credit_note(tenant, invoice, request, at)
            .await?;
        self.events
            .publish(BillingEvent::CreditNoteIssued {
                tenant_id: tenant,
                subscription_id: after.subscription_id,
                invoice_id: invoice,
                credit_note: note.clone(),
                at,
            })
            .await;
        let paid_now =
            from != PaymentStatus::Paid && after.payment_state()?.status == PaymentStatus::Paid;
        self.settle_standing(tenant, after.subscription_id, paid_now)
            .await?;
        Ok((after, note))
    }
}
