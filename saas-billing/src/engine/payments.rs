//! Payment state of invoices, and the subscription statuses it drives.
//!
//! A subscription's payment standing is derived from its invoices, never
//! kept beside them: an uncollectible invoice makes it `unpaid`, an open
//! invoice after a failed attempt `past_due`, and none of these (every
//! failed invoice paid or voided) `active` again. After each payment
//! change the engine moves the subscription to that standing by the
//! shortest path of the transition table's payment events (an `unpaid`
//! subscription whose uncollectible invoice is paid while another has
//! failed goes `active` then `past_due`; one event reports the net
//! change), so a crash between the invoice
//! write and the subscription write is repaired by the next payment
//! change of that subscription.

use saas_core::TenantId;

use super::BillingEngine;
use crate::error::BillingError;
use crate::events::BillingEvent;
use crate::ids::{InvoiceId, SubscriptionId};
use crate::invoice::{Invoice, PaymentChange, PaymentStatus};
use crate::money::Money;
use crate::subscription::{SubscriptionEvent, SubscriptionStatus, TRANSITIONS};

impl BillingEngine {
    /// Records `amount` received for a finalized invoice; the invoice is
    /// paid when nothing remains. When that settles the subscription's
    /// last delinquent invoice, a `past_due`/`unpaid` subscription (or an
    /// `incomplete` one) becomes `active`.
    ///
    /// Payments are not deduplicated here: pass each payment of your
    /// provider once (key it by the provider's event id on your side).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use saas_billing::*;
    /// # async fn run(engine: &BillingEngine, tenant: TenantId, invoice: InvoiceId) -> Result<(), BillingError> {
    /// let invoice = engine
    ///     .record_payment(tenant, invoice, Money::new(dec!(30.00), Currency::USD))
    ///     .await?;
    /// assert_eq!(invoice.payment_state()?.status, PaymentStatus::Paid);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`change_payment`](Self::change_payment).
    pub async fn record_payment(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
        amount: Money,
    ) -> Result<Invoice, BillingError> {
        self.change_payment(tenant, invoice, PaymentChange::Payment { amount })
            .await
    }

