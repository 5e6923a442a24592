//! The checks counted in a shared [`QuotaStore`] (with or without
//! grants), beside the in-memory ones of the parent module.

use std::sync::PoisonError;

use rust_decimal::Decimal;
use saas_core::TenantId;

use super::{EntitlementChecker, whole};
use crate::calendar::BillingCalendar;
use crate::entitlement::{Decision, DenyReason, Entitlement, EntitlementValue};
use crate::error::BillingError;
use crate::quota::{Consumption, GrantedQuota, QuotaKey, QuotaStore};

impl EntitlementChecker {
    /// Like [`try_consume`](Self::try_consume), but counted in `store`,
    /// shared by every server: of racing servers, together exactly the
    /// limit is granted, and a restarted server sees the used amount.
    ///
    /// Unknown tenants and features, suspended tenants and flags are
    /// answered from memory, as by `try_consume`, without touching the
    /// store. A quota counts under [`QuotaKey::new`]`(tenant, feature,
    /// period)` with the current billing period's start (Unix seconds) as
    /// the period label, so a new period starts from zero once across
    /// servers; a static limit counts under [`QuotaKey::standing`]`(tenant,
    /// feature)` (for "3 projects" style limits that must go back when a
    /// creation fails, use the store's `reserve`/`commit`/`release` with
    /// that key). The plan's limit is rounded down to a whole number.
    /// The in-memory counters are not changed.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use chrono::{TimeZone, Utc};
    /// use saas_billing::quota::InMemoryQuotaStore;
    /// use saas_billing::{dec, BillingCalendar, Cadence, Entitlement, EntitlementChecker, FeatureKey, MeterKey};
    /// use saas_core::{ManualClock, TenantId};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    /// let clock = Arc::new(ManualClock::new(start));
    /// let calendar = BillingCalendar::new(start, chrono_tz::UTC, Cadence::monthly());
    /// let quota = Entitlement::quota(FeatureKey::new("calls")?, MeterKey::new("calls")?, dec!(2));
    /// let tenant = TenantId::new();
    /// // Two servers, one shared store (PgQuotaStore in production).
    /// let store = InMemoryQuotaStore::new();
    /// let (a, b) = (EntitlementChecker::new(clock.clone()), EntitlementChecker::new(clock));
    /// a.set_plan(tenant, &[quota.clone()], calendar);
    /// b.set_plan(tenant, &[quota], calendar);
    /// assert!(a.try_consume_with(&store, tenant, "calls", 1).await?.is_allowed());
    /// assert!(b.try_consume_with(&store, tenant, "calls", 1).await?.is_allowed());
    /// let third = a.try_consume_with(&store, tenant, "calls", 1).await?;
    /// assert!(!third.is_allowed());
    /// assert_eq!(third.remaining(), Some(dec!(0)));
    /// # Ok::<(), saas_billing::BillingError>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// What the store returns (`Backend`: nothing is known to be consumed;
    /// deny or retry), or `DateOutOfRange` if the billing period cannot be
    /// computed.
    pub async fn try_consume_with(
        &self,
        store: &dyn QuotaStore,
        tenant: TenantId,
        feature: &str,
        amount: u64,
    ) -> Result<Decision, BillingError> {
        let decision = self.consume_with(store, tenant, feature, amount).await;
        if let Ok(decision) = &decision {
            crate::observe::decided(tenant, feature, decision);
        }
        decision
    }

    /// Like [`try_consume_with`](Self::try_consume_with), with the
    /// tenant's [grants](crate::quota::QuotaGrant) on top of the plan's
    /// quota: the plan's quota is spent first, then the grants, then the
    /// request is denied (see [`GrantedQuota`]). The decision's `limit` is
    /// the plan's; its `remaining` counts the live grants too. A grant for
    /// the current period names the period label of
    /// [`quota_key`](Self::quota_key).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use chrono::{TimeZone, Utc};
    /// use saas_billing::quota::{GrantedQuota, InMemoryQuotaStore, QuotaGrant};
    /// use saas_billing::{dec, BillingCalendar, Cadence, Entitlement, EntitlementChecker, FeatureKey, MeterKey};
    /// use saas_core::{ManualClock, TenantId};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    /// let clock = Arc::new(ManualClock::new(start));
    /// let calendar = BillingCalendar::new(start, chrono_tz::UTC, Cadence::monthly());
    /// let quota = Entitlement::quota(FeatureKey::new("calls")?, MeterKey::new("calls")?, dec!(1));
    /// let tenant = TenantId::new();
    /// let checker = EntitlementChecker::new(clock.clone());
    /// checker.set_plan(tenant, &[quota], calendar);
    /// let quotas = GrantedQuota::over(Arc::new(InMemoryQuotaStore::new()), clock);
    /// // One more call this period, bought as a top-up.
    /// let key = checker.quota_key(tenant, "calls")?.expect("a quota");
    /// quotas.grant(&QuotaGrant::for_period(tenant, "calls", key.period(), 1)?).await?;
    /// assert!(checker.try_consume_with_grants(&quotas, tenant, "calls", 1).await?.is_allowed());
    /// assert!(checker.try_consume_with_grants(&quotas, tenant, "calls", 1).await?.is_allowed());
    /// assert!(!checker.try_consume_with_grants(&quotas, tenant, "calls", 1).await?.is_allowed());
    /// # Ok::<(), saas_billing::BillingError>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// As [`try_consume_with`](Self::try_consume_with).
    pub async fn try_consume_with_grants(
        &self,
        quotas: &GrantedQuota,
        tenant: TenantId,
        feature: &str,
        amount: u64,
    ) -> Result<Decision, BillingError> {
        let decision = match self.counter(tenant, feature, amount)? {
            Counted::Answered(decision) => decision,
            Counted::In(key, limit) => {
                counted(quotas.try_consume(&key, amount, limit).await?, limit)
            }
        };
        crate::observe::decided(tenant, feature, &decision);
        Ok(decision)
    }

