//! Entitlements: what a plan version lets a customer do, and quota checks.
//!
//! A plan version lists its [`Entitlement`]s: boolean features (`sso`),
//! static limits (`seats = 10`) and metered quotas (10,000 `api_calls` per
//! period). [`Entitlement::decide`] is the pure check; [`EntitlementChecker`]
//! keeps per-tenant counters in memory for the request hot path.

mod checker;

pub use checker::EntitlementChecker;

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{FeatureKey, MeterKey};
use crate::subscription::SubscriptionStatus;

/// What a feature grants.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntitlementValue {
    /// On (the feature is listed) — `sso`, `audit_log`.
    Flag,
    /// A fixed limit on a quantity the customer holds at once: `seats = 10`.
    Limit {
        /// The most allowed.
        limit: Decimal,
    },
    /// A limit on a meter's usage per billing period: 10,000 `api_calls`.
    Quota {
        /// The meter whose per-period total counts against the quota.
        meter: MeterKey,
        /// The most allowed per period.
        per_period: Decimal,
    },
}

/// One feature of a plan version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entitlement {
    feature: FeatureKey,
    value: EntitlementValue,
}

/// Why a check was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenyReason {
    /// No entitlements are loaded for the tenant: it has no subscription,
    /// its subscription ended and was closed, or (in a new process) the
    /// engine's entitlements were not restored with
    /// [`BillingEngine::restore_entitlements`](crate::BillingEngine::restore_entitlements).
    UnknownTenant,
    /// The tenant's plan version does not list the feature.
    UnknownFeature,
    /// The amount is negative or would go over the limit or quota.
    OverLimit,
    /// The tenant's subscription is in a status that is not served
    /// (paused, unpaid, incomplete, incomplete_expired, canceled): its
    /// plan grants nothing until it is served again.
    NotServed(SubscriptionStatus),
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::UnknownTenant => f.write_str("no entitlements are loaded for the tenant"),
            DenyReason::UnknownFeature => f.write_str("the plan does not include the feature"),
            DenyReason::OverLimit => f.write_str("the limit or quota would be exceeded"),
            DenyReason::NotServed(status) => write!(f, "subscription {status}"),
        }
    }
}

/// The answer to a quota or feature check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    allowed: bool,
    remaining: Option<Decimal>,
    limit: Option<Decimal>,
    reason: Option<DenyReason>,
}

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// What is left after this request if allowed, or what is left now if
    /// denied; `None` for a boolean feature (no quantity).
    pub fn remaining(&self) -> Option<Decimal> {
        self.remaining
    }

    /// The limit checked against; `None` for a boolean feature.
    pub fn limit(&self) -> Option<Decimal> {
        self.limit
    }

    /// Why it was denied; `None` when allowed.
    pub fn reason(&self) -> Option<DenyReason> {
        self.reason
    }

    /// A denial with no quantity attached.
    pub(crate) fn deny(reason: DenyReason) -> Decision {
        Decision {
            allowed: false,
            remaining: None,
            limit: None,
            reason: Some(reason),
        }
    }
}

impl Entitlement {
    /// A boolean feature.
    pub fn flag(feature: FeatureKey) -> Entitlement {
        Entitlement {
            feature,
            value: EntitlementValue::Flag,
        }
    }

    /// A static limit (`seats = 10`).
    pub fn limit(feature: FeatureKey, limit: Decimal) -> Entitlement {
        Entitlement {
            feature,
            value: EntitlementValue::Limit { limit },
        }
    }

    /// A metered quota per billing period.
    pub fn quota(feature: FeatureKey, meter: MeterKey, per_period: Decimal) -> Entitlement {
        Entitlement {
            feature,
            value: EntitlementValue::Quota { meter, per_period },
        }
    }

    /// The feature.
    pub fn feature(&self) -> &FeatureKey {
        &self.feature
    }

    /// What it grants.
    pub fn value(&self) -> &EntitlementValue {
        &self.value
    }

    /// The limit, for limits and quotas.
    pub fn max(&self) -> Option<Decimal> {
        match &self.value {
            EntitlementValue::Flag => None,
            EntitlementValue::Limit { limit } => Some(*limit),
            EntitlementValue::Quota { per_period, .. } => Some(*per_period),
        }
    }

    /// Whether `amount` more may be used when `used` is already used
    /// (the current holding for a limit, the period's usage for a quota).
    /// A flag allows any amount. Reaching the limit exactly is allowed;
    /// going over it is not. Pure and allocation-free.
    ///
    /// ```
    /// use saas_billing::{dec, Entitlement, FeatureKey, MeterKey};
    ///
    /// let calls = Entitlement::quota(FeatureKey::new("calls")?, MeterKey::new("calls")?, dec!(10000));
    /// let last = calls.decide(dec!(9999), dec!(1));
    /// assert!(last.is_allowed());
    /// assert_eq!(last.remaining(), Some(dec!(0)));
    /// let over = calls.decide(dec!(10000), dec!(1));
    /// assert!(!over.is_allowed());
    /// assert_eq!(over.remaining(), Some(dec!(0)));
    /// # Ok::<(), saas_billing::BillingError>(())
    /// ```
    pub fn decide(&self, used: Decimal, amount: Decimal) -> Decision {
        let Some(limit) = self.max() else {
            return Decision {
                allowed: true,
                remaining: None,
                limit: None,
                reason: None,
            };
        };
        // Clamped to [0, limit]: the subtraction cannot overflow.
        let left = if limit.is_sign_negative() {
            Decimal::ZERO
        } else {
            limit - used.max(Decimal::ZERO).min(limit)
        };
        let allowed = !amount.is_sign_negative() && amount <= left;
        Decision {
            allowed,
            remaining: Some(if allowed { left - amount } else { left }),
            limit: Some(limit),
            reason: (!allowed).then_some(DenyReason::OverLimit),
        }
    }
}
