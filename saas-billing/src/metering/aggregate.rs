//! Aggregating usage events by window and group.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Serialize;

use super::{Aggregation, Meter, UsageEvent};
use crate::calendar::{BillingCalendar, resolve_local, to_local};
use crate::error::BillingError;

/// The time buckets usage is aggregated in, computed in the customer's
/// time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Window {
    /// Local clock hours: `[10:00, 11:00)` local time. Where the zone's
    /// offset is not whole hours (Asia/Kolkata), hours start at local `:00`
    /// all the same.
    Hour(Tz),
    /// Local calendar days, midnight to midnight (23 or 25 hours across a
    /// daylight-saving change).
    Day(Tz),
    /// The periods of a billing calendar.
    BillingPeriod(BillingCalendar),
}

impl Window {
    /// The window `[start, end)` containing `instant`.
    ///
    /// # Errors
    /// [`BillingError::DateOutOfRange`] at the edges of chrono's range.
    pub fn bounds(
        &self,
        instant: DateTime<Utc>,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>), BillingError> {
        const RANGE: BillingError = BillingError::DateOutOfRange {
            what: "a usage window",
        };
        match self {
            Window::Hour(tz) => {
                let local = to_local(*tz, instant)?;
                let into_hour = TimeDelta::seconds(i64::from(local.minute() * 60 + local.second()))
                    + TimeDelta::nanoseconds(i64::from(local.nanosecond()));
                let start = instant.checked_sub_signed(into_hour).ok_or(RANGE)?;
                let end = start.checked_add_signed(TimeDelta::hours(1)).ok_or(RANGE)?;
                Ok((start, end))
            }
            Window::Day(tz) => {
                let date = to_local(*tz, instant)?.date();
                let next = date.succ_opt().ok_or(RANGE)?;
                let start = resolve_local(*tz, date.and_time(chrono::NaiveTime::MIN))?;
                let end = resolve_local(*tz, next.and_time(chrono::NaiveTime::MIN))?;
                Ok((start, end))
            }
            Window::BillingPeriod(calendar) => {
                let period = calendar.period_containing(instant)?;
                Ok((period.start(), period.end()))
            }
        }
    }
}

/// The aggregated usage of one meter in one window and group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Aggregate {
    /// The window's first instant.
    pub window_start: DateTime<Utc>,
    /// The window's end (exclusive).
    pub window_end: DateTime<Utc>,
    /// The group-by values (a missing property is the empty string); empty
    /// for a meter without group-by.
    pub group: BTreeMap<String, String>,
    /// The aggregated quantity.
    pub value: Decimal,
    /// How many events were aggregated.
    pub events: u64,
}

/// Group-by property values.
type Group = BTreeMap<String, String>;

#[derive(Default)]
struct Acc {
    events: u64,
    sum: Decimal,
    min: Option<Decimal>,
    max: Option<Decimal>,
    latest: Option<(DateTime<Utc>, Decimal)>,
    unique: BTreeSet<String>,
}

/// Aggregates `events` of `meter` (events of other meters are skipped)
/// into one [`Aggregate`] per window and group, ordered by window start
/// then group.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use saas_billing::{aggregate, dec, Aggregation, Meter, MeterKey, SubscriptionId, UsageEvent, Window};
/// use saas_core::TenantId;
///
/// let meter = Meter::new(MeterKey::new("gb")?, Aggregation::Max);
/// let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
/// let at = |h| Utc.with_ymd_and_hms(2024, 3, 1, h, 0, 0).unwrap();
/// let events = [
///     UsageEvent::new(tenant, sub, meter.key().clone(), dec!(2.5), at(9), "a"),
///     UsageEvent::new(tenant, sub, meter.key().clone(), dec!(4), at(13), "b"),
/// ];
/// let days = aggregate(&meter, &events, Window::Day(chrono_tz::UTC))?;
/// assert_eq!(days.len(), 1);
/// assert_eq!(days[0].value, dec!(4));
/// # Ok::<(), saas_billing::BillingError>(())
/// ```
///
/// # Errors
/// `Overflow` if a sum exceeds a [`Decimal`]; `DateOutOfRange` as
/// [`Window::bounds`].
pub fn aggregate<'a>(
    meter: &Meter,
    events: impl IntoIterator<Item = &'a UsageEvent>,
    window: Window,
) -> Result<Vec<Aggregate>, BillingError> {
    let mut buckets: BTreeMap<(DateTime<Utc>, Group), (DateTime<Utc>, Acc)> = BTreeMap::new();
    // Events mostly arrive in time order: reuse the last window's bounds
    // while they contain the event (computing bounds walks the calendar).
    let mut last: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for event in events {
        if event.meter != *meter.key() {
            continue;
        }
        let (start, end) = match last {
            Some((start, end)) if start <= event.timestamp && event.timestamp < end => (start, end),
            _ => {
                let bounds = window.bounds(event.timestamp)?;
                last = Some(bounds);
                bounds
            }
        };
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
        let (_, acc) = buckets
            .entry((start, group))
            .or_insert_with(|| (end, Acc::default()));
        acc.events += 1;
        acc.sum = acc
            .sum
            .checked_add(event.value)
            .ok_or_else(|| BillingError::overflow("a usage sum"))?;
        acc.min = Some(acc.min.map_or(event.value, |m| m.min(event.value)));
        acc.max = Some(acc.max.map_or(event.value, |m| m.max(event.value)));
        if acc.latest.is_none_or(|(at, _)| event.timestamp >= at) {
            acc.latest = Some((event.timestamp, event.value));
        }
        if let Aggregation::UniqueCount { property } = meter.aggregation()
            && let Some(value) = event.properties.get(property)
            && !acc.unique.contains(value)
        {
            acc.unique.insert(value.clone());
        }
    }
    Ok(buckets
        .into_iter()
        .map(|((window_start, group), (window_end, acc))| Aggregate {
            window_start,
            window_end,
            value: match meter.aggregation() {
                Aggregation::Count => Decimal::from(acc.events),
                Aggregation::Sum => acc.sum,
                Aggregation::Min => acc.min.unwrap_or_default(),
                Aggregation::Max => acc.max.unwrap_or_default(),
                Aggregation::Latest => acc.latest.map(|(_, v)| v).unwrap_or_default(),
                Aggregation::UniqueCount { .. } => Decimal::from(acc.unique.len()),
            },
            group,
            events: acc.events,
        })
        .collect())
}