    /// Records a failed collection attempt: the invoice stays open, and
    /// an `active` subscription becomes `past_due`.
    ///
    /// # Errors
    /// As [`change_payment`](Self::change_payment).
    pub async fn record_payment_failure(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> Result<Invoice, BillingError> {
        self.change_payment(tenant, invoice, PaymentChange::PaymentFailed)
            .await
    }

    /// Voids an unpaid invoice: nothing of it will be collected; its
    /// number stays taken. A subscription held `past_due`/`unpaid` only by
    /// it becomes `active`.
    ///
    /// # Errors
    /// As [`change_payment`](Self::change_payment).
    pub async fn void_invoice(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> Result<Invoice, BillingError> {
        self.change_payment(tenant, invoice, PaymentChange::Void)
            .await
    }

    /// Marks an open invoice uncollectible (dunning gave up): the
    /// subscription becomes `unpaid`. The invoice can still be paid.
    ///
    /// # Errors
    /// As [`change_payment`](Self::change_payment).
    pub async fn mark_uncollectible(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> Result<Invoice, BillingError> {
        self.change_payment(tenant, invoice, PaymentChange::MarkUncollectible)
            .await
    }

    /// Applies `change` to the invoice's payment state at the clock's
    /// time ([`InvoiceStore::apply_payment`](crate::InvoiceStore::apply_payment)),
    /// publishes [`BillingEvent::InvoicePaymentChanged`], then moves the
    /// subscription to the standing its invoices give (see the module
    /// docs) through the transition table, publishing
    /// [`BillingEvent::SubscriptionStatusChanged`] if it changed. A
    /// subscription in a status with no payment transitions (trialing,
    /// paused, canceled…) keeps it.
    ///
    /// # Errors
    /// `NotFound` (invoice of another tenant included),
    /// `InvoiceNotFinalized`, `IllegalPaymentTransition`, `InvalidInput`,
    /// `CurrencyMismatch` from the invoice, nothing changed; a store
    /// failure updating the subscription after the invoice changed
    /// (retry any payment change of the subscription, or
    /// [`sync_payment_standing`](Self::sync_payment_standing), to repair).
    pub async fn change_payment(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
        change: PaymentChange,
    ) -> Result<Invoice, BillingError> {
        let before = self.stores.invoices.get(tenant, invoice).await?;
        let from = before.payment_state()?.status;
        let at = self.clock.now();
        let after = self
            .stores
            .invoices
            .apply_payment(tenant, invoice, change.clone(), at)
            .await?;
        let payment = after.payment_state()?;
        self.events
            .publish(BillingEvent::InvoicePaymentChanged {
                tenant_id: tenant,
                subscription_id: after.subscription_id,
                invoice_id: invoice,
                change: change.name(),
                from,
                to: payment.status,
                amount_remaining: payment.amount_remaining()?,
                at,
            })
            .await;
        let paid_now = from != PaymentStatus::Paid && payment.status == PaymentStatus::Paid;
        self.settle_standing(tenant, after.subscription_id, paid_now)
            .await?;
        Ok(after)
    }

    /// Moves the subscription to the standing its invoices give (see the
    /// module docs). Idempotent; the payment operations call it.
    ///
    /// # Errors
    /// `NotFound` for an unknown subscription; store failures.
    pub async fn sync_payment_standing(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<(), BillingError> {
        self.settle_standing(tenant, subscription, false).await
    }

    /// `paid_now`: an invoice just became paid, which alone may complete
    /// an `incomplete` subscription.
    pub(super) async fn settle_standing(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        paid_now: bool,
    ) -> Result<(), BillingError> {
        let invoices = self.stores.invoices.list(tenant, subscription).await?;
        let payments: Vec<_> = invoices
            .iter()
            .filter_map(|i| i.payment_state().ok())
            .collect();
        let target = if payments
            .iter()
            .any(|p| p.status == PaymentStatus::Uncollectible)
        {
            SubscriptionStatus::Unpaid
        } else if payments.iter().any(|p| p.is_delinquent()) {
            SubscriptionStatus::PastDue
        } else {
            SubscriptionStatus::Active
        };
        let current = self
            .stores
            .subscriptions
            .get(tenant, subscription)
            .await?
            .status;
        if !needs_move(current, target, paid_now) {
            return Ok(());
        }
        self.with_status_event(tenant, subscription, |sub, _, _| {
            if !needs_move(sub.status, target, paid_now) {
                return Ok(());
            }
            for event in payment_path(sub.status, target).unwrap_or_default() {
                sub.apply(event)?;
            }
            Ok(())
        })
        .await
        .map(drop)
    }
}

/// Whether a subscription in `current` should move towards `target`: it
/// differs, a path of payment events leads there, and an `incomplete`
/// subscription becomes active only by a payment.
fn needs_move(current: SubscriptionStatus, target: SubscriptionStatus, paid_now: bool) -> bool {
    current != target
        && (current != SubscriptionStatus::Incomplete || paid_now)
        && payment_path(current, target).is_some()
}

/// The shortest sequence of payment events (payment succeeded or failed,
/// retries exhausted) leading from `from` to `to` in [`TRANSITIONS`].
fn payment_path(
    from: SubscriptionStatus,
    to: SubscriptionStatus,
) -> Option<Vec<SubscriptionEvent>> {
    use SubscriptionEvent as E;
    let payment_events = [E::PaymentSucceeded, E::PaymentFailed, E::RetriesExhausted];
    let mut frontier = vec![(from, Vec::new())];
    let mut seen = vec![from];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for (status, path) in frontier {
            if status == to {
                return Some(path);
            }
            for (_, event, reached) in TRANSITIONS
                .iter()
                .filter(|(f, e, _)| *f == status && payment_events.contains(e))
            {
                if !seen.contains(reached) {
                    seen.push(*reached);
                    let mut longer = path.clone();
                    longer.push(*event);
                    next.push((*reached, longer));
                }
            }
        }
        frontier = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscriptionEvent as E;
    use SubscriptionStatus as S;

    #[test]
    fn payment_paths_follow_the_table() {
        assert_eq!(
            payment_path(S::Active, S::PastDue),
            Some(vec![E::PaymentFailed])
        );
        assert_eq!(
            payment_path(S::Active, S::Unpaid),
            Some(vec![E::PaymentFailed, E::RetriesExhausted])
        );
        assert_eq!(
            payment_path(S::Unpaid, S::Active),
            Some(vec![E::PaymentSucceeded])
        );
        assert_eq!(
            payment_path(S::Incomplete, S::Active),
            Some(vec![E::PaymentSucceeded])
        );
        // No payment event leaves these.
        assert_eq!(payment_path(S::Canceled, S::Active), None);
        assert_eq!(payment_path(S::Trialing, S::PastDue), None);
        assert_eq!(
            payment_path(S::Unpaid, S::PastDue),
            Some(vec![E::PaymentSucceeded, E::PaymentFailed])
        );
        assert!(!needs_move(S::Incomplete, S::Active, false));
        assert!(needs_move(S::Incomplete, S::Active, true));
    }
}
