//! Billing periods derived from a stored anchor.
//!
//! Period `n` is always computed from the anchor, never from period `n − 1`,
//! so month-end clamping cannot drift (Jan 31 → Feb 29 → **Mar 31**, not
//! Mar 29) and any period can be computed on its own, in constant time.

use std::fmt;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::BillingError;

mod cadence;

pub use cadence::{Cadence, Interval};

/// One billing period: the half-open interval `[start, end)` of instants.
///
/// `index` is the period's number counted from the anchor: period 0 starts
/// at the anchor, negative indices lie before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Period {
    index: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl Period {
    /// The period's number counted from the anchor.
    pub fn index(&self) -> i64 {
        self.index
    }

    /// The first instant of the period (inclusive).
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// The first instant after the period (exclusive); the next period's
    /// start.
    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    /// The period with its start moved to `start` when it lies inside
    /// it (a stub period starting after the calendar's boundary).
    pub(crate) fn starting_no_earlier_than(self, start: DateTime<Utc>) -> Period {
        if self.start < start && start < self.end {
            Period { start, ..self }
        } else {
            self
        }
    }

    /// Whether `instant` lies in `[start, end)`.
    pub fn contains(&self, instant: DateTime<Utc>) -> bool {
        self.start <= instant && instant < self.end
    }

    /// The elapsed time from start to end: 23 or 25 hours for a day
    /// crossing a daylight-saving change.
    pub fn duration(&self) -> TimeDelta {
        self.end - self.start
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} [{}, {})",
            self.index,
            self.start.to_rfc3339(),
            self.end.to_rfc3339()
        )
    }
}

/// Billing periods of one subscription: an anchor instant, the customer's
/// IANA time zone and a [`Cadence`].
///
/// Period `n` is `[anchor + n·cadence, anchor + (n+1)·cadence)`, computed
/// in the customer's zone from the anchor's **local** date and time of day:
/// periods start at the anchor's wall-clock time (local midnight for an
/// anchor at local midnight), so a period crossing a daylight-saving change
/// is an hour shorter or longer. Monthly and yearly boundaries keep the
/// anchor's day of month, or the month's last day when the month is
/// shorter (Jan 31 → Feb 29 in 2024, Feb 28 in 2025 → Mar 31 → Apr 30).
///
/// Wall-clock times the zone skips or repeats are resolved like RFC 5545
/// and `java.time`:
/// - a **nonexistent** local time (in a spring-forward gap) moves forward by
///   the gap's length: 02:30 on a day clocks jump from 02:00 to 03:00 is
///   03:30. Where a zone skipped a whole day (Pacific/Apia on 2011-12-30)
///   the daily period for that day is empty (`start == end`);
///   [`period_containing`](Self::period_containing) never returns it;
/// - an **ambiguous** local time (in a fall-back overlap) is the earlier
///   of its two instants, except that period 0 always starts exactly at
///   the anchor.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use saas_billing::{BillingCalendar, Cadence};
///
/// let anchor = Utc.with_ymd_and_hms(2024, 1, 31, 0, 0, 0).unwrap();
/// let calendar = BillingCalendar::new(anchor, chrono_tz::UTC, Cadence::monthly());
/// let feb = calendar.period(1)?;
/// assert_eq!(feb.start(), Utc.with_ymd_and_hms(2024, 2, 29, 0, 0, 0).unwrap());
/// assert_eq!(feb.end(), Utc.with_ymd_and_hms(2024, 3, 31, 0, 0, 0).unwrap());
///
/// let today = Utc.with_ymd_and_hms(2024, 3, 5, 12, 0, 0).unwrap();
/// assert_eq!(calendar.period_containing(today)?, feb);
/// # Ok::<(), saas_billing::BillingError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingCalendar {
    anchor: DateTime<Utc>,
    time_zone: Tz,
    cadence: Cadence,
}

impl BillingCalendar {
    /// A calendar whose period 0 starts at `anchor`. Store the anchor with
    /// the subscription and rebuild the calendar from it: every period is
    /// derived from these three values alone.
    pub fn new(anchor: DateTime<Utc>, time_zone: Tz, cadence: Cadence) -> BillingCalendar {
        BillingCalendar {
            anchor,
            time_zone,
            cadence,
        }
    }

    /// The instant period 0 starts.
    pub fn anchor(&self) -> DateTime<Utc> {
        self.anchor
    }

