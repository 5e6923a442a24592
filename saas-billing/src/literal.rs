//! The `dec!` literal macro, usable by a crate that depends on saas-billing
//! alone.
//!
//! rust_decimal's own `dec!` is a procedural macro that expands to
//! `::rust_decimal::…` paths, which resolve only in a crate that depends on
//! rust_decimal directly. This one is declarative: it expands to a
//! `$crate`-relative call, evaluated in a `const` block, so a malformed or
//! out-of-range literal is still a compile error.

use rust_decimal::Decimal;

/// An exact [`Decimal`](crate::Decimal) from a decimal literal, checked at
/// compile time: `dec!(12)`, `dec!(-0.0042)`, `dec!(1_000.50)`,
/// `dec!(2.5e3)`. Up to 28 decimal places and 96 bits of mantissa, as
/// `Decimal` holds; a type suffix (`5u32`) or a hexadecimal literal is
/// refused.
///
/// The crate using it needs no dependency on rust_decimal. (The example
/// below makes `::rust_decimal` name `std` in the calling crate, so
/// rust_decimal's own `dec!`, whose expansion names `::rust_decimal` at
/// the call site, would not compile here.)
///
/// ```
/// extern crate std as rust_decimal;
///
/// use saas_billing::{Currency, Decimal, Money, dec};
///
/// fn main() {
///     const PRICE: Decimal = dec!(0.0042);
///     assert_eq!(PRICE.to_string(), "0.0042");
///     assert_eq!(dec!(-1_000.50).to_string(), "-1000.50");
///     assert_eq!(dec!(2.5e3), Decimal::from(2500));
///     assert_eq!(dec!(12e-3).to_string(), "0.012");
///     let fee = Money::new(dec!(19.99), Currency::USD);
///     assert_eq!(fee.amount(), Decimal::new(1999, 2));
/// }
/// ```
///
/// The same shadowing makes a direct `::rust_decimal` path fail, which is
/// what shows the example above proves something:
///
/// ```compile_fail
/// extern crate std as rust_decimal;
///
/// fn main() {
///     let _ = ::rust_decimal::Decimal::ONE;
/// }
/// ```
///
/// Literals that are not exact decimals do not compile:
///
/// ```compile_fail
/// let _ = saas_billing::dec!(0x10);
/// ```
///
/// ```compile_fail
/// let _ = saas_billing::dec!(79228162514264337593543950336); // 2⁹⁶
/// ```
#[macro_export]
macro_rules! dec {
    ($literal:literal) => {
        const { $crate::__private::decimal_literal(stringify!($literal)) }
    };
}

/// Parses the text of a numeric literal; panics (at compile time, inside
/// `dec!`'s `const` block) when it is not an exact decimal.
pub const fn decimal_literal(text: &str) -> Decimal {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut negative = false;
    if i < bytes.len() && bytes[i] == b'-' {
        negative = true;
        i += 1;
    }
    // `stringify!` may put a space between the sign and the digits.
    while i < bytes.len() && bytes[i] == b' ' {
        i += 1;
    }
    let mut mantissa: i128 = 0;
    let mut scale: i64 = 0;
    let mut digits = 0;
    let mut after_point = false;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_digit() {
            mantissa = match mantissa.checked_mul(10) {
                Some(m) => match m.checked_add((b - b'0') as i128) {
                    Some(m) => m,
                    None => panic!("dec!: the literal has too many digits for a Decimal"),
                },
                None => panic!("dec!: the literal has too many digits for a Decimal"),
            };
            digits += 1;
            if after_point {
                scale += 1;
            }
        } else if b == b'.' && !after_point {
            after_point = true;
        } else if b == b'e' || b == b'E' {
            break;
        } else if b != b'_' {
            panic!("dec!: not a decimal literal (digits, `_`, `.` and an exponent only)");
        }
        i += 1;
    }
    if digits == 0 {
        panic!("dec!: the literal has no digits");
    }
    if i < bytes.len() {
        // An exponent: e, an optional sign, digits.
        i += 1;
        let mut exponent_negative = false;
        if i < bytes.len() && (bytes[i] == b'-' || bytes[i] == b'+') {
            exponent_negative = bytes[i] == b'-';
            i += 1;
        }
        let mut exponent: i64 = 0;
        let mut exponent_digits = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_digit() {
                exponent = exponent * 10 + (b - b'0') as i64;
                if exponent > 100 {
                    panic!("dec!: the exponent is out of range for a Decimal");
                }
                exponent_digits += 1;
            } else if b != b'_' {
                panic!("dec!: not a decimal literal (digits, `_`, `.` and an exponent only)");
            }
            i += 1;
        }
        if exponent_digits == 0 {
            panic!("dec!: the exponent has no digits");
        }
        scale -= if exponent_negative {
            -exponent
        } else {
            exponent
        };
    }
    // A positive exponent beyond the decimal places scales the mantissa.
    while scale < 0 {
        mantissa = match mantissa.checked_mul(10) {
            Some(m) => m,
            None => panic!("dec!: the literal is out of range for a Decimal"),
        };
        scale += 1;
    }
    if scale > Decimal::MAX_SCALE as i64 {
        panic!("dec!: more than 28 decimal places");
    }
    // `Decimal` holds a 96-bit magnitude. (`try_from_i128_with_scale`
    // returns an error type that cannot be dropped in a `const fn`.)
    if mantissa >= 1 << 96 {
        panic!("dec!: the literal is out of range for a Decimal");
    }
    let bits = mantissa as u128;
    Decimal::from_parts(
        bits as u32,
        (bits >> 32) as u32,
        (bits >> 64) as u32,
        negative,
        scale as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::decimal_literal;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    #[test]
    fn literals_parse_exactly_with_their_scale() {
        for (text, expected) in [
            ("0", "0"),
            ("12", "12"),
            ("-7", "-7"),
            ("- 7.25", "-7.25"),
            ("0.0042", "0.0042"),
            ("1_000.50", "1000.50"),
            ("2.5e3", "2500"),
            ("2.5E+3", "2500"),
            ("12e-3", "0.012"),
            ("1.", "1"),
            (
                "79228162514264337593543950335",
                "79228162514264337593543950335",
            ),
            (
                "0.0000000000000000000000000001",
                "0.0000000000000000000000000001",
            ),
        ] {
            let parsed = decimal_literal(text);
            assert_eq!(parsed.to_string(), expected, "{text}");
            assert_eq!(parsed, Decimal::from_str(expected).unwrap_or_default());
        }
    }

    #[test]
    fn bad_literals_panic() {
        for text in [
            "",
            "-",
            "1.5u32",
            "1.2.3",
            "1e",
            "0x10",
            "79228162514264337593543950336",
            "0.00000000000000000000000000001",
            "1e29",
        ] {
            assert!(
                std::panic::catch_unwind(|| decimal_literal(text)).is_err(),
                "{text:?} was accepted"
            );
        }
    }
}
