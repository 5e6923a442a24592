//! Property tests: calendar tiling over centuries, allocation, rounding and
//! graduated pricing.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use saas_billing::{
    BillingCalendar, Cadence, Charge, Currency, Decimal, Interval, Money, RoundingMode, TierTable,
    dec,
};

/// Zones with DST at various hours, half-hour offsets and a half-hour DST.
const ZONES: [Tz; 8] = [
    chrono_tz::UTC,
    chrono_tz::Europe::Berlin,
    chrono_tz::America::New_York,
    chrono_tz::America::Sao_Paulo,
    chrono_tz::Asia::Kolkata,
    chrono_tz::Australia::Lord_Howe,
    chrono_tz::America::St_Johns,
    chrono_tz::Pacific::Chatham,
];

/// Seconds from 1800-01-01 to 2200-01-01 (UTC).
const FROM_1800: i64 = -5_364_662_400;
const TO_2200: i64 = 7_258_118_400;

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (FROM_1800..TO_2200).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap())
}

fn zone() -> impl Strategy<Value = Tz> {
    prop::sample::select(ZONES.to_vec())
}

fn cadence() -> impl Strategy<Value = Cadence> {
    let interval = prop::sample::select(vec![
        Interval::Day,
        Interval::Week,
        Interval::Month,
        Interval::Year,
    ]);
    (interval, 1_u32..=13).prop_map(|(interval, count)| Cadence::every(count, interval).unwrap())
}

/// How many periods of `cadence` cover 400 years.
fn periods_in_400_years(cadence: Cadence) -> i64 {
    let per_400 = match cadence.interval() {
        Interval::Day => 146_097,
        Interval::Week => 146_097 / 7,
        Interval::Month => 4800,
        Interval::Year => 400,
        _ => unreachable!(),
    };
    per_400 / i64::from(cadence.count()) + 1
}

fn days_in_month(date: NaiveDate) -> u32 {
    let next = date
        .with_day(1)
        .unwrap()
        .checked_add_months(chrono::Months::new(1))
        .unwrap();
    next.pred_opt().unwrap().day()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any two consecutive periods anywhere in 400 years tile: no gap, no
    /// overlap, and no period runs backwards.
    #[test]
    fn consecutive_periods_tile(anchor in instant(), tz in zone(), cadence in cadence(), pick in 0_i64..=1_000_000) {
        let cal = BillingCalendar::new(anchor, tz, cadence);
        let span = periods_in_400_years(cadence);
        // Spread n over [-span/2, span/2] so periods before the anchor are covered.
        let n = pick * span / 1_000_000 - span / 2;
        let this = cal.period(n).unwrap();
        let next = cal.period(n + 1).unwrap();
        prop_assert_eq!(this.end(), next.start());
        prop_assert!(this.start() < this.end(), "{} is empty", this);
        prop_assert_eq!(this.index(), n);
        prop_assert_eq!(cal.period(0).unwrap().start(), anchor);
    }

    /// Whatever instant is asked for, the period returned contains it and
    /// is the one `period(index)` computes.
    #[test]
    fn period_containing_contains(anchor in instant(), tz in zone(), cadence in cadence(), t in instant()) {
        let cal = BillingCalendar::new(anchor, tz, cadence);
        let p = cal.period_containing(t).unwrap();
        prop_assert!(p.contains(t), "{} does not contain {}", p, t);
        prop_assert_eq!(cal.period(p.index()).unwrap(), p);
    }
}