    /// The customer's time zone.
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// How often periods repeat.
    pub fn cadence(&self) -> Cadence {
        self.cadence
    }

    /// Period number `n` (negative numbers lie before the anchor).
    ///
    /// # Errors
    /// [`BillingError::DateOutOfRange`] when a boundary falls outside the
    /// dates chrono can represent (about ±262,000 years).
    pub fn period(&self, n: i64) -> Result<Period, BillingError> {
        let next = n.checked_add(1).ok_or(OUT_OF_RANGE)?;
        Ok(Period {
            index: n,
            start: self.boundary(n)?,
            end: self.boundary(next)?,
        })
    }

    /// The period that contains `instant`: the one with
    /// `start <= instant < end`. Instants before the anchor get periods
    /// with negative indices.
    ///
    /// # Errors
    /// [`BillingError::DateOutOfRange`] as for [`period`](Self::period).
    pub fn period_containing(&self, instant: DateTime<Utc>) -> Result<Period, BillingError> {
        let anchor = self.anchor_local()?;
        let local = to_local(self.time_zone, instant)?;
        let elapsed = if self.cadence.counts_months() {
            month_number(local.date()) - month_number(anchor.date())
        } else {
            (local.date() - anchor.date()).num_days()
        };
        // An estimate within a period or two of the answer (time of day and
        // clamping are ignored); the walk below makes it exact. Boundaries
        // never decrease, so the walk cannot oscillate.
        let mut n = elapsed.div_euclid(self.cadence.step());
        loop {
            let period = self.period(n)?;
            if instant < period.start {
                n = n.checked_sub(1).ok_or(OUT_OF_RANGE)?;
            } else if instant >= period.end {
                n = n.checked_add(1).ok_or(OUT_OF_RANGE)?;
            } else {
                return Ok(period);
            }
        }
    }

    /// The instant period `n` starts.
    fn boundary(&self, n: i64) -> Result<DateTime<Utc>, BillingError> {
        if n == 0 {
            return Ok(self.anchor);
        }
        let anchor = self.anchor_local()?;
        let units = n.checked_mul(self.cadence.step()).ok_or(OUT_OF_RANGE)?;
        let date = if self.cadence.counts_months() {
            add_months_clamped(anchor.date(), units)?
        } else {
            TimeDelta::try_days(units)
                .and_then(|days| anchor.date().checked_add_signed(days))
                .ok_or(OUT_OF_RANGE)?
        };
        resolve_local(self.time_zone, date.and_time(anchor.time()))
    }

    fn anchor_local(&self) -> Result<NaiveDateTime, BillingError> {
        to_local(self.time_zone, self.anchor)
    }
}

const OUT_OF_RANGE: BillingError = BillingError::DateOutOfRange {
    what: "a billing period boundary",
};

/// Months since year 0, for counting calendar months between dates.
fn month_number(date: NaiveDate) -> i64 {
    i64::from(date.year()) * 12 + i64::from(date.month0())
}

/// `date` plus `months` calendar months, the day clamped to the target
/// month's length.
fn add_months_clamped(date: NaiveDate, months: i64) -> Result<NaiveDate, BillingError> {
    let target = month_number(date).checked_add(months).ok_or(OUT_OF_RANGE)?;
    let year = i32::try_from(target.div_euclid(12)).map_err(|_| OUT_OF_RANGE)?;
    // rem_euclid(12) is in 0..12, so the cast cannot truncate.
    let month = u32::try_from(target.rem_euclid(12) + 1).map_err(|_| OUT_OF_RANGE)?;
    let day = date.day().min(days_in_month(year, month)?);
    NaiveDate::from_ymd_opt(year, month, day).ok_or(OUT_OF_RANGE)
}

fn days_in_month(year: i32, month: u32) -> Result<u32, BillingError> {
    (28..=31)
        .rev()
        .find(|&day| NaiveDate::from_ymd_opt(year, month, day).is_some())
        .ok_or(OUT_OF_RANGE)
}

/// The wall-clock time in `tz` at `instant`, without chrono's panicking
/// conversion at the edges of its range.
pub(crate) fn to_local(tz: Tz, instant: DateTime<Utc>) -> Result<NaiveDateTime, BillingError> {
    let utc = instant.naive_utc();
    let offset = tz.offset_from_utc_datetime(&utc).fix();
    TimeDelta::try_seconds(i64::from(offset.local_minus_utc()))
        .and_then(|delta| utc.checked_add_signed(delta))
        .ok_or(OUT_OF_RANGE)
}

