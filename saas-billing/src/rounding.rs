//! How an exact amount becomes a payable one.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// How to round an exact amount to its currency's minor unit.
///
/// Billing rounds **once per line**: quantities, unit prices and tiers are
/// multiplied and added exactly, and only the line's final amount is
/// rounded, with a mode the caller names. Direction words follow
/// `java.math.RoundingMode`: *up* and *down* are measured from zero, so
/// negative amounts (credits) round symmetrically to positive ones.
///
/// | exact    | `HalfUp` | `HalfEven` | `Up`   | `Down` |
/// |----------|----------|------------|--------|--------|
/// | 2.345    | 2.35     | 2.34       | 2.35   | 2.34   |
/// | 2.355    | 2.36     | 2.36       | 2.36   | 2.35   |
/// | 2.341    | 2.34     | 2.34       | 2.35   | 2.34   |
/// | −2.345   | −2.35    | −2.34      | −2.35  | −2.34  |
///
/// ```
/// use saas_billing::{Currency, Money, RoundingMode};
/// use saas_billing::dec;
///
/// let exact = Money::new(dec!(2.345), Currency::USD);
/// assert_eq!(exact.round(RoundingMode::HalfUp).amount(), dec!(2.35));
/// assert_eq!(exact.round(RoundingMode::HalfEven).amount(), dec!(2.34));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RoundingMode {
    /// To the nearest minor unit; a tie goes away from zero (commercial
    /// rounding: 2.345 → 2.35, −2.345 → −2.35).
    HalfUp,
    /// To the nearest minor unit; a tie goes to the even neighbour
    /// (banker's rounding: 2.345 → 2.34, 2.355 → 2.36). Unbiased over many
    /// lines.
    HalfEven,
    /// Away from zero whenever anything is left over (2.341 → 2.35).
    Up,
    /// Toward zero, dropping what is left over (2.349 → 2.34).
    Down,
}

impl RoundingMode {
    /// Rounds `value` to `decimal_places` with this mode.
    ///
    /// The result carries exactly `decimal_places` digits after the point
    /// (`10` → `10.00`) whenever that fits in a [`Decimal`], so amounts
    /// print the way invoices show them. Never fails: rounding to fewer
    /// digits cannot overflow.
    pub fn round(self, value: Decimal, decimal_places: u32) -> Decimal {
        let rounded = value.round_dp_with_strategy(decimal_places, self.strategy());
        if rounded.scale() >= decimal_places {
            return rounded;
        }
        // Pad with zeros only when the mantissa has room; padding never
        // changes the value, so skipping it is always correct.
        10_i128
            .checked_pow(decimal_places - rounded.scale())
            .and_then(|factor| rounded.mantissa().checked_mul(factor))
            .and_then(|m| Decimal::try_from_i128_with_scale(m, decimal_places).ok())
            .unwrap_or(rounded)
    }

    fn strategy(self) -> RoundingStrategy {
        match self {
            RoundingMode::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            RoundingMode::HalfEven => RoundingStrategy::MidpointNearestEven,
            RoundingMode::Up => RoundingStrategy::AwayFromZero,
            RoundingMode::Down => RoundingStrategy::ToZero,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dec;

    const ALL: [RoundingMode; 4] = [
        RoundingMode::HalfUp,
        RoundingMode::HalfEven,
        RoundingMode::Up,
        RoundingMode::Down,
    ];

    #[test]
    fn the_documented_table() {
        let rows = [
            (
                dec!(2.345),
                [dec!(2.35), dec!(2.34), dec!(2.35), dec!(2.34)],
            ),
            (
                dec!(2.355),
                [dec!(2.36), dec!(2.36), dec!(2.36), dec!(2.35)],
            ),
            (
                dec!(2.341),
                [dec!(2.34), dec!(2.34), dec!(2.35), dec!(2.34)],
            ),
            (
                dec!(-2.345),
                [dec!(-2.35), dec!(-2.34), dec!(-2.35), dec!(-2.34)],
            ),
            (
                dec!(2.349),
                [dec!(2.35), dec!(2.35), dec!(2.35), dec!(2.34)],
            ),
        ];
        for (exact, expected) in rows {
            for (mode, want) in ALL.into_iter().zip(expected) {
                assert_eq!(mode.round(exact, 2), want, "{mode:?} of {exact}");
            }
        }
    }

    #[test]
    fn pads_to_the_requested_places() {
        assert_eq!(RoundingMode::HalfUp.round(dec!(10), 2).to_string(), "10.00");
        assert_eq!(RoundingMode::Down.round(dec!(7.5), 0).to_string(), "7");
        assert_eq!(RoundingMode::Up.round(dec!(0.0001), 3).to_string(), "0.001");
    }

    #[test]
    fn already_rounded_values_are_unchanged() {
        for mode in ALL {
            assert_eq!(mode.round(dec!(-33.33), 2), dec!(-33.33));
            assert_eq!(mode.round(Decimal::MAX, 2), Decimal::MAX);
            assert_eq!(mode.round(Decimal::MIN, 0), Decimal::MIN);
        }
    }

    #[test]
    fn serde_names() {
        let json = serde_json::to_string(&RoundingMode::HalfEven).unwrap();
        assert_eq!(json, "\"half_even\"");
    }
}
