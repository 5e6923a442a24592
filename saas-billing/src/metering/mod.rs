//! Usage metering: events, meters and their aggregation.
//!
//! A [`UsageEvent`] records that something happened (an API call, a
//! gigabyte stored) with an idempotency key unique per tenant. A [`Meter`]
//! says how events become a quantity: [`Aggregation`] over the events of a
//! [`Window`], optionally split by group-by properties.

mod aggregate;

pub use aggregate::{Aggregate, Window, aggregate};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use saas_core::TenantId;
use serde::{Deserialize, Serialize};

use crate::error::BillingError;
use crate::ids::{MeterKey, SubscriptionId};

/// Longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// One usage event.
///
/// Two events with the same tenant and idempotency key are the same event
/// when every other field is equal too (the *payload*); a different payload
/// under a used key is a conflict. Property values are strings: numbers
/// that matter belong in `value`, which is an exact [`Decimal`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// The tenant (customer) it belongs to.
    pub tenant_id: TenantId,
    /// The subscription it is billed to.
    pub subscription_id: SubscriptionId,
    /// The meter it counts on.
    pub meter: MeterKey,
    /// The quantity (1 for a call, 2.5 for gigabytes…); zero or more.
    #[serde(with = "rust_decimal::serde::str")]
    pub value: Decimal,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// Dimensions for group-by and unique counts (`region = eu`).
    pub properties: BTreeMap<String, String>,
    /// Chosen by the sender; unique per tenant.
    pub idempotency_key: String,
}

impl UsageEvent {
    /// An event with no properties.
    pub fn new(
        tenant_id: TenantId,
        subscription_id: SubscriptionId,
        meter: MeterKey,
        value: Decimal,
        timestamp: DateTime<Utc>,
        idempotency_key: impl Into<String>,
    ) -> UsageEvent {
        UsageEvent {
            tenant_id,
            subscription_id,
            meter,
            value,
            timestamp,
            properties: BTreeMap::new(),
            idempotency_key: idempotency_key.into(),
        }
    }

    /// Adds a property.
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    /// Checks the fields that do not depend on a subscription.
    ///
    /// # Errors
    /// [`BillingError::InvalidInput`] for a negative value or an empty or
    /// overlong idempotency key.
    pub fn validate(&self) -> Result<(), BillingError> {
        if self.value.is_sign_negative() && !self.value.is_zero() {
            return Err(BillingError::invalid("value", "usage cannot be negative"));
        }
        if self.idempotency_key.is_empty() || self.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(BillingError::invalid(
                "idempotency_key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
            ));
        }
        Ok(())
    }
}

/// How a meter turns the events of a window into one number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Aggregation {
    /// The number of events.
    Count,
    /// The sum of values.
    Sum,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
    /// The value of the latest event (ties: the one recorded last) — a
    /// gauge such as seats in use or gigabytes stored.
    Latest,
    /// The number of distinct values of a property (active users);
    /// events without the property are not counted.
    UniqueCount {
        /// The property whose values are counted.
        property: String,
    },
}

/// A named way of measuring usage.
///
/// ```
/// use saas_billing::{Aggregation, Meter, MeterKey};
///
/// let meter = Meter::new(MeterKey::new("api_calls")?, Aggregation::Count)
///     .group_by("region");
/// assert_eq!(meter.group_by_properties(), ["region"]);
/// # Ok::<(), saas_billing::BillingError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Meter {
    key: MeterKey,
    aggregation: Aggregation,
    group_by: Vec<String>,
}

impl Meter {
    /// A meter without group-by.
    pub fn new(key: MeterKey, aggregation: Aggregation) -> Meter {
        Meter {
            key,
            aggregation,
            group_by: Vec::new(),
        }
    }

    /// Adds a group-by property: each distinct combination of group-by
    /// values is aggregated (and billed) separately.
    pub fn group_by(mut self, property: impl Into<String>) -> Meter {
        self.group_by.push(property.into());
        self
    }

    /// The key events name.
    pub fn key(&self) -> &MeterKey {
        &self.key
    }

    /// The aggregation.
    pub fn aggregation(&self) -> &Aggregation {
        &self.aggregation
    }

    /// The group-by properties, in order.
    pub fn group_by_properties(&self) -> &[String] {
        &self.group_by
    }
}
