//! Add-ons through the engine: the pure operation
//! ([`Subscription::set_addon`]) stored with the subscription's version
//! check, then an event.

use saas_core::TenantId;

use super::BillingEngine;
use crate::error::BillingError;
use crate::events::BillingEvent;
use crate::ids::SubscriptionId;
use crate::subscription::{AddOn, PlanChangeOutcome, Subscription};

impl BillingEngine {
    /// Attaches an add-on, changes its quantity, or (quantity 0) detaches
    /// it, timed and prorated by the engine's proration policy (see
    /// [`Subscription::set_addon`]). Ended periods are invoiced first, so
    /// the change lands in the period it is made in, whatever the billing
    /// cycle's lag. The add-on's lines are on the subscription's invoices
    /// from then on, discounted and taxed as any line.
    ///
    /// The crate README has a worked example with exact figures.
    ///
    /// # Errors
    /// As [`Subscription::set_addon`]; `NotFound` for an unknown
    /// subscription; `StaleVersion` if it kept changing concurrently.
    pub async fn set_addon(
        &self,
        tenant: TenantId,
        id: SubscriptionId,
        addon: AddOn,
    ) -> Result<(Subscription, PlanChangeOutcome), BillingError> {
        let (policy, rounding) = (self.config.proration, self.config.rounding);
        let (sub, outcome) = self
            .mutate(tenant, id, |sub, catalog, now| {
                sub.set_addon(addon.clone(), catalog, policy, now, rounding)
            })
            .await?;
        self.events
            .publish(BillingEvent::AddOnChanged {
                tenant_id: tenant,
                subscription_id: id,
                addon,
                direction: outcome.direction,
                timing: outcome.timing,
                at: self.clock.now(),
            })
            .await;
        Ok((sub, outcome))
    }
}
