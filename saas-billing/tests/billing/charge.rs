//! Charge models: worked examples at every tier boundary.

use saas_billing::{
    BillingError, Charge, ChargeComponent, ChargeModel, Currency, Decimal, LimitApplied, Money,
    RoundingMode, Tier, TierTable, dec,
};

fn usd(amount: Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

/// Tiers 0–100 @ 0.10, 101–1000 @ 0.08, above @ 0.05.
fn api_tiers() -> TierTable {
    TierTable::builder()
        .up_to(dec!(100), dec!(0.10))
        .up_to(dec!(1000), dec!(0.08))
        .unbounded(dec!(0.05))
        .build()
        .unwrap()
}

fn amount(charge: &Charge, quantity: Decimal) -> Decimal {
    charge
        .compute(quantity, RoundingMode::HalfUp)
        .unwrap()
        .amount()
        .amount()
}

#[test]
fn graduated_at_every_tier_boundary() {
    let charge = Charge::graduated(Currency::USD, api_tiers());
    let cases = [
        (dec!(0), dec!(0.00)),
        (dec!(100), dec!(10.00)),   // 100 × 0.10
        (dec!(101), dec!(10.08)),   // + 1 × 0.08
        (dec!(1000), dec!(82.00)),  // 10.00 + 900 × 0.08
        (dec!(1001), dec!(82.05)),  // + 1 × 0.05
        (dec!(5000), dec!(282.00)), // 82.00 + 4000 × 0.05
    ];
    for (quantity, expected) in cases {
        assert_eq!(amount(&charge, quantity), expected, "graduated {quantity}");
    }
}

#[test]
fn volume_at_every_tier_boundary() {
    let charge = Charge::volume(Currency::USD, api_tiers());
    let cases = [
        (dec!(0), dec!(0.00)),
        (dec!(100), dec!(10.00)),   // 100 × 0.10
        (dec!(101), dec!(8.08)),    // 101 × 0.08
        (dec!(1000), dec!(80.00)),  // 1000 × 0.08
        (dec!(1001), dec!(50.05)),  // 1001 × 0.05
        (dec!(5000), dec!(250.00)), // 5000 × 0.05
    ];
    for (quantity, expected) in cases {
        assert_eq!(amount(&charge, quantity), expected, "volume {quantity}");
    }
}

#[test]
fn graduated_line_explains_each_tier() {
    let line = Charge::graduated(Currency::USD, api_tiers())
        .compute(dec!(1001), RoundingMode::HalfEven)
        .unwrap();
    let text: Vec<String> = line.components().iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "tier 0 (0 to 100): 100 × 0.10 USD = 10.00 USD",
            "tier 1 (over 100 up to 1000): 900 × 0.08 USD = 72.00 USD",
            "tier 2 (over 1000): 1 × 0.05 USD = 0.05 USD",
        ]
    );
    assert_eq!(line.subtotal(), usd(dec!(82.05)));
    assert_eq!(line.limit(), None);
    assert_eq!(
        line.to_string().lines().last().unwrap(),
        "amount (HalfEven rounding): 82.05 USD"
    );
    match &line.components()[1] {
        ChargeComponent::GraduatedTier {
            tier,
            from,
            up_to,
            quantity,
            ..
        } => {
            assert_eq!(
                (*tier, *from, *up_to, *quantity),
                (1, dec!(100), Some(dec!(1000)), dec!(900))
            );
        }
        other => panic!("unexpected component {other:?}"),
    }
}

#[test]
fn tier_flat_fees() {
    let tiers = TierTable::builder()
        .tier(Tier::up_to(dec!(10), dec!(0)).with_flat_fee(dec!(5)))
        .tier(Tier::unbounded(dec!(1)).with_flat_fee(dec!(2)))
        .build()
        .unwrap();
    let graduated = Charge::graduated(Currency::USD, tiers.clone());
    assert_eq!(amount(&graduated, dec!(0)), dec!(0));
    assert_eq!(amount(&graduated, dec!(10)), dec!(5.00));
    assert_eq!(amount(&graduated, dec!(12)), dec!(9.00)); // 5 + (2 × 1 + 2)
    let volume = Charge::volume(Currency::USD, tiers);
    assert_eq!(amount(&volume, dec!(10)), dec!(5.00));
    assert_eq!(amount(&volume, dec!(12)), dec!(14.00)); // 12 × 1 + 2
}

#[test]
fn fractional_quantities_in_tiers() {
    let charge = Charge::graduated(Currency::USD, api_tiers());
    // 100 × 0.10 + 0.5 × 0.08 = 10.04
    assert_eq!(amount(&charge, dec!(100.5)), dec!(10.04));
    let volume = Charge::volume(Currency::USD, api_tiers());
    // 100.001 is above 100: 100.001 × 0.08 = 8.00008 -> 8.00
    assert_eq!(amount(&volume, dec!(100.001)), dec!(8.00));
}

