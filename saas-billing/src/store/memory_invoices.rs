//! Invoices, their credit notes and the prepaid credit ledger in memory:
//! one mutex is the critical section a SQL store's transaction would be,
//! so numbering, credit consumption and credit notes are atomic with the
//! invoice change they belong to.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::TenantId;

use super::InvoiceStore;
use super::memory::lock;
use crate::credit::{self, CreditConsumption, CreditGrant, CreditGrantBalance};
use crate::currency::Currency;
use crate::error::BillingError;
use crate::ids::{InvoiceId, IssuerId, SubscriptionId};
use crate::invoice::{
    CreditNote, CreditNoteRequest, Finalization, Invoice, InvoiceLine, InvoiceNumber,
    InvoiceStatus, PaymentChange, total_of,
};

#[derive(Debug, Default)]
struct InvoiceState {
    rows: HashMap<InvoiceId, Invoice>,
    by_period: BTreeMap<(SubscriptionId, i64), InvoiceId>,
    /// The last number given per issuer.
    numbers: HashMap<IssuerId, u64>,
    /// The last credit-note number given per issuer.
    credit_numbers: HashMap<IssuerId, u64>,
    credit_notes: Vec<CreditNote>,
    grants: Vec<CreditGrant>,
    consumptions: Vec<CreditConsumption>,
}

/// Invoices in memory.
#[derive(Debug, Default)]
pub struct InMemoryInvoiceStore {
    state: Mutex<InvoiceState>,
}

impl InMemoryInvoiceStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn draft_mut(
        state: &mut InvoiceState,
        tenant: TenantId,
        id: InvoiceId,
    ) -> Result<&mut Invoice, BillingError> {
        let invoice = state
            .rows
            .get_mut(&id)
            .filter(|i| i.tenant_id == tenant)
            .ok_or_else(|| BillingError::not_found("invoice", id))?;
        if invoice.is_finalized() {
            return Err(BillingError::InvoiceFinalized { invoice: id });
        }
        Ok(invoice)
    }
}

#[async_trait]
impl InvoiceStore for InMemoryInvoiceStore {
    async fn create(&self, invoice: Invoice) -> Result<Invoice, BillingError> {
        if invoice.status != InvoiceStatus::Draft {
            return Err(BillingError::invalid("status", "only drafts are created"));
        }
        let mut state = lock(&self.state);
        let slot = (invoice.subscription_id, invoice.period_index);
        if state.by_period.contains_key(&slot) || state.rows.contains_key(&invoice.id) {
            return Err(BillingError::AlreadyExists {
                what: "invoice",
                id: format!("subscription {} period {}", slot.0, slot.1),
            });
        }
        state.by_period.insert(slot, invoice.id);
        state.rows.insert(invoice.id, invoice.clone());
        Ok(invoice)
    }

    async fn get(&self, tenant: TenantId, id: InvoiceId) -> Result<Invoice, BillingError> {
        lock(&self.state)
            .rows
            .get(&id)
            .filter(|i| i.tenant_id == tenant)
            .cloned()
            .ok_or_else(|| BillingError::not_found("invoice", id))
    }

    async fn find(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        period: i64,
    ) -> Result<Option<Invoice>, BillingError> {
        let state = lock(&self.state);
        Ok(state
            .by_period
            .get(&(subscription, period))
            .and_then(|id| state.rows.get(id))
            .filter(|i| i.tenant_id == tenant)
            .cloned())
    }

    async fn update_draft(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        lines: Vec<InvoiceLine>,
    ) -> Result<Invoice, BillingError> {
        let mut state = lock(&self.state);
        let invoice = Self::draft_mut(&mut state, tenant, id)?;
        let total = total_of(invoice.currency, &lines)?;
        invoice.lines = lines;
        invoice.total = total;
        Ok(invoice.clone())
    }

