//! ISO 4217 currencies with their minor-unit exponents.
//!
//! The table (codes, numeric codes, names, exponents) comes from the
//! maintained [`iso_currency`] crate; this module only narrows it to the
//! currencies that can be billed in — those with a minor unit — and keeps
//! that crate out of our public API so its upgrades do not break ours.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::BillingError;

/// An ISO 4217 currency that has a minor unit (cents, pence, fils…).
///
/// Its [`exponent`](Currency::exponent) is the number of decimal places of
/// the minor unit: 2 for USD, 0 for JPY, 3 for KWD. Codes without a minor
/// unit (precious metals, `XDR`, `XXX`…) are refused with
/// [`BillingError::UnsupportedCurrency`]. Serialized as its code (`"USD"`).
///
/// ```
/// use saas_billing::Currency;
///
/// let yen: Currency = "JPY".parse()?;
/// assert_eq!(yen, Currency::JPY);
/// assert_eq!(yen.exponent(), 0);
/// assert_eq!(Currency::from_code("kwd")?.exponent(), 3);
/// assert!(Currency::from_code("XAU").is_err());
/// # Ok::<(), saas_billing::BillingError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(iso_currency::Currency);

macro_rules! common_currencies {
    ($($code:ident => $name:literal),* $(,)?) => {
        impl Currency {
            $(
                #[doc = concat!("The ", $name, " (`", stringify!($code), "`).")]
                pub const $code: Currency = Currency(iso_currency::Currency::$code);
            )*
        }

        #[cfg(test)]
        const COMMON: &[Currency] = &[$(Currency::$code),*];
    };
}

common_currencies! {
    AUD => "Australian dollar",
    BHD => "Bahraini dinar",
    BRL => "Brazilian real",
    CAD => "Canadian dollar",
    CHF => "Swiss franc",
    CLP => "Chilean peso",
    CNY => "Chinese yuan",
    CZK => "Czech koruna",
    DKK => "Danish krone",
    EUR => "euro",
    GBP => "pound sterling",
    HKD => "Hong Kong dollar",
    INR => "Indian rupee",
    JPY => "Japanese yen",
    KRW => "South Korean won",
    KWD => "Kuwaiti dinar",
    MXN => "Mexican peso",
    NOK => "Norwegian krone",
    NZD => "New Zealand dollar",
    PLN => "Polish złoty",
    SEK => "Swedish krona",
    SGD => "Singapore dollar",
    USD => "United States dollar",
    ZAR => "South African rand",
}

impl Currency {
    /// Looks a currency up by its alphabetic code, ignoring ASCII case.
    ///
    /// # Errors
    /// [`BillingError::UnknownCurrency`] for a code that is not ISO 4217,
    /// [`BillingError::UnsupportedCurrency`] for one without a minor unit.
    pub fn from_code(code: &str) -> Result<Currency, BillingError> {
        let upper = code.trim().to_ascii_uppercase();
        let iso = iso_currency::Currency::from_code(&upper).ok_or_else(|| {
            BillingError::UnknownCurrency {
                code: code.to_owned(),
            }
        })?;
        Currency::from_iso(iso)
    }

    /// Looks a currency up by its ISO 4217 numeric code (840 for USD).
    ///
    /// # Errors
    /// As [`Currency::from_code`].
    pub fn from_numeric(numeric: u16) -> Result<Currency, BillingError> {
        let iso = iso_currency::Currency::from_numeric(numeric).ok_or_else(|| {
            BillingError::UnknownCurrency {
                code: numeric.to_string(),
            }
        })?;
        Currency::from_iso(iso)
    }

    fn from_iso(iso: iso_currency::Currency) -> Result<Currency, BillingError> {
        match iso.exponent() {
            Some(_) => Ok(Currency(iso)),
            None => Err(BillingError::UnsupportedCurrency {
                code: iso.code().to_owned(),
            }),
        }
    }

    /// The three-letter alphabetic code, e.g. `"EUR"`.
    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// The ISO 4217 numeric code, e.g. 978 for EUR.
    pub fn numeric(self) -> u16 {
        self.0.numeric()
    }

    /// The English name, e.g. `"Euro"`.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// Decimal places of the minor unit: 2 for USD, 0 for JPY, 3 for KWD.
    pub fn exponent(self) -> u32 {
        // Every `Currency` was admitted by `from_iso`, which requires an
        // exponent, so the fallback is unreachable.
        self.0.exponent().map_or(0, u32::from)
    }

    /// The smallest amount of this currency: 0.01 for USD, 1 for JPY.
    pub fn minor_unit(self) -> Decimal {
        Decimal::new(1, self.exponent())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = BillingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::from_code(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::from_code(&code).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_billable_and_match_the_table() {
        for currency in COMMON {
            let looked_up = Currency::from_code(currency.code()).unwrap();
            assert_eq!(looked_up, *currency);
            assert_eq!(
                Currency::from_numeric(currency.numeric()).unwrap(),
                *currency
            );
            assert_eq!(
                Some(currency.exponent()),
                currency.0.exponent().map(u32::from)
            );
        }
    }

    #[test]
    fn exponents_come_from_iso_4217() {
        let exponents = [
            ("USD", 2),
            ("EUR", 2),
            ("JPY", 0),
            ("KRW", 0),
            ("KWD", 3),
            ("BHD", 3),
            ("CLF", 4),
        ];
        for (code, exponent) in exponents {
            assert_eq!(
                Currency::from_code(code).unwrap().exponent(),
                exponent,
                "{code}"
            );
        }
        assert_eq!(Currency::USD.minor_unit().to_string(), "0.01");
        assert_eq!(Currency::JPY.minor_unit().to_string(), "1");
    }

    #[test]
    fn lookups_fail_with_typed_errors() {
        assert!(matches!(
            Currency::from_code("ABC"),
            Err(BillingError::UnknownCurrency { .. })
        ));
        assert!(matches!(
            Currency::from_code(""),
            Err(BillingError::UnknownCurrency { .. })
        ));
        assert!(matches!(
            Currency::from_numeric(1),
            Err(BillingError::UnknownCurrency { .. })
        ));
        for code in ["XAU", "XDR", "XXX"] {
            assert_eq!(
                Currency::from_code(code),
                Err(BillingError::UnsupportedCurrency {
                    code: code.to_owned()
                })
            );
        }
        assert_eq!(" usd ".parse::<Currency>().unwrap(), Currency::USD);
    }

    #[test]
    fn display_debug_and_serde() {
        assert_eq!(Currency::EUR.to_string(), "EUR");
        assert_eq!(format!("{:?}", Currency::EUR), "Currency(EUR)");
        assert_eq!(Currency::EUR.name(), "Euro");
        assert_eq!(serde_json::to_string(&Currency::JPY).unwrap(), "\"JPY\"");
        assert_eq!(
            serde_json::from_str::<Currency>("\"chf\"").unwrap(),
            Currency::CHF
        );
    }
}