#[test]
fn package_rounds_partial_packages_up() {
    // 100 units per package at 5.00 USD.
    let charge = Charge::package(dec!(100), usd(dec!(5.00))).unwrap();
    let cases = [
        (dec!(0), dec!(0.00)),
        (dec!(1), dec!(5.00)),
        (dec!(100), dec!(5.00)),
        (dec!(101), dec!(10.00)),
        (dec!(250), dec!(15.00)),
        (dec!(300), dec!(15.00)),
        (dec!(300.01), dec!(20.00)),
    ];
    for (quantity, expected) in cases {
        assert_eq!(amount(&charge, quantity), expected, "package {quantity}");
    }
    let line = charge.compute(dec!(250), RoundingMode::HalfUp).unwrap();
    assert!(matches!(
        line.components()[0],
        ChargeComponent::Packages { packages, .. } if packages == dec!(3)
    ));
    // A fractional package size counts exactly: 0.3 / 0.1 is 3 packages, not 4.
    let tenths = Charge::package(dec!(0.1), usd(dec!(1))).unwrap();
    assert_eq!(amount(&tenths, dec!(0.3)), dec!(3.00));
}

#[test]
fn flat_and_per_unit() {
    let flat = Charge::flat(usd(dec!(49))).unwrap();
    assert_eq!(amount(&flat, dec!(0)), dec!(49.00));
    assert_eq!(amount(&flat, dec!(1000)), dec!(49.00));
    let per_seat = Charge::per_unit(usd(dec!(12.5))).unwrap();
    assert_eq!(amount(&per_seat, dec!(7)), dec!(87.50));
    // Sub-cent unit price, rounded once on the line: 1234 × 0.0042 = 5.1828.
    let per_call = Charge::per_unit(usd(dec!(0.0042))).unwrap();
    let line = per_call.compute(dec!(1234), RoundingMode::HalfUp).unwrap();
    assert_eq!(line.subtotal().amount(), dec!(5.1828));
    assert_eq!(line.amount().amount(), dec!(5.18));
}

#[test]
fn percentage_with_minimum_and_maximum() {
    // 2.9 % of a transaction volume, at least 0.30, at most 10.00.
    let fee = Charge::percentage(dec!(2.9), Currency::USD)
        .unwrap()
        .with_minimum(usd(dec!(0.30)))
        .unwrap()
        .with_maximum(usd(dec!(10.00)))
        .unwrap();
    // 123.45 × 2.9 % = 3.58005
    let line = fee
        .compute_on(usd(dec!(123.45)), RoundingMode::HalfUp)
        .unwrap();
    assert_eq!(line.subtotal().amount(), dec!(3.58005));
    assert_eq!(line.amount().amount(), dec!(3.58));
    assert_eq!(
        line.components()[0].to_string(),
        "2.9 % of 123.45 USD = 3.58005 USD"
    );
    // 5.00 × 2.9 % = 0.145, raised to the minimum.
    let line = fee
        .compute_on(usd(dec!(5.00)), RoundingMode::HalfUp)
        .unwrap();
    assert_eq!(line.limit(), Some(LimitApplied::Minimum(usd(dec!(0.30)))));
    assert_eq!(line.amount().amount(), dec!(0.30));
    // 1000 × 2.9 % = 29, lowered to the maximum.
    let line = fee.compute(dec!(1000), RoundingMode::HalfUp).unwrap();
    assert_eq!(line.limit(), Some(LimitApplied::Maximum(usd(dec!(10)))));
    assert_eq!(line.amount().to_string(), "10.00 USD");
    // A minimum applies to a zero quantity too.
    assert_eq!(
        fee.compute(dec!(0), RoundingMode::HalfUp)
            .unwrap()
            .amount()
            .amount(),
        dec!(0.30)
    );
    assert!(matches!(
        fee.compute_on(Money::new(dec!(1), Currency::EUR), RoundingMode::HalfUp),
        Err(BillingError::CurrencyMismatch { .. })
    ));
}

#[test]
fn invalid_charges_are_typed_errors() {
    assert!(matches!(
        Charge::per_unit(usd(dec!(-1))),
        Err(BillingError::InvalidInput {
            field: "unit_price",
            ..
        })
    ));
    assert!(Charge::flat(usd(dec!(-0.01))).is_err());
    assert!(matches!(
        Charge::package(dec!(0), usd(dec!(1))),
        Err(BillingError::InvalidInput {
            field: "package_size",
            ..
        })
    ));
    assert!(Charge::percentage(dec!(-1), Currency::USD).is_err());
    assert!(
        Charge::new(
            Currency::USD,
            ChargeModel::Package {
                package_size: dec!(-5),
                package_price: dec!(1)
            }
        )
        .is_err()
    );
    let charge = Charge::per_unit(usd(dec!(1))).unwrap();
    assert!(matches!(
        charge
            .clone()
            .with_minimum(Money::new(dec!(1), Currency::EUR)),
        Err(BillingError::CurrencyMismatch { .. })
    ));
    assert!(charge.clone().with_minimum(usd(dec!(-1))).is_err());
    let capped = charge.with_maximum(usd(dec!(5))).unwrap();
    assert!(matches!(
        capped.clone().with_minimum(usd(dec!(6))),
        Err(BillingError::InvalidInput {
            field: "minimum",
            ..
        })
    ));
    assert!(matches!(
        capped.compute(dec!(-1), RoundingMode::HalfUp),
        Err(BillingError::InvalidInput {
            field: "quantity",
            ..
        })
    ));
    let huge = Charge::per_unit(usd(Decimal::MAX)).unwrap();
    assert!(matches!(
        huge.compute(dec!(2), RoundingMode::HalfUp),
        Err(BillingError::Overflow { .. })
    ));
}
