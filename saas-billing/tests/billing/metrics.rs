//! Decision metrics, read back from a recorder of this test's thread:
//! by decision and reason, the feature label only for a feature of the
//! tenant's plan, the tenant label only when the host opted in.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use saas_billing::{BillingCalendar, Cadence, Entitlement, EntitlementChecker, FeatureKey, dec};
use saas_core::{ManualClock, TenantId};

#[test]
fn decisions_are_counted_with_bounded_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let checker = EntitlementChecker::new(Arc::new(ManualClock::new(start)));
    let calendar = BillingCalendar::new(start, chrono_tz::UTC, Cadence::monthly());
    let projects = Entitlement::limit(FeatureKey::new("projects").unwrap(), dec!(1));
    let (tenant, stranger) = (TenantId::new(), TenantId::new());
    checker.set_plan(tenant, &[projects], calendar);

    assert!(
        checker
            .try_consume(tenant, "projects", dec!(1))
            .is_allowed()
    );
    assert!(
        !checker
            .try_consume(tenant, "projects", dec!(1))
            .is_allowed()
    );
    // A feature name the caller made up, and a tenant without a plan.
    assert!(
        !checker
            .check(tenant, "made-up-feature-1234", dec!(1))
            .is_allowed()
    );
    assert!(!checker.check(stranger, "projects", dec!(1)).is_allowed());
    // With tenant labels on, the tenant is a label.
    saas_core::metrics::set_tenant_labels(10);
    assert!(!checker.check(tenant, "projects", dec!(1)).is_allowed());
    saas_core::metrics::set_tenant_labels(0);

    let mut seen: Vec<(Vec<(String, String)>, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "saas_billing_quota_decisions_total")
        .map(|(key, _, _, value)| {
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let DebugValue::Counter(count) = value else {
                panic!("not a counter: {value:?}")
            };
            (labels, count)
        })
        .collect();
    seen.sort();
    let labels = |feature: &str, decision: &str, reason: &str| {
        vec![
            ("feature".to_owned(), feature.to_owned()),
            ("decision".to_owned(), decision.to_owned()),
            ("reason".to_owned(), reason.to_owned()),
        ]
    };
    let mut with_tenant = labels("projects", "denied", "over_limit");
    with_tenant.push(("tenant".to_owned(), tenant.to_string()));
    let mut expected = vec![
        (labels("projects", "allowed", "none"), 1),
        (labels("projects", "denied", "over_limit"), 1),
        (labels("_unchecked", "denied", "unknown_feature"), 1),
        (labels("_unchecked", "denied", "unknown_tenant"), 1),
        (with_tenant, 1),
    ];
    expected.sort();
    assert_eq!(seen, expected);
}