    /// The [`QuotaKey`] that [`try_consume_with`](Self::try_consume_with)
    /// counts `feature` of `tenant` under now: the current period's for a
    /// quota, the standing one for a limit; `None` for a flag, an unknown
    /// tenant or feature.
    ///
    /// # Errors
    /// `DateOutOfRange` if the billing period cannot be computed.
    pub fn quota_key(
        &self,
        tenant: TenantId,
        feature: &str,
    ) -> Result<Option<QuotaKey>, BillingError> {
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        let Some(grants) = tenants.get(&tenant) else {
            return Ok(None);
        };
        let Some(grant) = grants.features.get(feature) else {
            return Ok(None);
        };
        Ok(self
            .key_and_limit(tenant, feature, &grant.entitlement, &grants.calendar)?
            .map(|(key, _)| key))
    }

    fn key_and_limit(
        &self,
        tenant: TenantId,
        feature: &str,
        entitlement: &Entitlement,
        calendar: &BillingCalendar,
    ) -> Result<Option<(QuotaKey, u64)>, BillingError> {
        Ok(match &entitlement.value {
            EntitlementValue::Flag => None,
            EntitlementValue::Limit { limit } => {
                Some((QuotaKey::standing(tenant, feature)?, whole(*limit)))
            }
            EntitlementValue::Quota { per_period, .. } => {
                let period = calendar.period_containing(self.clock.now())?;
                let label = period.start().timestamp().to_string();
                Some((QuotaKey::new(tenant, feature, label)?, whole(*per_period)))
            }
        })
    }

    /// Answers from memory what needs no store, or names the counter.
    fn counter(
        &self,
        tenant: TenantId,
        feature: &str,
        amount: u64,
    ) -> Result<Counted, BillingError> {
        let (entitlement, calendar) = {
            let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
            let Some(grants) = tenants.get(&tenant) else {
                return Ok(Counted::Answered(Decision::deny(DenyReason::UnknownTenant)));
            };
            if let Some(status) = grants.suspended {
                return Ok(Counted::Answered(Decision::deny(DenyReason::NotServed(
                    status,
                ))));
            }
            let Some(grant) = grants.features.get(feature) else {
                return Ok(Counted::Answered(Decision::deny(
                    DenyReason::UnknownFeature,
                )));
            };
            (grant.entitlement.clone(), grants.calendar)
        };
        Ok(
            match self.key_and_limit(tenant, feature, &entitlement, &calendar)? {
                Some((key, limit)) => Counted::In(key, limit),
                None => Counted::Answered(entitlement.decide(Decimal::ZERO, Decimal::from(amount))),
            },
        )
    }

    async fn consume_with(
        &self,
        store: &dyn QuotaStore,
        tenant: TenantId,
        feature: &str,
        amount: u64,
    ) -> Result<Decision, BillingError> {
        Ok(match self.counter(tenant, feature, amount)? {
            Counted::Answered(decision) => decision,
            Counted::In(key, limit) => {
                counted(store.try_consume(&key, amount, limit).await?, limit)
            }
        })
    }
}

/// What [`EntitlementChecker`] answers without a store, or the counter
/// and plan limit a store decides on.
enum Counted {
    Answered(Decision),
    In(QuotaKey, u64),
}

/// The decision of a store's consumption against the plan's `limit`.
fn counted(consumption: Consumption, limit: u64) -> Decision {
    let (allowed, remaining) = match consumption {
        Consumption::Granted { remaining } => (true, remaining),
        Consumption::Denied { remaining } => (false, remaining),
    };
    Decision {
        allowed,
        remaining: Some(Decimal::from(remaining)),
        limit: Some(Decimal::from(limit)),
        reason: (!allowed).then_some(DenyReason::OverLimit),
    }
}
