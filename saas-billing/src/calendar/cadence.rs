//! How often periods repeat.

use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use crate::error::BillingError;

/// The unit a [`Cadence`] counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Interval {
    /// A calendar day in the customer's zone (23, 24 or 25 hours).
    Day,
    /// Seven calendar days.
    Week,
    /// A calendar month, clamped to the month's last day when the anchor
    /// day does not exist in it.
    Month,
    /// Twelve calendar months (a Feb 29 anchor falls on Feb 28 in other
    /// years).
    Year,
}

/// How often a subscription bills: every `count` [`Interval`]s.
///
/// ```
/// use saas_billing::{Cadence, Interval};
///
/// let quarterly = Cadence::every(3, Interval::Month)?;
/// assert_eq!(quarterly.count(), 3);
/// assert!(Cadence::every(0, Interval::Day).is_err());
/// # Ok::<(), saas_billing::BillingError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cadence {
    interval: Interval,
    count: NonZeroU32,
}

impl Cadence {
    /// Every `count` intervals.
    ///
    /// # Errors
    /// [`BillingError::InvalidInput`] when `count` is zero.
    pub fn every(count: u32, interval: Interval) -> Result<Cadence, BillingError> {
        let count = NonZeroU32::new(count).ok_or_else(|| {
            BillingError::invalid("count", "a cadence needs at least one interval")
        })?;
        Ok(Cadence { interval, count })
    }

    /// Every day.
    pub fn daily() -> Cadence {
        Cadence::once(Interval::Day)
    }

    /// Every week.
    pub fn weekly() -> Cadence {
        Cadence::once(Interval::Week)
    }

    /// Every month.
    pub fn monthly() -> Cadence {
        Cadence::once(Interval::Month)
    }

    /// Every year.
    pub fn yearly() -> Cadence {
        Cadence::once(Interval::Year)
    }

    fn once(interval: Interval) -> Cadence {
        Cadence {
            interval,
            count: NonZeroU32::MIN,
        }
    }

    /// The unit.
    pub fn interval(&self) -> Interval {
        self.interval
    }

    /// How many units one period lasts.
    pub fn count(&self) -> u32 {
        self.count.get()
    }

    /// The period length in days (day, week) or months (month, year).
    pub(super) fn step(&self) -> i64 {
        let per_unit = match self.interval {
            Interval::Day | Interval::Month => 1,
            Interval::Week => 7,
            Interval::Year => 12,
        };
        i64::from(self.count.get()) * per_unit
    }

    pub(super) fn counts_months(&self) -> bool {
        matches!(self.interval, Interval::Month | Interval::Year)
    }
}
