//! The `/metrics` scrape: which catalogue series a run moved.

use std::collections::HashMap;

/// Series every notes run moves, whatever the placement and database:
/// resolver rejections (a forged tenant, a missing token), scoped
/// transactions, the metering layer's quota checks, the relay and the
/// audit writer's handler.
pub(crate) const MOVED_EVERYWHERE: &[&str] = &[
    "saas_resolver_rejections_total",
    "saas_tenancy_scope_seconds_count",
    "saas_billing_quota_decisions_total",
    "saas_events_relayed_total",
    "saas_events_handler_seconds_count",
];

/// Series a run on PostgreSQL moves besides: the tenant record cache.
pub(crate) const MOVED_ON_POSTGRES: &[&str] = &["saas_tenancy_record_cache_total"];

/// Series a run with a database (or file) per tenant moves besides: the
/// tenant pools.
pub(crate) const MOVED_PER_DATABASE: &[&str] = &[
    "saas_tenancy_pools_opened_total",
    "saas_tenancy_pool_budget_in_use",
];

/// One scrape: each series name with its values summed over label sets.
pub(crate) struct Scrape(HashMap<String, f64>);

impl Scrape {
    pub(crate) async fn take(http: &reqwest::Client, base: &str) -> Self {
        let response = http.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let text = response.text().await.unwrap();
        let mut series = HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            let value = value.unwrap_or_else(|| panic!("unreadable metrics line {line:?}"));
            *series.entry(name.to_owned()).or_insert(0.0) += value;
        }
        Scrape(series)
    }

    fn value(&self, name: &str) -> Option<f64> {
        self.0.get(name).copied()
    }
}

/// Each of `series` is in `after` and went up since `before`.
pub(crate) fn assert_moved(before: &Scrape, after: &Scrape, series: &[&str]) {
    for name in series {
        let now = after
            .value(name)
            .unwrap_or_else(|| panic!("{name} missing from /metrics"));
        let then = before.value(name).unwrap_or(0.0);
        assert!(now > then, "{name} did not move: {then} then, {now} now");
    }
}
