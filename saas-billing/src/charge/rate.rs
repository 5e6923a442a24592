//! The arithmetic of each tiered and package model, exact and checked.

use rust_decimal::Decimal;

use super::{ChargeComponent, TierTable};
use crate::currency::Currency;
use crate::error::BillingError;
use crate::money::Money;

pub(super) fn non_negative(field: &'static str, value: Decimal) -> Result<(), BillingError> {
    if value.is_sign_negative() && !value.is_zero() {
        Err(BillingError::invalid(
            field,
            format!("cannot be negative (got {value})"),
        ))
    } else {
        Ok(())
    }
}

pub(super) fn mul(a: Decimal, b: Decimal) -> Result<Decimal, BillingError> {
    a.checked_mul(b)
        .ok_or_else(|| BillingError::overflow("a charge"))
}

pub(super) fn add(a: Decimal, b: Decimal) -> Result<Decimal, BillingError> {
    a.checked_add(b)
        .ok_or_else(|| BillingError::overflow("a charge"))
}

pub(super) fn graduated(
    currency: Currency,
    table: &TierTable,
    quantity: Decimal,
) -> Result<Vec<ChargeComponent>, BillingError> {
    let money = |amount| Money::new(amount, currency);
    let mut components = Vec::new();
    for (tier, from, row) in table.with_lower_bounds() {
        if quantity <= from {
            break;
        }
        let top = row
            .upper_bound()
            .map_or(quantity, |bound| bound.min(quantity));
        let units = top - from; // 0 <= from < top: cannot overflow
        components.push(ChargeComponent::GraduatedTier {
            tier,
            from,
            up_to: row.upper_bound(),
            quantity: units,
            unit_price: money(row.unit_price()),
            flat_fee: money(row.flat_fee()),
            amount: money(add(mul(units, row.unit_price())?, row.flat_fee())?),
        });
    }
    Ok(components)
}

pub(super) fn volume(
    currency: Currency,
    table: &TierTable,
    quantity: Decimal,
) -> Result<Option<ChargeComponent>, BillingError> {
    if quantity.is_zero() {
        return Ok(None);
    }
    let money = |amount| Money::new(amount, currency);
    // The table's last tier is unbounded, so some tier always matches.
    let found = table
        .with_lower_bounds()
        .find(|(_, _, row)| row.upper_bound().is_none_or(|bound| quantity <= bound));
    let Some((tier, from, row)) = found else {
        return Err(BillingError::invalid(
            "tiers",
            "no tier covers the quantity",
        ));
    };
    Ok(Some(ChargeComponent::VolumeTier {
        tier,
        from,
        up_to: row.upper_bound(),
        quantity,
        unit_price: money(row.unit_price()),
        flat_fee: money(row.flat_fee()),
        amount: money(add(mul(quantity, row.unit_price())?, row.flat_fee())?),
    }))
}

/// The least whole number of packages holding `quantity` (> 0) units,
/// checked by exact multiplication so division rounding cannot miscount.
pub(super) fn packages_needed(quantity: Decimal, size: Decimal) -> Result<Decimal, BillingError> {
    let overflow = || BillingError::overflow("a package count");
    let mut packages = quantity.checked_div(size).ok_or_else(overflow)?.ceil();
    while mul(packages, size)? < quantity {
        packages = packages.checked_add(Decimal::ONE).ok_or_else(overflow)?;
    }
    while packages > Decimal::ONE && mul(packages - Decimal::ONE, size)? >= quantity {
        packages -= Decimal::ONE;
    }
    Ok(packages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dec;

    #[test]
    fn packages_are_counted_exactly() {
        assert_eq!(packages_needed(dec!(1), dec!(1)).unwrap(), dec!(1));
        assert_eq!(packages_needed(dec!(0.0001), dec!(100)).unwrap(), dec!(1));
        assert_eq!(packages_needed(dec!(0.9), dec!(0.3)).unwrap(), dec!(3));
        // A third that is not exactly a third: three of them fall short of 1.
        let third = dec!(0.3333333333333333333333333333);
        assert_eq!(packages_needed(dec!(1), third).unwrap(), dec!(4));
        assert_eq!(
            packages_needed(Decimal::MAX, dec!(1)).unwrap(),
            Decimal::MAX
        );
    }
}
