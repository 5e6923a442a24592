//! Per-tenant entitlement counters for the request hot path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use saas_core::{Clock, SharedClock, TenantId};

use super::{Decision, DenyReason, Entitlement, EntitlementValue};
use crate::calendar::BillingCalendar;
use crate::ids::{FeatureKey, MeterKey};
use crate::subscription::SubscriptionStatus;

mod stored;

/// Answers `check(tenant, feature, amount)` from memory.
///
/// The host (or [`BillingEngine`](crate::BillingEngine)) loads each
/// tenant's plan-version entitlements with [`set_plan`](Self::set_plan) and
/// feeds it usage with [`record_usage`](Self::record_usage); quotas reset
/// when the tenant's billing period (from its calendar and the injected
/// clock) rolls over. A check takes a read lock, one hash lookup by `&str`
/// and one uncontended mutex: no allocation.
///
/// Counters live in this process only: several API servers each need the
/// usage recorded through them *and* others (reload with
/// [`set_used`](Self::set_used) from the usage store), so a quota enforced
/// across servers is approximate by the replication delay. For a limit
/// exact across servers and restarts, consume through a shared
/// [`QuotaStore`](crate::quota::QuotaStore) with
/// [`try_consume_with`](Self::try_consume_with) (or, with one-off
/// top-ups on top of the plan,
/// [`try_consume_with_grants`](Self::try_consume_with_grants)): flags,
/// suspension and the plan's limits are still read from memory, the
/// count is the store's.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use saas_billing::{dec, BillingCalendar, Cadence, Entitlement, EntitlementChecker, FeatureKey, MeterKey};
/// use saas_core::{ManualClock, TenantId};
/// use std::sync::Arc;
///
/// let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
/// let checker = EntitlementChecker::new(Arc::new(ManualClock::new(start)));
/// let tenant = TenantId::new();
/// let calendar = BillingCalendar::new(start, chrono_tz::UTC, Cadence::monthly());
/// checker.set_plan(tenant, &[Entitlement::flag(FeatureKey::new("sso")?)], calendar);
/// assert!(checker.check(tenant, "sso", dec!(1)).is_allowed());
/// assert!(!checker.check(tenant, "scim", dec!(1)).is_allowed());
/// # Ok::<(), saas_billing::BillingError>(())
/// ```
#[derive(Debug)]
pub struct EntitlementChecker {
    clock: SharedClock,
    tenants: RwLock<HashMap<TenantId, Arc<TenantGrants>>>,
}

#[derive(Debug)]
struct TenantGrants {
    calendar: BillingCalendar,
    features: HashMap<FeatureKey, Grant>,
    /// The subscription's status while it is not served: every check is
    /// denied, but the counters stay so that resuming keeps the period's
    /// usage.
    suspended: Option<SubscriptionStatus>,
}

#[derive(Debug)]
struct Grant {
    entitlement: Entitlement,
    state: Mutex<Usage>,
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    /// Quotas: usage in the period ending at `period_end`. Limits: the
    /// quantity held.
    used: Decimal,
    period_end: Option<DateTime<Utc>>,
}

impl EntitlementChecker {
    /// An empty checker reading time from `clock`.
    pub fn new(clock: SharedClock) -> EntitlementChecker {
        EntitlementChecker {
            clock,
            tenants: RwLock::new(HashMap::new()),
        }
    }

    /// Sets (or replaces) a tenant's entitlements, served: checks are
    /// answered from them. Usage already counted for a feature that stays
    /// is kept, so a mid-period plan change (or a resume) does not reset
    /// quotas.
    pub fn set_plan(
        &self,
        tenant: TenantId,
        entitlements: &[Entitlement],
        calendar: BillingCalendar,
    ) {
        self.install(tenant, entitlements, calendar, None);
    }

    /// Marks a tenant's subscription as not served in `status` (paused,
    /// unpaid, …): every check and consumption is denied with
    /// [`DenyReason::NotServed`] until [`set_plan`](Self::set_plan) loads
    /// its entitlements again; the counters are kept meanwhile. Returns
    /// whether the tenant was known (an unknown tenant is denied anyway).
    pub fn suspend(&self, tenant: TenantId, status: SubscriptionStatus) -> bool {
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        let Some(old) = tenants.get(&tenant).cloned() else {
            return false;
        };
        let entitlements: Vec<Entitlement> = old
            .features
            .values()
            .map(|g| g.entitlement.clone())
            .collect();
        let grants = build(Some(&old), &entitlements, old.calendar, Some(status));
        tenants.insert(tenant, Arc::new(grants));
        true
    }

    /// Sets a tenant's entitlements, suspended in a status or served,
    /// keeping the counters of the features that stay. Built under the
    /// write lock so that usage recorded meanwhile is not lost.
    pub(crate) fn install(
        &self,
        tenant: TenantId,
        entitlements: &[Entitlement],
        calendar: BillingCalendar,
        suspended: Option<SubscriptionStatus>,
    ) {
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        let old = tenants.get(&tenant).cloned();
        let grants = build(old.as_deref(), entitlements, calendar, suspended);
        tenants.insert(tenant, Arc::new(grants));
    }