/// Walks 400 years of monthly periods one by one: they tile, and every
/// boundary falls at the anchor's local time on the anchor's day of month
/// (or the last day of a month too short for it) — or, where that local
/// time does not exist (a spring-forward gap), shortly after it, which can
/// be the next day (St John's skipped 23:00–24:00 on 1 May 1921).
fn monthly_walk((y, m, d): (i32, u32, u32), hour: u32, tz: Tz) -> Result<(), TestCaseError> {
    let first_month = NaiveDate::from_ymd_opt(y, m, 1).unwrap();
    let d = d.min(days_in_month(first_month));
    let local = NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(hour, 0, 0)
        .unwrap();
    let anchor = tz.from_local_datetime(&local).earliest();
    prop_assume!(anchor.is_some()); // the anchor itself must exist locally
    let anchor = anchor.unwrap().with_timezone(&Utc);
    let cal = BillingCalendar::new(anchor, tz, Cadence::monthly());
    let mut previous = cal.period(0).unwrap();
    for n in 1..=4800_u32 {
        let period = cal.period(i64::from(n)).unwrap();
        prop_assert_eq!(previous.end(), period.start());
        prop_assert!(period.start() < period.end());
        let month = first_month
            .checked_add_months(chrono::Months::new(n))
            .unwrap();
        let nominal = month
            .with_day(d.min(days_in_month(month)))
            .unwrap()
            .and_hms_opt(hour, 0, 0)
            .unwrap();
        let start = period.start().with_timezone(&tz).naive_local();
        match tz.from_local_datetime(&nominal).earliest() {
            Some(exists) => prop_assert_eq!(
                period.start(),
                exists.with_timezone(&Utc),
                "period {} of {} starts {}, not {}",
                n,
                anchor,
                start,
                nominal
            ),
            None => prop_assert!(
                start > nominal && start - nominal <= chrono::TimeDelta::hours(3),
                "period {} of {} starts {}, not just after the gap at {}",
                n,
                anchor,
                start,
                nominal
            ),
        }
        previous = period;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn monthly_walk_over_400_years(
        anchor_date in (1800_i32..2200, 1_u32..=12, 1_u32..=31),
        hour in 0_u32..24,
        tz in zone(),
    ) {
        monthly_walk(anchor_date, hour, tz)?;
    }
}

/// The case proptest found in CI: a boundary in a gap that crosses midnight.
#[test]
fn monthly_walk_through_a_gap_at_midnight() {
    monthly_walk((1800, 1, 1), 23, chrono_tz::America::St_Johns).unwrap();
}

proptest! {
    /// Parts always sum to the total, each is within one minor unit of its
    /// exact share, and negative totals mirror positive ones.
    #[test]
    fn allocation_sums_exactly(minor in -10_i64.pow(15)..10_i64.pow(15), weights in prop::collection::vec(0_u32..10_000, 1..12)) {
        prop_assume!(weights.iter().any(|w| *w > 0));
        for currency in [Currency::USD, Currency::JPY, Currency::KWD] {
            let total = Money::from_minor(i128::from(minor), currency).unwrap();
            let w: Vec<Decimal> = weights.iter().map(|w| Decimal::from(*w)).collect();
            let parts = total.allocate(&w).unwrap();
            prop_assert_eq!(Money::checked_sum(currency, parts.clone()).unwrap(), total);
            let weight_sum: i128 = weights.iter().map(|w| i128::from(*w)).sum();
            for (part, weight) in parts.iter().zip(&weights) {
                prop_assert!(part.is_rounded());
                // |part − total × w / W| < 1 minor unit, in integers.
                let error = part.to_minor().unwrap() * weight_sum - i128::from(minor) * i128::from(*weight);
                prop_assert!(error.abs() < weight_sum);
            }
            let mirrored = total.negate().allocate(&w).unwrap();
            prop_assert!(mirrored.iter().zip(&parts).all(|(a, b)| *a == b.negate()));
        }
    }

    /// Rounding lands on the minor unit, moves less than one unit, and each
    /// mode goes the way it says.
    #[test]
    fn rounding_modes(mantissa in any::<i64>(), scale in 0_u32..12) {
        let exact = Decimal::new(mantissa, scale);
        let money = Money::new(exact, Currency::USD);
        let unit = dec!(0.01);
        for mode in [RoundingMode::HalfUp, RoundingMode::HalfEven, RoundingMode::Up, RoundingMode::Down] {
            let rounded = money.round(mode).amount();
            prop_assert!(Money::new(rounded, Currency::USD).is_rounded());
            prop_assert!((rounded - exact).abs() < unit);
            match mode {
                RoundingMode::Up => prop_assert!(rounded.abs() >= exact.abs()),
                RoundingMode::Down => prop_assert!(rounded.abs() <= exact.abs()),
                _ => prop_assert!((rounded - exact).abs() * dec!(2) <= unit),
            }
        }
    }

    /// Graduated pricing never decreases as quantity grows, and never
    /// exceeds pricing every unit at the first tier's (highest) price.
    #[test]
    fn graduated_is_monotonic(a in 0_u64..1_000_000, b in 0_u64..1_000_000) {
        let tiers = TierTable::builder()
            .up_to(dec!(100), dec!(0.10))
            .up_to(dec!(1000), dec!(0.08))
            .unbounded(dec!(0.05))
            .build()
            .unwrap();
        let charge = Charge::graduated(Currency::USD, tiers);
        let (low, high) = (a.min(b), a.max(b));
        let rate = |q: u64| charge.compute(Decimal::from(q), RoundingMode::HalfEven).unwrap().subtotal().amount();
        prop_assert!(rate(low) <= rate(high));
        prop_assert!(rate(high) <= Decimal::from(high) * dec!(0.10));
    }
}
