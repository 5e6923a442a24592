//! Usage: idempotency, aggregation windows, late events.

use std::collections::BTreeMap;

use saas_billing::{
    Aggregation, BillingError, Currency, IngestOutcome, LineKind, Meter, MeterKey, NewSubscription,
    SubscriptionId, UsageEvent, Window, aggregate, dec,
};
use saas_core::{ErrorKind, TenantId};

use crate::fixtures::{at, harness, plan, usd};

fn calls() -> MeterKey {
    MeterKey::new("calls").unwrap()
}

#[tokio::test]
async fn duplicate_events_same_payload_once_other_payload_conflict() {
    let h = harness(at(2024, 1, 1, 0));
    let tenant = TenantId::new();
    let sub = h
        .engine()
        .create_subscription(NewSubscription::new(tenant, plan("payg", 1), Currency::USD))
        .await
        .unwrap();
    h.set_time(at(2024, 1, 5, 0));
    let event = UsageEvent::new(
        tenant,
        sub.id(),
        calls(),
        dec!(1),
        at(2024, 1, 5, 0),
        "req-42",
    )
    .with_property("region", "eu");
    assert_eq!(
        h.engine().record_usage(event.clone()).await.unwrap(),
        IngestOutcome::Recorded { billed_in: 0 }
    );
    assert_eq!(
        h.engine().record_usage(event.clone()).await.unwrap(),
        IngestOutcome::Duplicate { billed_in: 0 }
    );
    let changed = event.clone().with_property("region", "us");
    let err = h.engine().record_usage(changed).await.unwrap_err();
    assert_eq!(
        err,
        BillingError::IdempotencyConflict {
            key: "req-42".into()
        }
    );
    assert_eq!(err.kind(), ErrorKind::Conflict);
    // Another tenant may use the same key.
    let other = TenantId::new();
    let other_sub = h
        .engine()
        .create_subscription(NewSubscription::new(other, plan("payg", 1), Currency::USD))
        .await
        .unwrap();
    let theirs = UsageEvent::new(
        other,
        other_sub.id(),
        calls(),
        dec!(1),
        at(2024, 1, 5, 0),
        "req-42",
    );
    assert!(matches!(
        h.engine().record_usage(theirs).await.unwrap(),
        IngestOutcome::Recorded { .. }
    ));
    let stored = h
        .engine()
        .stores()
        .usage
        .billed_in(tenant, sub.id(), 0)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
}