    async fn finalize(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        finalization: Finalization,
    ) -> Result<Invoice, BillingError> {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let last = state
            .numbers
            .get(&finalization.issuer)
            .copied()
            .unwrap_or(0);
        let invoice = Self::draft_mut(state, tenant, id)?;
        let sequence = last
            .checked_add(1)
            .ok_or_else(|| BillingError::overflow("an invoice number"))?;
        let mut next = invoice.clone();
        next.set_lines(finalization.lines)?;
        next.finalize(
            finalization.at,
            InvoiceNumber::new(finalization.issuer.clone(), sequence),
        )?;
        let consumed = if finalization.consume_credits {
            let grants: Vec<CreditGrant> = state
                .grants
                .iter()
                .filter(|g| g.tenant_id == tenant && g.currency() == next.currency)
                .cloned()
                .collect();
            let available = credit::balances(&grants, &state.consumptions)?;
            let due = next.payment_state()?.amount_remaining()?;
            credit::consume(&available, id, due, finalization.credits_at)?
        } else {
            Vec::new()
        };
        next.apply_credits(&consumed)?;
        // Only now, with nothing left to fail, are the number and the
        // credits taken.
        state.rows.insert(id, next.clone());
        state.numbers.insert(finalization.issuer, sequence);
        state.consumptions.extend(consumed);
        Ok(next)
    }

    async fn apply_payment(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        change: PaymentChange,
        at: DateTime<Utc>,
    ) -> Result<Invoice, BillingError> {
        let mut state = lock(&self.state);
        let invoice = state
            .rows
            .get_mut(&id)
            .filter(|i| i.tenant_id == tenant)
            .ok_or_else(|| BillingError::not_found("invoice", id))?;
        let mut next = invoice.clone();
        next.apply_payment(&change, at)?;
        *invoice = next.clone();
        Ok(next)
    }

    async fn issue_credit_note(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        request: CreditNoteRequest,
        at: DateTime<Utc>,
    ) -> Result<(Invoice, CreditNote), BillingError> {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let invoice = state
            .rows
            .get(&id)
            .filter(|i| i.tenant_id == tenant)
            .ok_or_else(|| BillingError::not_found("invoice", id))?;
        let issuer = invoice.credit_note_issuer()?;
        let sequence = state
            .credit_numbers
            .get(&issuer)
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| BillingError::overflow("a credit note number"))?;
        let prior: Vec<CreditNote> = state
            .credit_notes
            .iter()
            .filter(|n| n.invoice_id == id)
            .cloned()
            .collect();
        let number = InvoiceNumber::new(issuer.clone(), sequence);
        let (note, payment) = CreditNote::issue(invoice, &prior, &request, number, at)?;
        let mut next = invoice.clone();
        next.payment = Some(payment);
        state.rows.insert(id, next.clone());
        state.credit_numbers.insert(issuer, sequence);
        state.credit_notes.push(note.clone());
        Ok((next, note))
    }

    async fn credit_notes(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> Result<Vec<CreditNote>, BillingError> {
        Ok(lock(&self.state)
            .credit_notes
            .iter()
            .filter(|n| n.invoice_id == invoice && n.tenant_id == tenant)
            .cloned()
            .collect())
    }

    async fn grant_credit(&self, grant: CreditGrant) -> Result<CreditGrant, BillingError> {
        let mut state = lock(&self.state);
        if state.grants.iter().any(|g| g.id == grant.id) {
            return Err(BillingError::AlreadyExists {
                what: "credit grant",
                id: grant.id.to_string(),
            });
        }
        state.grants.push(grant.clone());
        Ok(grant)
    }

    async fn credit_balances(
        &self,
        tenant: TenantId,
        currency: Currency,
    ) -> Result<Vec<CreditGrantBalance>, BillingError> {
        let state = lock(&self.state);
        let mut grants: Vec<CreditGrant> = state
            .grants
            .iter()
            .filter(|g| g.tenant_id == tenant && g.currency() == currency)
            .cloned()
            .collect();
        grants.sort_by_key(|g| (g.granted_at, g.id));
        credit::balances(&grants, &state.consumptions)
    }

    async fn credit_consumptions(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<CreditConsumption>, BillingError> {
        Ok(lock(&self.state)
            .consumptions
            .iter()
            .filter(|c| c.tenant_id == tenant)
            .cloned()
            .collect())
    }

    async fn drafts_due(
        &self,
        at: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Invoice>, BillingError> {
        let state = lock(&self.state);
        let mut due: Vec<&Invoice> = state
            .rows
            .values()
            .filter(|i| !i.is_finalized() && i.finalize_after <= at)
            .collect();
        due.sort_by_key(|i| (i.finalize_after, i.id));
        Ok(due.into_iter().take(limit).cloned().collect())
    }

    async fn list(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Vec<Invoice>, BillingError> {
        let state = lock(&self.state);
        Ok(state
            .by_period
            .range((subscription, i64::MIN)..=(subscription, i64::MAX))
            .filter_map(|(_, id)| state.rows.get(id))
            .filter(|i| i.tenant_id == tenant)
            .cloned()
            .collect())
    }
}
