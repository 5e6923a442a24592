//! Tenant → current subscription: the question every metered request asks
//! first, answered from a short-lived cache.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use saas_billing::{BillingEngine, BillingError, Subscription, SubscriptionId};
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
        if let Some((at, id)) = self.known.read().await.get(&tenant)
            && at.elapsed() < self.ttl
        {
            return Ok(*id);
        }
        Ok(self.look_up(tenant).await?.id())
    }

    /// The tenant's current subscription, read from the store.
    ///
    /// # Errors
    /// As [`CurrentSubscriptions::id`].
    pub async fn current(&self, tenant: TenantId) -> Result<Subscription, BillingError> {
        let id = self.id(tenant).await?;
        let subscription = self.billing.subscription(tenant, id).await?;
        if subscription.status().is_terminal() {
            // Ended since it was remembered: find its successor.
            return self.look_up(tenant).await;
        }
        Ok(subscription)
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
        let all = self.billing.stores().subscriptions.list(tenant).await?;
        let Some(current) = all.into_iter().find(|s| !s.status().is_terminal()) else {
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
