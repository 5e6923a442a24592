//! Prepaid credits through the engine: grants, balances, and the event
//! that tells the host a tenant's balance ran low (for auto top-up).

use saas_core::TenantId;

use super::BillingEngine;
use crate::credit::{CreditGrant, CreditGrantBalance};
use crate::currency::Currency;
use crate::error::BillingError;
use crate::events::BillingEvent;
use crate::invoice::Invoice;
use crate::money::Money;

impl BillingEngine {
    /// Sets a low-balance threshold in the threshold's currency: when an
    /// invoice's finalization consumes credits and leaves the tenant's
    /// available balance below it (having been at or above it),
    /// [`BillingEvent::CreditBalanceLow`] is published — the cue for an
    /// automatic top-up. One threshold per currency; a later one for the
    /// same currency replaces it.
    pub fn with_low_credit_threshold(mut self, threshold: Money) -> Self {
        self.credit_thresholds
            .retain(|t| t.currency() != threshold.currency());
        self.credit_thresholds.push(threshold);
        self
    }

    /// Grants prepaid credit to a tenant; invoices finalized from then on
    /// consume it (see [`crate::credit`]).
    ///
    /// ```
    /// # use saas_billing::*;
    /// # async fn run(engine: &BillingEngine, tenant: TenantId, now: DateTime<Utc>) -> Result<(), BillingError> {
    /// let top_up = CreditGrant::new(tenant, Money::new(dec!(100.00), Currency::EUR), now)?
    ///     .with_description("Top-up");
    /// engine.grant_credit(top_up).await?;
    /// assert_eq!(engine.credit_balance(tenant, Currency::EUR).await?, Money::new(dec!(100.00), Currency::EUR));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`InvoiceStore::grant_credit`](crate::InvoiceStore::grant_credit).
    pub async fn grant_credit(&self, grant: CreditGrant) -> Result<CreditGrant, BillingError> {
        self.stores.invoices.grant_credit(grant).await
    }

    /// What the tenant can still consume in `currency` now: the
    /// remaining amounts of its unexpired grants.
    ///
    /// # Errors
    /// Store failures.
    pub async fn credit_balance(
        &self,
        tenant: TenantId,
        currency: Currency,
    ) -> Result<Money, BillingError> {
        let balances = self
            .stores
            .invoices
            .credit_balances(tenant, currency)
            .await?;
        available(&balances, self.clock.now(), currency)
    }

    /// After `invoice` was finalized: publishes `CreditBalanceLow` if it
    /// consumed credits and crossed the currency's threshold.
    pub(super) async fn check_credit_threshold(
        &self,
        invoice: &Invoice,
    ) -> Result<(), BillingError> {
        let Some(threshold) = self
            .credit_thresholds
            .iter()
            .find(|t| t.currency() == invoice.currency)
        else {
            return Ok(());
        };
        let consumed = invoice.payment_state()?.prepaid();
        if consumed.is_zero() {
            return Ok(());
        }
        let balance = self
            .credit_balance(invoice.tenant_id, invoice.currency)
            .await?;
        let before = balance.checked_add(consumed)?;
        if balance.amount() < threshold.amount() && before.amount() >= threshold.amount() {
            self.events
                .publish(BillingEvent::CreditBalanceLow {
                    tenant_id: invoice.tenant_id,
                    balance,
                    threshold: *threshold,
                    at: self.clock.now(),
                })
                .await;
        }
        Ok(())
    }
}

fn available(
    balances: &[CreditGrantBalance],
    at: crate::DateTime<crate::Utc>,
    currency: Currency,
) -> Result<Money, BillingError> {
    Money::checked_sum(
        currency,
        balances
            .iter()
            .filter(|b| b.grant.is_available_at(at))
            .map(|b| b.remaining),
    )
}
