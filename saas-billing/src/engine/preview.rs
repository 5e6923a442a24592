//! The upcoming invoice: what the open period would bill if it ended now.

use saas_core::TenantId;

use super::BillingEngine;
use crate::error::BillingError;
use crate::ids::SubscriptionId;
use crate::invoice::Invoice;

impl BillingEngine {
    /// The invoice the subscription's open period would produce if it
    /// were billed now, for showing a customer what they owe so far.
    ///
    /// It is rated exactly as the billing cycle will rate the period — the
    /// licensed charges of the whole period, pending proration lines, and
    /// the usage recorded so far — but it is **not stored**: each call has
    /// a fresh id and status `Draft`, and the billing cycle still creates
    /// the period's one real invoice when the period ends.
    ///
    /// # Errors
    /// [`BillingError::NotFound`] for an unknown subscription (or one of
    /// another tenant); [`BillingError::InvalidInput`] when the
    /// subscription has ended and has no open period; store and rating
    /// errors otherwise.
    pub async fn upcoming_invoice(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
    ) -> Result<Invoice, BillingError> {
        let sub = self.stores.subscriptions.get(tenant, id).await?;
        if sub.closed {
            return Err(BillingError::invalid(
                "subscription",
                "it has ended, so it has no open period to preview; read its invoices instead",
            ));
        }
        let period = sub.current_period()?;
        let end = sub.ended_at.map_or(period.end(), |e| e.min(period.end()));
        self.rate_open_period(&sub, period, end, self.clock.now())
            .await
    }
}