    /// Forgets a tenant (its subscription ended): every check is denied.
    pub fn remove(&self, tenant: TenantId) {
        self.tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&tenant);
    }

    /// Whether `amount` more of `feature` may be used now, without using
    /// it. Unknown tenants and features, and every feature of a suspended
    /// tenant, are denied (see [`Decision::reason`]).
    pub fn check(&self, tenant: TenantId, feature: &str, amount: Decimal) -> Decision {
        let decision = self.with_grant(tenant, feature, |grant, usage| {
            grant.entitlement.decide(usage.used, amount)
        });
        crate::observe::decided(tenant, feature, &decision);
        decision
    }

    /// Checks and, if allowed, counts `amount` against the feature in one
    /// step (two racing callers cannot both take the last unit).
    pub fn try_consume(&self, tenant: TenantId, feature: &str, amount: Decimal) -> Decision {
        let decision = self.with_grant(tenant, feature, |grant, usage| {
            let decision = grant.entitlement.decide(usage.used, amount);
            if decision.is_allowed() && grant.entitlement.max().is_some() {
                usage.used = usage.used.saturating_add(amount);
            }
            decision
        });
        crate::observe::decided(tenant, feature, &decision);
        decision
    }

    /// Sets the counted amount (a limit's current holding, or a quota's
    /// usage reloaded from the usage store).
    pub fn set_used(&self, tenant: TenantId, feature: &str, used: Decimal) {
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        let Some(grants) = tenants.get(&tenant) else {
            return;
        };
        if let Some(grant) = grants.features.get(feature) {
            let mut usage = lock(&grant.state);
            // Roll first: the value set is the current period's usage.
            roll(
                &grants.calendar,
                &grant.entitlement,
                &mut usage,
                self.clock.now(),
            );
            usage.used = used;
        }
    }

    /// Counts recorded usage of `meter` against every quota on it, allowed
    /// or not (usage is a fact). Returns the first quota now over its
    /// limit, if any, with its limit.
    pub fn record_usage(
        &self,
        tenant: TenantId,
        meter: &MeterKey,
        amount: Decimal,
    ) -> Option<(FeatureKey, Decimal)> {
        let grants = self.grants(tenant)?;
        let now = self.clock.now();
        let mut exceeded = None;
        for (key, grant) in &grants.features {
            let EntitlementValue::Quota {
                meter: m,
                per_period,
            } = &grant.entitlement.value
            else {
                continue;
            };
            if m != meter {
                continue;
            }
            let mut usage = lock(&grant.state);
            roll(&grants.calendar, &grant.entitlement, &mut usage, now);
            let before = usage.used;
            usage.used = usage.used.saturating_add(amount);
            if before <= *per_period && usage.used > *per_period && exceeded.is_none() {
                exceeded = Some((key.clone(), *per_period));
            }
        }
        exceeded
    }

    fn grants(&self, tenant: TenantId) -> Option<Arc<TenantGrants>> {
        self.tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&tenant)
            .cloned()
    }

    fn with_grant(
        &self,
        tenant: TenantId,
        feature: &str,
        f: impl FnOnce(&Grant, &mut Usage) -> Decision,
    ) -> Decision {
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        let Some(grants) = tenants.get(&tenant) else {
            return Decision::deny(DenyReason::UnknownTenant);
        };
        if let Some(status) = grants.suspended {
            return Decision::deny(DenyReason::NotServed(status));
        }
        let Some(grant) = grants.features.get(feature) else {
            return Decision::deny(DenyReason::UnknownFeature);
        };
        let mut usage = lock(&grant.state);
        roll(
            &grants.calendar,
            &grant.entitlement,
            &mut usage,
            self.clock.now(),
        );
        f(grant, &mut usage)
    }
}

/// A tenant's grants for `entitlements`, keeping the counters `old` has
/// for the same features.
fn build(
    old: Option<&TenantGrants>,
    entitlements: &[Entitlement],
    calendar: BillingCalendar,
    suspended: Option<SubscriptionStatus>,
) -> TenantGrants {
    let features = entitlements
        .iter()
        .map(|e| {
            let kept = old
                .and_then(|o| o.features.get(e.feature()))
                .map(|g| *lock(&g.state));
            let usage = kept.unwrap_or(Usage {
                used: Decimal::ZERO,
                period_end: None,
            });
            let grant = Grant {
                entitlement: e.clone(),
                state: Mutex::new(usage),
            };
            (e.feature().clone(), grant)
        })
        .collect();
    TenantGrants {
        calendar,
        features,
        suspended,
    }
}

/// Resets a quota's counter when its period has ended.
fn roll(
    calendar: &BillingCalendar,
    entitlement: &Entitlement,
    usage: &mut Usage,
    now: DateTime<Utc>,
) {
    if !matches!(entitlement.value, EntitlementValue::Quota { .. }) {
        return;
    }
    match usage.period_end {
        Some(end) if now < end => {}
        _ => {
            let first = usage.period_end.is_none();
            // An unrepresentable date leaves the counter as it is.
            if let Ok(period) = calendar.period_containing(now) {
                usage.period_end = Some(period.end());
                if !first {
                    usage.used = Decimal::ZERO;
                }
            }
        }
    }
}

/// A plan limit as a whole number of units for a [`QuotaStore`](crate::quota::QuotaStore): rounded
/// down, negative as 0, beyond the store's range as its maximum.
fn whole(limit: Decimal) -> u64 {
    use rust_decimal::prelude::ToPrimitive;
    if limit.is_sign_negative() {
        return 0;
    }
    limit
        .floor()
        .to_u64()
        .unwrap_or(crate::quota::MAX_QUOTA_AMOUNT)
        .min(crate::quota::MAX_QUOTA_AMOUNT)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
