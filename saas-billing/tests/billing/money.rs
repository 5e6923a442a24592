//! Money, rounding and allocation: worked examples.

use saas_billing::{BillingError, Currency, Decimal, Money, RoundingMode, dec};
use saas_core::ErrorKind;

fn amounts(parts: &[Money]) -> Vec<Decimal> {
    parts.iter().map(Money::amount).collect()
}

#[test]
fn largest_remainder_split_of_100_usd_in_three() {
    let parts = Money::new(dec!(100.00), Currency::USD).split(3).unwrap();
    assert_eq!(amounts(&parts), [dec!(33.34), dec!(33.33), dec!(33.33)]);
    assert_eq!(parts[0].to_string(), "33.34 USD");
    let total = Money::checked_sum(Currency::USD, parts).unwrap();
    assert_eq!(total.amount(), dec!(100.00));
}

#[test]
fn weighted_allocation() {
    // 50/30/20 of 99.99: exact shares 49.995, 29.997, 19.998 -> floors
    // 49.99, 29.99, 19.99 (99.97); the two leftover cents go to the largest
    // remainders (0.008 and 0.007): 29.99 -> 30.00 and 19.99 -> 20.00.
    let parts = Money::new(dec!(99.99), Currency::EUR)
        .allocate(&[dec!(50), dec!(30), dec!(20)])
        .unwrap();
    assert_eq!(amounts(&parts), [dec!(49.99), dec!(30.00), dec!(20.00)]);

    // Fractional weights are ratios too.
    let parts = Money::new(dec!(10.00), Currency::USD)
        .allocate(&[dec!(0.5), dec!(0.25), dec!(0.25)])
        .unwrap();
    assert_eq!(amounts(&parts), [dec!(5.00), dec!(2.50), dec!(2.50)]);
}

#[test]
fn zero_decimal_currency_splits_in_whole_units() {
    let parts = Money::new(dec!(1000), Currency::JPY).split(3).unwrap();
    assert_eq!(amounts(&parts), [dec!(334), dec!(333), dec!(333)]);
    assert!(parts.iter().all(|p| p.amount().scale() == 0));
    let parts = Money::new(dec!(1), Currency::JPY).split(4).unwrap();
    assert_eq!(amounts(&parts), [dec!(1), dec!(0), dec!(0), dec!(0)]);
}

#[test]
fn three_decimal_currency() {
    let parts = Money::new(dec!(1.000), Currency::KWD).split(3).unwrap();
    assert_eq!(amounts(&parts), [dec!(0.334), dec!(0.333), dec!(0.333)]);
}

#[test]
fn negative_amounts_split_symmetrically() {
    let parts = Money::new(dec!(-100.00), Currency::USD).split(3).unwrap();
    assert_eq!(amounts(&parts), [dec!(-33.34), dec!(-33.33), dec!(-33.33)]);
}

#[test]
fn allocation_refuses_bad_input() {
    let usd = Money::new(dec!(1.005), Currency::USD);
    assert!(matches!(
        usd.split(2),
        Err(BillingError::InvalidInput {
            field: "amount",
            ..
        })
    ));
    let usd = Money::new(dec!(1), Currency::USD);
    assert!(matches!(
        usd.split(0),
        Err(BillingError::InvalidInput { field: "parts", .. })
    ));
    assert!(usd.allocate(&[]).is_err());
    assert!(usd.allocate(&[dec!(0)]).is_err());
    assert!(usd.allocate(&[dec!(2), dec!(-1)]).is_err());
}

#[test]
fn currencies_never_mix() {
    let err = Money::new(dec!(1), Currency::USD)
        .checked_add(Money::new(dec!(1), Currency::JPY))
        .unwrap_err();
    assert_eq!(
        err,
        BillingError::CurrencyMismatch {
            expected: Currency::USD,
            found: Currency::JPY
        }
    );
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        "currency mismatch: USD and JPY cannot be combined"
    );
}

