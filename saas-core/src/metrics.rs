//! Metrics shared by every crate of the workspace (feature `metrics`):
//! whether tenant ids are metric labels, and this crate's own series.
//!
//! The crates record through the [`metrics`](https://docs.rs/metrics)
//! facade: nothing is recorded until the host installs a recorder (for
//! example `metrics-exporter-prometheus`; saas-foundation's `metrics`
//! module serves one at `/metrics`). The catalogue of every series, with
//! its type, unit and labels, is saas-foundation's `METRICS.md`.
//!
//! Tenant ids are **not** labels unless the host opts in with
//! [`set_tenant_labels`]: a label per tenant multiplies every series by
//! the number of tenants. With a bound of `n`, the first `n` tenants seen
//! get their id as the `tenant` label and every later one shares
//! [`OTHER_TENANTS`], so a series has at most `n + 1` tenant values.
//!
//! ```
//! saas_core::metrics::set_tenant_labels(100);
//! let tenant = saas_core::TenantId::new();
//! assert_eq!(saas_core::metrics::tenant_label(tenant), Some(tenant.to_string()));
//! saas_core::metrics::set_tenant_labels(0);
//! assert_eq!(saas_core::metrics::tenant_label(tenant), None);
//! ```

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

use crate::TenantId;

/// The `tenant` label of the tenants past the bound of
/// [`set_tenant_labels`].
pub const OTHER_TENANTS: &str = "_other";

/// The name of the tenant label.
pub const TENANT_LABEL: &str = "tenant";

static BOUND: AtomicUsize = AtomicUsize::new(0);
static LABELLED: RwLock<Option<HashSet<TenantId>>> = RwLock::new(None);

/// Labels series with the tenant id for the first `max_tenants` tenants
/// seen by this process (later ones as [`OTHER_TENANTS`]); `0` (the
/// default) turns tenant labels off. Changing the bound forgets which
/// tenants were seen.
pub fn set_tenant_labels(max_tenants: usize) {
    let mut seen = LABELLED.write().unwrap_or_else(PoisonError::into_inner);
    *seen = None;
    BOUND.store(max_tenants, Ordering::Release);
}

/// The `tenant` label value for `tenant`, or `None` when tenant labels are
/// off (see [`set_tenant_labels`]).
pub fn tenant_label(tenant: TenantId) -> Option<String> {
    let bound = BOUND.load(Ordering::Acquire);
    if bound == 0 {
        return None;
    }
    // Read-mostly: a tenant labelled before needs only the read lock.
    let labelled =
        |seen: &Option<HashSet<TenantId>>| seen.as_ref().map(|s| (s.contains(&tenant), s.len()));
    let known = labelled(&LABELLED.read().unwrap_or_else(PoisonError::into_inner));
    let labelled = match known {
        Some((true, _)) => true,
        Some((false, len)) if len >= bound => false,
        _ => {
            let mut seen = LABELLED.write().unwrap_or_else(PoisonError::into_inner);
            let seen = seen.get_or_insert_with(HashSet::new);
            seen.contains(&tenant) || (seen.len() < bound && seen.insert(tenant))
        }
    };
    Some(match labelled {
        true => tenant.to_string(),
        false => OTHER_TENANTS.to_owned(),
    })
}

/// `labels` with the tenant label added, when tenant labels are on.
pub fn with_tenant(
    mut labels: Vec<metrics::Label>,
    tenant: Option<TenantId>,
) -> Vec<metrics::Label> {
    if let Some(value) = tenant.and_then(tenant_label) {
        labels.push(metrics::Label::new(TENANT_LABEL, value));
    }
    labels
}

/// Requests the resolver refused, by `reason` (the rejection's code).
pub const RESOLVER_REJECTIONS: &str = "saas_resolver_rejections_total";

pub(crate) fn resolver_rejected(reason: &'static str) {
    metrics::counter!(RESOLVER_REJECTIONS, "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    // The only test touching the process-wide bound.
    #[test]
    fn tenant_labels_stay_within_their_bound() {
        let (a, b, c) = (TenantId::new(), TenantId::new(), TenantId::new());
        assert_eq!(tenant_label(a), None, "off by default");
        set_tenant_labels(2);
        assert_eq!(tenant_label(a), Some(a.to_string()));
        assert_eq!(tenant_label(b), Some(b.to_string()));
        assert_eq!(tenant_label(c).as_deref(), Some(OTHER_TENANTS));
        assert_eq!(tenant_label(a), Some(a.to_string()), "a keeps its label");
        let labels = with_tenant(vec![metrics::Label::new("op", "begin")], Some(c));
        assert_eq!(labels[1].value(), OTHER_TENANTS);
        set_tenant_labels(0);
        assert_eq!(tenant_label(a), None);
        assert_eq!(with_tenant(Vec::new(), Some(a)).len(), 0);
    }
}
