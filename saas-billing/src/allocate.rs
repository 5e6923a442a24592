//! Largest-remainder allocation over integers (minor units).

use rust_decimal::Decimal;

use crate::error::BillingError;

/// Splits `total` minor units in proportion to `weights`; see
/// [`Money::allocate`](crate::Money::allocate) for the contract.
pub(crate) fn largest_remainder(
    total: i128,
    weights: &[Decimal],
) -> Result<Vec<i128>, BillingError> {
    if weights.is_empty() {
        return Err(BillingError::invalid(
            "weights",
            "at least one weight is needed",
        ));
    }
    if weights.iter().any(|w| w.is_sign_negative() && !w.is_zero()) {
        return Err(BillingError::invalid(
            "weights",
            "weights cannot be negative",
        ));
    }
    let weights = integer_weights(weights)?;
    let weight_sum = weights
        .iter()
        .try_fold(0_i128, |acc, w| acc.checked_add(*w))
        .ok_or_else(|| BillingError::overflow("the sum of the weights"))?;
    if weight_sum == 0 {
        return Err(BillingError::invalid(
            "weights",
            "weights cannot all be zero",
        ));
    }

    let magnitude = total
        .checked_abs()
        .ok_or_else(|| BillingError::overflow("an allocation"))?;
    let mut shares = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    let mut given = 0_i128;
    for (index, weight) in weights.iter().enumerate() {
        let exact = magnitude
            .checked_mul(*weight)
            .ok_or_else(|| BillingError::overflow("an allocation (amount × weight)"))?;
        // weight_sum > 0 and exact >= 0: plain floor division, no overflow.
        let share = exact / weight_sum;
        shares.push(share);
        remainders.push((exact % weight_sum, index));
        given += share; // sum of floors <= magnitude, cannot overflow
    }

    // Fewer leftover units than parts: each part's remainder is below the
    // weight sum, and the remainders add up to leftover × weight sum.
    let leftover =
        usize::try_from(magnitude - given).map_err(|_| BillingError::overflow("an allocation"))?;
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, index) in remainders.iter().take(leftover) {
        shares[index] += 1;
    }

    if total < 0 {
        for share in &mut shares {
            *share = -*share;
        }
    }
    Ok(shares)
}

/// Scales decimal weights to integers with the same ratios.
fn integer_weights(weights: &[Decimal]) -> Result<Vec<i128>, BillingError> {
    let normal: Vec<Decimal> = weights.iter().map(|w| w.normalize().abs()).collect();
    let scale = normal.iter().map(Decimal::scale).max().unwrap_or(0);
    normal
        .iter()
        .map(|w| {
            10_i128
                .checked_pow(scale - w.scale())
                .and_then(|factor| w.mantissa().checked_mul(factor))
                .ok_or_else(|| BillingError::overflow("the allocation weights"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dec;

    #[test]
    fn even_split_gives_extra_units_to_the_first_parts() {
        assert_eq!(
            largest_remainder(10000, &[dec!(1); 3]).unwrap(),
            [3334, 3333, 3333]
        );
        assert_eq!(
            largest_remainder(-10000, &[dec!(1); 3]).unwrap(),
            [-3334, -3333, -3333]
        );
        assert_eq!(largest_remainder(2, &[dec!(1); 3]).unwrap(), [1, 1, 0]);
        assert_eq!(largest_remainder(0, &[dec!(1); 2]).unwrap(), [0, 0]);
    }

    #[test]
    fn weights_may_be_fractional_or_zero() {
        assert_eq!(
            largest_remainder(100, &[dec!(0.5), dec!(0.25), dec!(0.25)]).unwrap(),
            [50, 25, 25]
        );
        assert_eq!(
            largest_remainder(5, &[dec!(0), dec!(1), dec!(1)]).unwrap(),
            [0, 3, 2]
        );
        // 10 × 0.3 = 3, 10 × 0.7 = 7: exact shares get no leftover.
        assert_eq!(
            largest_remainder(10, &[dec!(0.3), dec!(0.7)]).unwrap(),
            [3, 7]
        );
        // Largest remainder, not first index: 7 × (1/6, 2/6, 3/6) = 1.17, 2.33, 3.5.
        assert_eq!(
            largest_remainder(7, &[dec!(1), dec!(2), dec!(3)]).unwrap(),
            [1, 2, 4]
        );
    }

    #[test]
    fn bad_weights_are_rejected() {
        assert!(largest_remainder(1, &[]).is_err());
        assert!(largest_remainder(1, &[dec!(0), dec!(0)]).is_err());
        assert!(largest_remainder(1, &[dec!(1), dec!(-1)]).is_err());
        assert!(matches!(
            largest_remainder(i128::MAX / 2, &[Decimal::MAX, dec!(1)]),
            Err(BillingError::Overflow { .. })
        ));
    }
}