#[test]
fn overflow_is_an_error_not_a_panic() {
    let huge = Money::new(Decimal::MAX, Currency::USD);
    assert!(matches!(
        huge.checked_add(huge),
        Err(BillingError::Overflow { .. })
    ));
    assert!(matches!(
        huge.checked_mul(dec!(10)),
        Err(BillingError::Overflow { .. })
    ));
    assert!(matches!(
        huge.negate().checked_sub(huge),
        Err(BillingError::Overflow { .. })
    ));
}

#[test]
fn rounding_once_per_line_with_each_mode() {
    // 3 units at 0.335 = 1.005 exactly; only the line is rounded.
    let line = Money::new(dec!(0.335), Currency::USD)
        .checked_mul(dec!(3))
        .unwrap();
    assert_eq!(line.amount(), dec!(1.005));
    assert_eq!(line.round(RoundingMode::HalfUp).amount(), dec!(1.01));
    assert_eq!(line.round(RoundingMode::HalfEven).amount(), dec!(1.00));
    assert_eq!(line.round(RoundingMode::Up).amount(), dec!(1.01));
    assert_eq!(line.round(RoundingMode::Down).amount(), dec!(1.00));
    // Credits round symmetrically.
    assert_eq!(
        line.negate().round(RoundingMode::HalfUp).amount(),
        dec!(-1.01)
    );
    // JPY rounds to whole yen.
    let yen = Money::new(dec!(1234.5), Currency::JPY);
    assert_eq!(yen.round(RoundingMode::HalfEven).to_string(), "1234 JPY");
    assert_eq!(yen.round(RoundingMode::HalfUp).to_minor().unwrap(), 1235);
}

#[test]
fn zero_shows_the_currency_minor_digits() {
    assert_eq!(Money::zero(Currency::USD).to_string(), "0.00 USD");
    assert_eq!(Money::zero(Currency::JPY).to_string(), "0 JPY");
    assert_eq!(Money::zero(Currency::KWD).to_string(), "0.000 KWD");
    let nothing = Money::checked_sum(Currency::USD, []).unwrap();
    assert_eq!(nothing.to_string(), "0.00 USD");
    // Same value as an unpadded zero; only the display differs.
    assert_eq!(nothing, Money::new(dec!(0), Currency::USD));
}

#[tokio::test]
async fn an_invoice_with_no_lines_totals_zero_with_minor_digits() {
    use saas_billing::InvoiceStore;
    use saas_billing::store::InMemoryInvoiceStore;
    use saas_billing::testing::fixtures::{draft, start};
    use saas_core::TenantId;

    let store = InMemoryInvoiceStore::new();
    let tenant = TenantId::new();
    let created = store
        .create(draft(tenant, saas_billing::SubscriptionId::new(), 0))
        .await
        .unwrap();
    let finalized = store
        .finalize(
            tenant,
            created.id,
            saas_billing::testing::fixtures::finalization(
                Vec::new(),
                start(),
                &saas_billing::testing::fixtures::issuer(),
            ),
        )
        .await
        .unwrap();
    assert!(finalized.lines.is_empty());
    assert_eq!(finalized.total.to_string(), "0.00 USD");
}

#[test]
fn split_refuses_more_than_the_maximum_parts() {
    use saas_billing::MAX_SPLIT_PARTS;

    let total = Money::new(dec!(100.00), Currency::USD);
    for parts in [MAX_SPLIT_PARTS + 1, 1 << 34, usize::MAX] {
        let err = total.split(parts).unwrap_err();
        assert!(
            matches!(err, BillingError::InvalidInput { field: "parts", .. }),
            "{parts}: {err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("at most 10000"), "{err}");
    }
    let parts = total.split(MAX_SPLIT_PARTS).unwrap();
    assert_eq!(parts.len(), MAX_SPLIT_PARTS);
    assert_eq!(Money::checked_sum(Currency::USD, parts).unwrap(), total);
}