#[tokio::test]
async fn events_outside_the_subscription_are_refused() {
    let h = harness(at(2024, 1, 10, 0));
    let tenant = TenantId::new();
    let sub = h
        .engine()
        .create_subscription(NewSubscription::new(tenant, plan("payg", 1), Currency::USD))
        .await
        .unwrap();
    let early = UsageEvent::new(tenant, sub.id(), calls(), dec!(1), at(2024, 1, 9, 0), "a");
    assert!(matches!(
        h.engine().record_usage(early).await,
        Err(BillingError::InvalidInput { .. })
    ));
    let future = UsageEvent::new(tenant, sub.id(), calls(), dec!(1), at(2024, 1, 10, 1), "b");
    assert!(matches!(
        h.engine().record_usage(future).await,
        Err(BillingError::InvalidInput { .. })
    ));
    let negative = UsageEvent::new(tenant, sub.id(), calls(), dec!(-1), at(2024, 1, 10, 0), "c");
    assert!(matches!(
        h.engine().record_usage(negative).await,
        Err(BillingError::InvalidInput { .. })
    ));
    let unknown = UsageEvent::new(
        tenant,
        sub.id(),
        MeterKey::new("nope").unwrap(),
        dec!(1),
        at(2024, 1, 10, 0),
        "d",
    );
    assert_eq!(
        h.engine().record_usage(unknown).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let stranger = UsageEvent::new(
        TenantId::new(),
        sub.id(),
        calls(),
        dec!(1),
        at(2024, 1, 10, 0),
        "e",
    );
    assert_eq!(
        h.engine().record_usage(stranger).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn aggregations_windows_and_groups() {
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    let ev = |v, t, k: &str, user: &str, region: &str| {
        UsageEvent::new(tenant, sub, calls(), v, t, k)
            .with_property("user", user)
            .with_property("region", region)
    };
    let ny = chrono_tz::America::New_York;
    // 2024-03-10 is New York's spring-forward day (23 hours): 05:00Z is
    // 00:00 EST; 2024-03-11 04:00Z is 00:00 EDT.
    let events = [
        ev(dec!(2), at(2024, 3, 10, 6), "1", "ann", "eu"),
        ev(dec!(5), at(2024, 3, 10, 7), "2", "bob", "eu"),
        ev(dec!(1), at(2024, 3, 11, 3), "3", "ann", "us"),
        ev(dec!(4), at(2024, 3, 11, 4), "4", "cat", "us"),
    ];
    let of = |aggregation| Meter::new(calls(), aggregation);
    let values = |meter: &Meter, window| -> Vec<_> {
        aggregate(meter, &events, window)
            .unwrap()
            .into_iter()
            .map(|a| a.value)
            .collect()
    };
    let day = Window::Day(ny);
    assert_eq!(values(&of(Aggregation::Count), day), [dec!(3), dec!(1)]);
    assert_eq!(values(&of(Aggregation::Sum), day), [dec!(8), dec!(4)]);
    assert_eq!(values(&of(Aggregation::Min), day), [dec!(1), dec!(4)]);
    assert_eq!(values(&of(Aggregation::Max), day), [dec!(5), dec!(4)]);
    assert_eq!(values(&of(Aggregation::Latest), day), [dec!(1), dec!(4)]);
    let users = of(Aggregation::UniqueCount {
        property: "user".into(),
    });
    assert_eq!(values(&users, day), [dec!(2), dec!(1)]);
    let days = aggregate(&users, &events, day).unwrap();
    assert_eq!(days[0].window_start, at(2024, 3, 10, 5));
    assert_eq!(days[0].window_end, at(2024, 3, 11, 4)); // 23 hours
    // Hours in the customer's zone.
    assert_eq!(
        values(&of(Aggregation::Count), Window::Hour(ny)),
        [dec!(1), dec!(1), dec!(1), dec!(1)]
    );
    let kolkata = aggregate(
        &of(Aggregation::Count),
        &events[..1],
        Window::Hour(chrono_tz::Asia::Kolkata),
    )
    .unwrap();
    // 06:00Z is 11:30 IST: the local hour starts at 05:30Z.
    assert_eq!(
        kolkata[0].window_start,
        at(2024, 3, 10, 5) + chrono::TimeDelta::minutes(30)
    );
    // Group by region, over the whole of both days.
    let by_region = of(Aggregation::Sum).group_by("region");
    let month = Window::BillingPeriod(saas_billing::BillingCalendar::new(
        at(2024, 3, 1, 0),
        ny,
        saas_billing::Cadence::monthly(),
    ));
    let groups = aggregate(&by_region, &events, month).unwrap();
    let pairs: Vec<_> = groups.iter().map(|a| (a.group.clone(), a.value)).collect();
    assert_eq!(
        pairs,
        [
            (
                BTreeMap::from([("region".to_owned(), "eu".to_owned())]),
                dec!(7)
            ),
            (
                BTreeMap::from([("region".to_owned(), "us".to_owned())]),
                dec!(5)
            ),
        ]
    );
}

#[tokio::test]
async fn late_events_within_grace_then_after_finalization() {
    // payg: 0.10 USD a call; grace 24 hours (the default).
    let mut h = harness(at(2024, 1, 1, 0));
    let tenant = TenantId::new();
    let sub = h
        .engine()
        .create_subscription(NewSubscription::new(tenant, plan("payg", 1), Currency::USD))
        .await
        .unwrap();
    let call = |t, key: &str| UsageEvent::new(tenant, sub.id(), calls(), dec!(1), t, key);
    h.set_time(at(2024, 1, 20, 0));
    for i in 0..10 {
        h.engine()
            .record_usage(call(at(2024, 1, 20, 0), &format!("jan-{i}")))
            .await
            .unwrap();
    }
    // Feb 1: January's draft: 10 calls = 1.00.
    let report = h.advance_to(at(2024, 2, 1, 0)).await.unwrap();
    assert_eq!(report.drafts_created.len(), 1);
    let draft = &h.engine().invoices(tenant, sub.id()).await.unwrap()[0];
    assert_eq!(draft.total, usd(dec!(1.00)));
    // Feb 1 12:00, within grace: a call of Jan 31 23:00 joins January.
    h.set_time(at(2024, 2, 1, 12));
    let late = h
        .engine()
        .record_usage(call(at(2024, 1, 31, 23), "late-1"))
        .await
        .unwrap();
    assert_eq!(late, IngestOutcome::Recorded { billed_in: 0 });
    // Feb 2: grace over, January is re-rated and finalized: 11 calls = 1.10.
    let report = h.advance_to(at(2024, 2, 2, 0)).await.unwrap();
    assert_eq!(report.finalized.len(), 1);
    let january = h.engine().invoices(tenant, sub.id()).await.unwrap()[0].clone();
    assert!(january.is_finalized());
    assert_eq!(january.total, usd(dec!(1.10)));
    assert_eq!(january.lines[0].quantity, dec!(11));
    // Feb 3: a call of Jan 20 arrives after finalization: billed in February
    // as a correction, never dropped.
    h.set_time(at(2024, 2, 3, 0));
    let later = h
        .engine()
        .record_usage(call(at(2024, 1, 20, 0), "late-2"))
        .await
        .unwrap();
    assert_eq!(later, IngestOutcome::Recorded { billed_in: 1 });
    for i in 0..5 {
        h.engine()
            .record_usage(call(at(2024, 2, 3, 0), &format!("feb-{i}")))
            .await
            .unwrap();
    }
    h.advance_to(at(2024, 3, 2, 0)).await.unwrap();
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(invoices[0], january, "a finalized invoice never changes");
    let february = &invoices[1];
    assert!(february.is_finalized());
    let lines: Vec<_> = february
        .lines
        .iter()
        .map(|l| (l.kind.clone(), l.quantity, l.amount))
        .collect();
    assert_eq!(
        lines,
        [
            (LineKind::Usage { meter: calls() }, dec!(5), usd(dec!(0.50))),
            (
                LineKind::UsageCorrection {
                    meter: calls(),
                    period: 0
                },
                dec!(1),
                usd(dec!(0.10))
            ),
        ]
    );
    assert_eq!(february.total, usd(dec!(0.60)));
}
