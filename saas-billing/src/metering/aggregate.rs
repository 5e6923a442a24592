//! Aggregating usage events by window and group.

use std::collections::{BTreeMap, HashMap, HashSet};

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

/// How many recently used buckets are checked before the hash map.
const RECENT: usize = 4;

/// The accumulator a meter's aggregation needs: only that one is
/// updated per event (a count does no `Decimal` work at all).
#[derive(Clone, Copy)]
enum Need<'m> {
    Count,
    Sum,
    Min,
    Max,
    Latest,
    Unique(&'m str),
}

/// One window and group being aggregated. Group values borrow from the
/// events; they are copied into owned strings once, in the output.
struct Bucket<'a> {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    /// Values of the group-by properties, in property-name order.
    group: Vec<&'a str>,
    events: u64,
    /// The sum, min, max or latest value, as the aggregation needs.
    value: Option<Decimal>,
    latest_at: Option<DateTime<Utc>>,
    unique: HashSet<&'a str>,
}

impl<'a> Bucket<'a> {
    fn add(&mut self, need: Need<'_>, event: &'a UsageEvent) -> Result<(), BillingError> {
        self.events += 1;
        let v = event.value;
        match need {
            Need::Count => {}
            Need::Sum => {
                let sum = self.value.unwrap_or_default().checked_add(v);
                self.value = Some(sum.ok_or_else(|| BillingError::overflow("a usage sum"))?);
            }
            Need::Min => self.value = Some(self.value.map_or(v, |m| m.min(v))),
            Need::Max => self.value = Some(self.value.map_or(v, |m| m.max(v))),
            // Ties: the event recorded last wins.
            Need::Latest => {
                if self.latest_at.is_none_or(|at| event.timestamp >= at) {
                    self.latest_at = Some(event.timestamp);
                    self.value = Some(v);
                }
            }
            Need::Unique(property) => {
                if let Some(value) = event.properties.get(property) {
                    self.unique.insert(value.as_str());
                }
            }
        }
        Ok(())
    }

    fn result(&self, need: Need<'_>) -> Decimal {
        match need {
            Need::Count => Decimal::from(self.events),
            Need::Unique(_) => Decimal::from(self.unique.len()),
            Need::Sum | Need::Min | Need::Max | Need::Latest => self.value.unwrap_or_default(),
        }
    }
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
    let need = match meter.aggregation() {
        Aggregation::Count => Need::Count,
        Aggregation::Sum => Need::Sum,
        Aggregation::Min => Need::Min,
        Aggregation::Max => Need::Max,
        Aggregation::Latest => Need::Latest,
        Aggregation::UniqueCount { property } => Need::Unique(property),
    };
    // A group is a map from property name to value: sorted by name, each
    // name once, whatever order `group_by` was called in.
    let mut names: Vec<&str> = meter
        .group_by_properties()
        .iter()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names.dedup();

    let mut buckets: Vec<Bucket<'a>> = Vec::new();
    let mut index: HashMap<(DateTime<Utc>, Vec<&'a str>), usize> = HashMap::new();
    // The probe key is refilled per event, so a lookup allocates nothing.
    let mut probe: (DateTime<Utc>, Vec<&'a str>) = (DateTime::<Utc>::MIN_UTC, Vec::new());
    // The buckets of the last few events, most recent first: events
    // mostly arrive in time order, so runs of them share a window, and a
    // window holds few groups (regions, plans) that take turns.
    let mut recent: [usize; RECENT] = [0; RECENT];
    let mut recent_len = 0;
    for event in events {
        if event.meter != *meter.key() {
            continue;
        }
        probe.1.clear();
        probe.1.extend(
            names
                .iter()
                .map(|name| event.properties.get(*name).map_or("", String::as_str)),
        );
        let at = event.timestamp;
        let hit = recent[..recent_len].iter().position(|&i| {
            let b = &buckets[i];
            b.start <= at && at < b.end && b.group == probe.1
        });
        let slot = match hit {
            Some(position) => {
                let slot = recent[position];
                recent[..=position].rotate_right(1);
                slot
            }
            None => {
                // Computing bounds walks the calendar: reuse the last
                // event's window while it contains this one.
                let (start, end) = match recent[..recent_len].first() {
                    Some(&i) if buckets[i].start <= at && at < buckets[i].end => {
                        (buckets[i].start, buckets[i].end)
                    }
                    _ => window.bounds(at)?,
                };
                probe.0 = start;
                let slot = match index.get(&probe) {
                    Some(&i) => i,
                    None => {
                        buckets.push(Bucket {
                            start,
                            end,
                            group: probe.1.clone(),
                            events: 0,
                            value: None,
                            latest_at: None,
                            unique: HashSet::new(),
                        });
                        let i = buckets.len() - 1;
                        index.insert(probe.clone(), i);
                        i
                    }
                };
                recent_len = (recent_len + 1).min(RECENT);
                recent[..recent_len].rotate_right(1);
                recent[0] = slot;
                slot
            }
        };
        buckets[slot].add(need, event)?;
    }
    buckets.sort_unstable_by(|a, b| (a.start, &a.group).cmp(&(b.start, &b.group)));
    Ok(buckets
        .iter()
        .map(|bucket| Aggregate {
            window_start: bucket.start,
            window_end: bucket.end,
            group: names
                .iter()
                .zip(&bucket.group)
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            value: bucket.result(need),
            events: bucket.events,
        })
        .collect())
}
