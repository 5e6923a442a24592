//! The billing calendar: worked examples with literal dates.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Europe::Berlin;
use saas_billing::{BillingCalendar, BillingError, Cadence, Interval};

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

#[test]
fn monthly_from_jan_31_through_the_leap_year() {
    let cal = BillingCalendar::new(utc(2024, 1, 31, 0, 0), chrono_tz::UTC, Cadence::monthly());
    let expected_starts = [
        (2024, 1, 31),
        (2024, 2, 29),
        (2024, 3, 31),
        (2024, 4, 30),
        (2024, 5, 31),
        (2024, 6, 30),
        (2024, 7, 31),
        (2024, 8, 31),
        (2024, 9, 30),
        (2024, 10, 31),
        (2024, 11, 30),
        (2024, 12, 31),
        (2025, 1, 31),
        (2025, 2, 28),
        (2025, 3, 31),
        (2025, 4, 30),
    ];
    for (n, window) in expected_starts.windows(2).enumerate() {
        let period = cal.period(n as i64).unwrap();
        let (y, m, d) = window[0];
        let (ny, nm, nd) = window[1];
        assert_eq!(period.index(), n as i64);
        assert_eq!(period.start(), utc(y, m, d, 0, 0), "start of period {n}");
        assert_eq!(period.end(), utc(ny, nm, nd, 0, 0), "end of period {n}");
    }
    // Period 13 is computed from the anchor: Feb 28 2025, then back to the 31st.
    let feb_2025 = cal.period(13).unwrap();
    assert_eq!(
        (feb_2025.start(), feb_2025.end()),
        (utc(2025, 2, 28, 0, 0), utc(2025, 3, 31, 0, 0))
    );
    assert_eq!(feb_2025.duration(), TimeDelta::days(31));
}

#[test]
fn period_containing_uses_half_open_periods() {
    let cal = BillingCalendar::new(utc(2024, 1, 31, 0, 0), chrono_tz::UTC, Cadence::monthly());
    let p = cal.period_containing(utc(2024, 2, 29, 0, 0)).unwrap();
    assert_eq!(
        p.index(),
        1,
        "a boundary instant belongs to the period it starts"
    );
    let p = cal
        .period_containing(utc(2024, 2, 29, 0, 0) - TimeDelta::nanoseconds(1))
        .unwrap();
    assert_eq!(p.index(), 0);
    assert!(!p.contains(p.end()));
    assert!(p.contains(p.start()));
    // Before the anchor: negative indices, same rules.
    let p = cal.period_containing(utc(2023, 12, 31, 12, 0)).unwrap();
    assert_eq!(
        (p.index(), p.start(), p.end()),
        (-1, utc(2023, 12, 31, 0, 0), utc(2024, 1, 31, 0, 0))
    );
    let p = cal.period_containing(utc(2023, 12, 30, 23, 59)).unwrap();
    assert_eq!((p.index(), p.start()), (-2, utc(2023, 11, 30, 0, 0)));
}

#[test]
fn monthly_in_berlin_across_the_march_and_october_dst_changes() {
    // Local midnight of 1 March 2024 in Berlin (CET, UTC+1).
    let anchor = utc(2024, 2, 29, 23, 0);
    let cal = BillingCalendar::new(anchor, Berlin, Cadence::monthly());
    let march = cal.period(0).unwrap();
    assert_eq!(march.start(), anchor);
    // 1 April 00:00 CEST (UTC+2) is 31 March 22:00 UTC: one hour short.
    assert_eq!(march.end(), utc(2024, 3, 31, 22, 0));
    assert_eq!(march.duration(), TimeDelta::hours(31 * 24 - 1));
    let october = cal.period(7).unwrap();
    assert_eq!(october.start(), utc(2024, 9, 30, 22, 0));
    assert_eq!(october.end(), utc(2024, 10, 31, 23, 0));
    assert_eq!(october.duration(), TimeDelta::hours(31 * 24 + 1));
}

#[test]
fn daily_in_berlin_has_23_and_25_hour_days() {
    let cal = BillingCalendar::new(utc(2024, 3, 29, 23, 0), Berlin, Cadence::daily());
    let dst_day = cal.period(1).unwrap();
    assert_eq!(
        (dst_day.start(), dst_day.end()),
        (utc(2024, 3, 30, 23, 0), utc(2024, 3, 31, 22, 0))
    );
    assert_eq!(dst_day.duration(), TimeDelta::hours(23));
    let p = cal.period_containing(utc(2024, 10, 27, 12, 0)).unwrap();
    assert_eq!(
        (p.start(), p.end()),
        (utc(2024, 10, 26, 22, 0), utc(2024, 10, 27, 23, 0))
    );
    assert_eq!(p.duration(), TimeDelta::hours(25));
}

#[test]
fn nonexistent_local_times_move_forward_by_the_gap() {
    // Anchor 02:30 CET on 30 March; 02:30 on 31 March does not exist in
    // Berlin, so that period starts at 03:30 CEST = 01:30 UTC.
    let cal = BillingCalendar::new(utc(2024, 3, 30, 1, 30), Berlin, Cadence::daily());
    let p = cal.period(1).unwrap();
    assert_eq!(p.start(), utc(2024, 3, 31, 1, 30));
    assert_eq!(p.end(), utc(2024, 4, 1, 0, 30)); // 02:30 CEST
    assert_eq!(cal.period(0).unwrap().duration(), TimeDelta::hours(24));
    assert_eq!(p.duration(), TimeDelta::hours(23));
}

