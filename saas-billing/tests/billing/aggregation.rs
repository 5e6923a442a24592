//! `aggregate` against a plain reference: every event computes its window
//! from scratch and every bucket keeps its events, so no cursor, cached
//! bound or skipped accumulator in the real one can change an answer.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use saas_billing::{
    Aggregate, Aggregation, BillingCalendar, Cadence, Decimal, Meter, MeterKey, SubscriptionId,
    UsageEvent, Window, aggregate,
};
use saas_core::TenantId;

fn reference(meter: &Meter, events: &[UsageEvent], window: Window) -> Vec<Aggregate> {
    type Bucket<'a> = (DateTime<Utc>, Vec<&'a UsageEvent>);
    let mut buckets: BTreeMap<(DateTime<Utc>, BTreeMap<String, String>), Bucket<'_>> =
        BTreeMap::new();
    for event in events.iter().filter(|e| e.meter == *meter.key()) {
        let (start, end) = window.bounds(event.timestamp).unwrap();
        let group = meter
            .group_by_properties()
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    event.properties.get(p).cloned().unwrap_or_default(),
                )
            })
            .collect();
        buckets
            .entry((start, group))
            .or_insert_with(|| (end, Vec::new()))
            .1
            .push(event);
    }
    buckets
        .into_iter()
        .map(|((window_start, group), (window_end, events))| {
            let values = events.iter().map(|e| e.value);
            let value = match meter.aggregation() {
                Aggregation::Count => Decimal::from(events.len()),
                Aggregation::Sum => values.sum(),
                Aggregation::Min => values.min().unwrap(),
                Aggregation::Max => values.max().unwrap(),
                // The latest instant; of equal instants, the last given.
                Aggregation::Latest => {
                    let latest = events.iter().map(|e| e.timestamp).max().unwrap();
                    events
                        .iter()
                        .rev()
                        .find(|e| e.timestamp == latest)
                        .unwrap()
                        .value
                }
                Aggregation::UniqueCount { property } => Decimal::from(
                    events
                        .iter()
                        .filter_map(|e| e.properties.get(property))
                        .collect::<BTreeSet<_>>()
                        .len(),
                ),
                _ => unreachable!(),
            };
            Aggregate {
                window_start,
                window_end,
                group,
                value,
                events: u64::try_from(events.len()).unwrap(),
            }
        })
        .collect()
}

/// (meter index, value in hundredths, minutes after the start, user, region)
type Spec = (usize, u32, i64, Option<u8>, Option<u8>);

fn events(specs: &[Spec]) -> Vec<UsageEvent> {
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    let start = Utc.with_ymd_and_hms(2024, 3, 9, 0, 0, 0).unwrap();
    specs
        .iter()
        .enumerate()
        .map(|(i, &(meter, hundredths, minutes, user, region))| {
            let mut event = UsageEvent::new(
                tenant,
                sub,
                MeterKey::new(["calls", "gb"][meter]).unwrap(),
                Decimal::new(i64::from(hundredths), 2),
                start + TimeDelta::minutes(minutes),
                format!("k{i}"),
            );
            if let Some(u) = user {
                event = event.with_property("user", format!("u{u}"));
            }
            if let Some(r) = region {
                event = event.with_property("region", ["eu", "us", "ap"][usize::from(r)]);
            }
            event
        })
        .collect()
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0_usize..2,
        0_u32..500,
        // Three days around New York's spring-forward, in arbitrary order,
        // with runs of equal instants.
        prop_oneof![0_i64..4320, Just(1500_i64)],
        prop::option::of(0_u8..4),
        prop::option::of(0_u8..3),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn aggregate_matches_the_reference(specs in prop::collection::vec(spec(), 0..120)) {
        let events = events(&specs);
        let ny = chrono_tz::America::New_York;
        let calendar = BillingCalendar::new(
            Utc.with_ymd_and_hms(2024, 3, 10, 5, 0, 0).unwrap(),
            ny,
            Cadence::daily(),
        );
        let windows = [
            Window::Hour(ny),
            Window::Hour(chrono_tz::Asia::Kolkata),
            Window::Day(ny),
            Window::BillingPeriod(calendar),
        ];
        let aggregations = [
            Aggregation::Count,
            Aggregation::Sum,
            Aggregation::Min,
            Aggregation::Max,
            Aggregation::Latest,
            Aggregation::UniqueCount { property: "user".into() },
        ];
        let calls = MeterKey::new("calls").unwrap();
        for aggregation in aggregations {
            let plain = Meter::new(calls.clone(), aggregation.clone());
            // Group-by names out of order and repeated: a group is a map.
            let grouped = Meter::new(calls.clone(), aggregation)
                .group_by("user")
                .group_by("region")
                .group_by("user");
            for meter in [plain, grouped] {
                for window in windows {
                    prop_assert_eq!(
                        aggregate(&meter, &events, window).unwrap(),
                        reference(&meter, &events, window)
                    );
                }
            }
        }
    }
}
