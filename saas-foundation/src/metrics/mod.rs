//! Metrics of the whole foundation (feature `metrics`), served in the
//! Prometheus text format (feature `prometheus`).
//!
//! Every crate records through the [`metrics`](https://docs.rs/metrics)
//! facade, so any recorder works; [`Prometheus`] installs one and serves
//! it. Tenant ids are labels only if the host opts in
//! ([`saas_core::metrics::set_tenant_labels`], with a bound).
//!
#![doc = include_str!("../../METRICS.md")]

#[cfg(feature = "prometheus")]
mod prometheus;

#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub use prometheus::{Prometheus, PrometheusError};

/// Requests the rate limit let through or refused, by `decision`.
pub const RATE_LIMIT_DECISIONS: &str = "saas_rate_limit_decisions_total";

/// A rate-limit decision.
#[cfg(feature = "ratelimit")]
pub(crate) fn rate_limited(tenant: saas_core::TenantId, allowed: bool) {
    let decision = if allowed { "allowed" } else { "denied" };
    let labels = vec![::metrics::Label::new("decision", decision)];
    let labels = saas_core::metrics::with_tenant(labels, Some(tenant));
    ::metrics::counter!(RATE_LIMIT_DECISIONS, labels).increment(1);
}
