//! This crate's metrics (feature `metrics`; catalogue in saas-foundation's
//! `METRICS.md`). Without the feature every function here is empty.

use saas_core::TenantId;

use crate::entitlement::{Decision, DenyReason};

#[cfg(feature = "metrics")]
const QUOTA_DECISIONS: &str = "saas_billing_quota_decisions_total";
#[cfg(feature = "metrics")]
const CYCLE_SECONDS: &str = "saas_billing_cycle_seconds";
#[cfg(feature = "metrics")]
const INVOICES_DRAFTED: &str = "saas_billing_invoices_drafted_total";
#[cfg(feature = "metrics")]
const INVOICES_FINALIZED: &str = "saas_billing_invoices_finalized_total";

/// The `reason` label of a decision.
fn reason(decision: &Decision) -> &'static str {
    match decision.reason() {
        None => "none",
        Some(DenyReason::UnknownTenant) => "unknown_tenant",
        Some(DenyReason::UnknownFeature) => "unknown_feature",
        Some(DenyReason::OverLimit) => "over_limit",
        Some(DenyReason::NotServed(_)) => "not_served",
    }
}

/// An entitlement or quota decision on `feature` for `tenant`.
pub(crate) fn decided(tenant: TenantId, feature: &str, decision: &Decision) {
    #[cfg(feature = "metrics")]
    {
        // Only a feature the tenant's plan has is a label value: a name
        // the caller made up would add a series per name.
        let feature = match decision.reason() {
            Some(
                DenyReason::UnknownTenant | DenyReason::UnknownFeature | DenyReason::NotServed(_),
            ) => "_unchecked".to_owned(),
            _ => feature.to_owned(),
        };
        let labels = vec![
            metrics::Label::new("feature", feature),
            metrics::Label::new(
                "decision",
                if decision.is_allowed() {
                    "allowed"
                } else {
                    "denied"
                },
            ),
            metrics::Label::new("reason", reason(decision)),
        ];
        let labels = saas_core::metrics::with_tenant(labels, Some(tenant));
        metrics::counter!(QUOTA_DECISIONS, labels).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (tenant, feature, reason(decision));
}

/// A billing cycle run that took `took`, with its drafts and finalized
/// invoices (`None` when it failed). The histogram takes the duration as
/// is (seconds): no floating-point type is written in this crate.
pub(crate) fn cycle(took: std::time::Duration, done: Option<(usize, usize)>) {
    #[cfg(feature = "metrics")]
    {
        let outcome = if done.is_some() { "ok" } else { "error" };
        metrics::histogram!(CYCLE_SECONDS, "outcome" => outcome).record(took);
        if let Some((drafted, finalized)) = done {
            metrics::counter!(INVOICES_DRAFTED).increment(drafted as u64);
            metrics::counter!(INVOICES_FINALIZED).increment(finalized as u64);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (took, done);
}