/// The instant of a wall-clock time in `tz`, by the rules on
/// [`BillingCalendar`]: gaps shift forward by their length, overlaps take
/// the earlier instant.
pub(crate) fn resolve_local(tz: Tz, local: NaiveDateTime) -> Result<DateTime<Utc>, BillingError> {
    let offset_seconds = match tz.offset_from_local_datetime(&local) {
        LocalResult::Single(offset) => offset.fix().local_minus_utc(),
        // The earlier instant is the one with the larger UTC offset.
        LocalResult::Ambiguous(a, b) => a.fix().local_minus_utc().max(b.fix().local_minus_utc()),
        LocalResult::None => {
            // In a gap: read the time with the offset in force before the
            // transition. UTC offsets stay within ±14 h, so one day before
            // the wall-clock time (read as UTC) precedes the transition.
            let before = local
                .checked_sub_signed(TimeDelta::days(1))
                .ok_or(OUT_OF_RANGE)?;
            tz.offset_from_utc_datetime(&before).fix().local_minus_utc()
        }
    };
    TimeDelta::try_seconds(i64::from(offset_seconds))
        .and_then(|delta| local.checked_sub_signed(delta))
        .map(|utc| utc.and_utc())
        .ok_or(OUT_OF_RANGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn month_clamping_from_the_anchor() {
        let jan31 = date(2023, 1, 31);
        assert_eq!(add_months_clamped(jan31, 1).unwrap(), date(2023, 2, 28));
        assert_eq!(add_months_clamped(jan31, 13).unwrap(), date(2024, 2, 29));
        assert_eq!(add_months_clamped(jan31, 2).unwrap(), date(2023, 3, 31));
        assert_eq!(add_months_clamped(jan31, -2).unwrap(), date(2022, 11, 30));
        assert_eq!(
            add_months_clamped(date(2024, 2, 29), 12).unwrap(),
            date(2025, 2, 28)
        );
        assert_eq!(
            add_months_clamped(date(2024, 2, 29), 48).unwrap(),
            date(2028, 2, 29)
        );
        assert!(add_months_clamped(jan31, i64::MAX).is_err());
    }

    #[test]
    fn days_in_month_knows_leap_years() {
        assert_eq!(days_in_month(2024, 2).unwrap(), 29);
        assert_eq!(days_in_month(1900, 2).unwrap(), 28);
        assert_eq!(days_in_month(2000, 2).unwrap(), 29);
        assert_eq!(days_in_month(2023, 4).unwrap(), 30);
        assert_eq!(days_in_month(2023, 12).unwrap(), 31);
    }

    #[test]
    fn gaps_move_forward_and_overlaps_take_the_earlier_instant() {
        let berlin = chrono_tz::Europe::Berlin;
        let gap = date(2024, 3, 31).and_hms_opt(2, 30, 0).unwrap();
        // 02:30 does not exist; read with CET (+1) it is 01:30 UTC = 03:30 CEST.
        assert_eq!(
            resolve_local(berlin, gap).unwrap(),
            Utc.with_ymd_and_hms(2024, 3, 31, 1, 30, 0).unwrap()
        );
        let overlap = date(2024, 10, 27).and_hms_opt(2, 30, 0).unwrap();
        // 02:30 happens twice: 00:30 UTC (CEST) and 01:30 UTC (CET).
        assert_eq!(
            resolve_local(berlin, overlap).unwrap(),
            Utc.with_ymd_and_hms(2024, 10, 27, 0, 30, 0).unwrap()
        );
    }

    #[test]
    fn extremes_are_errors_not_panics() {
        let cal = BillingCalendar::new(
            DateTime::<Utc>::MAX_UTC,
            chrono_tz::Asia::Tokyo,
            Cadence::daily(),
        );
        assert!(cal.period(1).is_err());
        assert!(cal.period_containing(DateTime::<Utc>::MAX_UTC).is_err());
        let cal = BillingCalendar::new(
            DateTime::<Utc>::MIN_UTC,
            chrono_tz::America::Havana,
            Cadence::yearly(),
        );
        assert!(cal.period(-1).is_err());
        assert!(cal.period(i64::MAX).is_err());
        assert!(cal.period(i64::MIN).is_err());
    }
}