#[test]
fn ambiguous_local_times_take_the_earlier_instant() {
    // Anchor 02:30 CEST on 26 October; 02:30 on 27 October happens twice
    // (00:30 UTC in CEST, 01:30 UTC in CET): the earlier one is used.
    let cal = BillingCalendar::new(utc(2024, 10, 26, 0, 30), Berlin, Cadence::daily());
    let p = cal.period(1).unwrap();
    assert_eq!(p.start(), utc(2024, 10, 27, 0, 30));
    assert_eq!(p.end(), utc(2024, 10, 28, 1, 30));
    assert_eq!(p.duration(), TimeDelta::hours(25));

    // An anchor on the later of the two instants stays period 0's start.
    let later = utc(2024, 10, 27, 1, 30);
    let cal = BillingCalendar::new(later, Berlin, Cadence::daily());
    assert_eq!(cal.period(0).unwrap().start(), later);
    assert_eq!(cal.period(-1).unwrap().start(), utc(2024, 10, 26, 0, 30));
    assert_eq!(cal.period(0).unwrap().duration(), TimeDelta::hours(24));
}

#[test]
fn every_n_cadences() {
    let two_weeks = Cadence::every(2, Interval::Week).unwrap();
    let cal = BillingCalendar::new(utc(2024, 1, 1, 0, 0), chrono_tz::UTC, two_weeks);
    assert_eq!(cal.period(3).unwrap().start(), utc(2024, 2, 12, 0, 0));

    let quarterly = Cadence::every(3, Interval::Month).unwrap();
    let cal = BillingCalendar::new(utc(2023, 11, 30, 9, 15), chrono_tz::UTC, quarterly);
    assert_eq!(cal.period(1).unwrap().start(), utc(2024, 2, 29, 9, 15));
    assert_eq!(cal.period(2).unwrap().start(), utc(2024, 5, 30, 9, 15));

    let yearly = BillingCalendar::new(utc(2024, 2, 29, 0, 0), chrono_tz::UTC, Cadence::yearly());
    assert_eq!(yearly.period(1).unwrap().start(), utc(2025, 2, 28, 0, 0));
    assert_eq!(yearly.period(4).unwrap().start(), utc(2028, 2, 29, 0, 0));
    assert_eq!(yearly.period(-4).unwrap().start(), utc(2020, 2, 29, 0, 0));

    let every_10_days = Cadence::every(10, Interval::Day).unwrap();
    let cal = BillingCalendar::new(utc(2024, 2, 25, 0, 0), chrono_tz::UTC, every_10_days);
    assert_eq!(cal.period(1).unwrap().start(), utc(2024, 3, 6, 0, 0));

    assert!(matches!(
        Cadence::every(0, Interval::Month),
        Err(BillingError::InvalidInput { field: "count", .. })
    ));
}

#[test]
fn a_customer_zone_sets_local_midnight() {
    // Monthly at local midnight in New York (UTC−5 in winter, −4 in summer).
    let anchor = utc(2024, 1, 15, 5, 0);
    let cal = BillingCalendar::new(anchor, chrono_tz::America::New_York, Cadence::monthly());
    assert_eq!(cal.period(2).unwrap().start(), utc(2024, 3, 15, 4, 0));
}

#[test]
fn out_of_range_dates_are_errors() {
    let cal = BillingCalendar::new(utc(2024, 1, 31, 0, 0), chrono_tz::UTC, Cadence::monthly());
    for n in [i64::MAX, i64::MIN, 4_000_000, -4_000_000] {
        assert!(
            matches!(cal.period(n), Err(BillingError::DateOutOfRange { .. })),
            "{n}"
        );
    }
    let cal = BillingCalendar::new(DateTime::<Utc>::MAX_UTC, Berlin, Cadence::monthly());
    assert!(cal.period_containing(DateTime::<Utc>::MAX_UTC).is_err());
}

#[test]
fn calendars_serialize_with_their_zone() {
    let cal = BillingCalendar::new(
        utc(2024, 1, 31, 0, 0),
        Berlin,
        Cadence::every(3, Interval::Month).unwrap(),
    );
    let json = serde_json::to_string(&cal).unwrap();
    assert_eq!(
        json,
        r#"{"anchor":"2024-01-31T00:00:00Z","time_zone":"Europe/Berlin","cadence":{"interval":"month","count":3}}"#
    );
    let back: BillingCalendar = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cal);
}

#[test]
fn a_skipped_day_is_an_empty_period_never_returned_as_containing() {
    // Samoa skipped 30 December 2011, jumping from UTC−10 to UTC+14.
    let apia = chrono_tz::Pacific::Apia;
    let local = chrono::NaiveDate::from_ymd_opt(2011, 12, 28)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let anchor = apia
        .from_local_datetime(&local)
        .single()
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(anchor, utc(2011, 12, 28, 10, 0));
    let cal = BillingCalendar::new(anchor, apia, Cadence::daily());
    let dec_29 = cal.period(1).unwrap();
    let dec_30 = cal.period(2).unwrap();
    let dec_31 = cal.period(3).unwrap();
    assert_eq!(dec_29.start(), utc(2011, 12, 29, 10, 0));
    assert_eq!(dec_30.start(), dec_30.end(), "the skipped day is empty");
    assert_eq!(dec_30.start(), utc(2011, 12, 30, 10, 0));
    assert_eq!(dec_31.start(), dec_30.end());
    assert_eq!(dec_31.duration(), TimeDelta::hours(24));
    assert_eq!(cal.period_containing(dec_30.start()).unwrap(), dec_31);
    assert_eq!(
        cal.period_containing(dec_30.start() - TimeDelta::seconds(1))
            .unwrap(),
        dec_29
    );
}
