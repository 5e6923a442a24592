//! Identifiers of catalog entries, subscriptions and invoices.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::BillingError;

macro_rules! string_key {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// Keys are chosen by the catalog's author: 1 to 64 ASCII letters,
        /// digits, `_`, `-` or `.`.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks and wraps a key.
            ///
            /// # Errors
            /// [`BillingError::InvalidInput`] for an empty, too long or
            /// non-ASCII key.
            pub fn new(key: impl Into<String>) -> Result<Self, BillingError> {
                let key = key.into();
                check_key($what, &key)?;
                Ok(Self(key))
            }

            /// The key as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = BillingError;
            fn try_from(key: String) -> Result<Self, BillingError> {
                Self::new(key)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = BillingError;
            fn try_from(key: &str) -> Result<Self, BillingError> {
                Self::new(key)
            }
        }

        impl From<$name> for String {
            fn from(key: $name) -> String {
                key.0
            }
        }
    };
}

fn check_key(what: &'static str, key: &str) -> Result<(), BillingError> {
    let ok = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(BillingError::invalid(
            what,
            format!("{key:?} must be 1 to 64 ASCII letters, digits, '_', '-' or '.'"),
        ))
    }
}

string_key!(
    /// A product of the catalog (`"analytics"`).
    ProductId,
    "product id"
);
string_key!(
    /// A plan of the catalog (`"pro"`); its versions share the id.
    PlanId,
    "plan id"
);
string_key!(
    /// A meter (`"api_calls"`): what usage events count.
    MeterKey,
    "meter key"
);
string_key!(
    /// An entitled feature (`"seats"`, `"sso"`, `"api_calls"`).
    FeatureKey,
    "feature key"
);
string_key!(
    /// A price within a plan version (`"base"`, `"seats"`, `"calls"`).
    PriceKey,
    "price key"
);

string_key!(
    /// Who issues invoices and numbers them: one gapless sequence of
    /// invoice numbers per issuer (a legal entity of the platform, or one
    /// per tenant; see [`InvoiceIssuer`](crate::InvoiceIssuer)).
    IssuerId,
    "issuer id"
);

string_key!(
    /// A coupon (`"launch-20"`), chosen by whoever creates it.
    CouponId,
    "coupon id"
);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random (v4) id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// Wraps an existing UUID (read back from storage).
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID.
            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

uuid_id!(
    /// A subscription.
    SubscriptionId
);
uuid_id!(
    /// An invoice.
    InvoiceId
);
uuid_id!(
    /// A credit note.
    CreditNoteId
);
uuid_id!(
    /// A grant of prepaid credit.
    CreditGrantId
);

impl IssuerId {
    /// Wraps a key built by this crate from characters the rules allow.
    pub(crate) fn from_checked(key: String) -> IssuerId {
        debug_assert!(check_key("issuer id", &key).is_ok());
        IssuerId(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(PlanId::new("pro-2024.v1").is_ok());
        assert!(PlanId::new("").is_err());
        assert!(MeterKey::new("api calls").is_err());
        assert!(FeatureKey::new("x".repeat(65)).is_err());
    }
}
