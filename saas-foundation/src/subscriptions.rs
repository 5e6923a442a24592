//! Tenant → current subscription: the question every metered request asks
//! first, answered from a short-lived cache.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use saas_billing::{BillingEngine, BillingError, Entitlement, Subscription, SubscriptionId};
use saas_core::TenantId;
use tokio::sync::RwLock;

/// How long a tenant's current subscription id is trusted by default.
const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// Finds a tenant's current subscription — the one not canceled or
/// otherwise ended — and remembers its id for a short while (five seconds
/// by default), so metering each request does not list the tenant's
/// subscriptions each time. A subscription replaced by another (a
/// cancellation, then a new one) is seen at the latest when the entry
/// expires, or at once after [`CurrentSubscriptions::forget`].
///
/// ```no_run
/// # async fn run(engine: saas_billing::BillingEngine, tenant: saas_core::TenantId) -> Result<(), saas_billing::BillingError> {
/// use saas_foundation::subscriptions::CurrentSubscriptions;
///
/// let current = CurrentSubscriptions::new(engine);
/// let id = current.id(tenant).await?; // NotFound if it has none
/// # let _ = id; Ok(()) }
/// ```
#[derive(Debug)]
pub struct CurrentSubscriptions {
    billing: BillingEngine,
    ttl: Duration,
    known: RwLock<HashMap<TenantId, (Instant, SubscriptionId)>>,
}

impl CurrentSubscriptions {
    /// Current subscriptions from `billing`'s store.
    pub fn new(billing: BillingEngine) -> Self {
        Self {
            billing,
            ttl: DEFAULT_TTL,
            known: RwLock::default(),
        }
    }

    /// Trusts a remembered id for `ttl` (zero: always asks the store).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The billing engine.
    pub fn billing(&self) -> &BillingEngine {
        &self.billing
    }

    /// The id of the tenant's current subscription.
    ///
    /// # Errors
    /// [`BillingError::NotFound`] if the tenant has none; the store's error.
    pub async fn id(&self, tenant: TenantId) -> Result<SubscriptionId, BillingError> {
        match self.remembered(tenant).await {
            Some(id) => Ok(id),
            None => Ok(self.look_up(tenant).await?.id()),
        }
    }

    /// The id remembered for `tenant`, if not older than the TTL.
    async fn remembered(&self, tenant: TenantId) -> Option<SubscriptionId> {
        let known = self.known.read().await;
        let (at, id) = known.get(&tenant)?;
        (at.elapsed() < self.ttl).then_some(*id)
    }

    /// The tenant's current subscription, read from the store.
    ///
    /// # Errors
    /// As [`CurrentSubscriptions::id`].
    pub async fn current(&self, tenant: TenantId) -> Result<Subscription, BillingError> {
        let Some(id) = self.remembered(tenant).await else {
            // Not remembered: the look-up has read it already.
            return self.look_up(tenant).await;
        };
        let subscription = self.billing.subscription(tenant, id).await?;
        if subscription.status().is_terminal() {
            // Ended since it was remembered: find its successor.
            return self.look_up(tenant).await;
        }
        Ok(subscription)
    }

    /// The tenant's current subscription and its plan's entitlement to
    /// `feature` (a limit or a quota), `None` if the plan lists none — for
    /// a handler checking a count against the plan ("3 projects").
    ///
    /// # Errors
    /// As [`CurrentSubscriptions::current`]; [`BillingError::NotFound`]
    /// for a plan missing from the engine's catalog.
    pub async fn entitlement(
        &self,
        tenant: TenantId,
        feature: &str,
    ) -> Result<(Subscription, Option<Entitlement>), BillingError> {
        let subscription = self.current(tenant).await?;
        let plan = self.billing.catalog().plan(subscription.plan())?;
        let entitlement = plan
            .entitlements()
            .iter()
            .find(|e| e.feature().as_str() == feature)
            .cloned();
        Ok((subscription, entitlement))
    }

    /// Remembers `subscription` as its tenant's current one (right after
    /// creating it, say).
    pub async fn remember(&self, subscription: &Subscription) {
        self.known.write().await.insert(
            subscription.tenant_id(),
            (Instant::now(), subscription.id()),
        );
    }

    /// Forgets what is remembered of `tenant` (after changing its
    /// subscriptions).
    pub async fn forget(&self, tenant: TenantId) {
        self.known.write().await.remove(&tenant);
    }

    async fn look_up(&self, tenant: TenantId) -> Result<Subscription, BillingError> {
        let Some(current) = live_subscription(&self.billing, tenant).await? else {
            self.forget(tenant).await;
            return Err(BillingError::NotFound {
                what: "current subscription",
                id: format!("of tenant {tenant}"),
            });
        };
        self.remember(&current).await;
        Ok(current)
    }
}

/// The tenant's subscription that has not ended, if any, from the store.
pub(crate) async fn live_subscription(
    billing: &BillingEngine,
    tenant: TenantId,
) -> Result<Option<Subscription>, BillingError> {
    let all = billing.stores().subscriptions.list(tenant).await?;
    Ok(all.into_iter().find(|s| !s.status().is_terminal()))
}
