//! CloudEvents extension attributes: values and name rules.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::EventError;

/// Names this crate gives meaning to and sets through typed methods
/// ([`Event::with_tenant`](crate::Event::with_tenant), …), plus the
/// CloudEvents context attributes and the JSON `data` members.
pub(crate) const RESERVED: &[&str] = &[
    "id",
    "source",
    "specversion",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
    "data",
    "tenantid",
    "traceparent",
    "tracestate",
    "partitionkey",
];

/// The longest extension name this crate writes (the spec's recommendation);
/// longer names from other producers are still read.
pub const MAX_EXTENSION_NAME_LEN: usize = 20;

/// The value of an extension attribute.
///
/// CloudEvents JSON carries extensions as strings, integers or booleans;
/// other CloudEvents types (URI, timestamp, binary) travel as strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExtensionValue {
    /// A string.
    String(String),
    /// A whole number.
    Integer(i64),
    /// A boolean.
    Boolean(bool),
}

impl ExtensionValue {
    /// The value if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ExtensionValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value if it is an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ExtensionValue::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The value if it is a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            ExtensionValue::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    pub(crate) fn from_json(
        name: &str,
        value: serde_json::Value,
    ) -> Result<Option<Self>, EventError> {
        match value {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) => Ok(Some(ExtensionValue::String(s))),
            serde_json::Value::Bool(b) => Ok(Some(ExtensionValue::Boolean(b))),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(|i| Some(ExtensionValue::Integer(i)))
                .ok_or_else(|| {
                    EventError::invalid(name, "extension numbers must be whole numbers")
                }),
            _ => Err(EventError::invalid(
                name,
                "extension values must be strings, integers or booleans",
            )),
        }
    }
}

impl fmt::Display for ExtensionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtensionValue::String(s) => f.write_str(s),
            ExtensionValue::Integer(i) => write!(f, "{i}"),
            ExtensionValue::Boolean(b) => write!(f, "{b}"),
        }
    }
}

impl From<String> for ExtensionValue {
    fn from(v: String) -> Self {
        ExtensionValue::String(v)
    }
}

impl From<&str> for ExtensionValue {
    fn from(v: &str) -> Self {
        ExtensionValue::String(v.to_owned())
    }
}

impl From<i64> for ExtensionValue {
    fn from(v: i64) -> Self {
        ExtensionValue::Integer(v)
    }
}

impl From<u32> for ExtensionValue {
    fn from(v: u32) -> Self {
        ExtensionValue::Integer(i64::from(v))
    }
}

impl From<bool> for ExtensionValue {
    fn from(v: bool) -> Self {
        ExtensionValue::Boolean(v)
    }
}

/// Checks the spec's rule for attribute names: lowercase ASCII letters and
/// digits only, non-empty.
pub(crate) fn check_name_chars(name: &str) -> Result<(), EventError> {
    if name.is_empty() {
        return Err(EventError::InvalidExtensionName {
            name: String::new(),
            reason: "attribute names must not be empty",
        });
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(EventError::InvalidExtensionName {
            name: name.to_owned(),
            reason: "attribute names may contain only lowercase ASCII letters a-z and digits 0-9",
        });
    }
    Ok(())
}

/// Checks a name this crate is asked to write: the spec's character rule,
/// at most [`MAX_EXTENSION_NAME_LEN`] characters, and not reserved.
pub(crate) fn check_new_name(name: &str) -> Result<(), EventError> {
    check_name_chars(name)?;
    if name.len() > MAX_EXTENSION_NAME_LEN {
        return Err(EventError::InvalidExtensionName {
            name: name.to_owned(),
            reason: "extension names must be at most 20 characters (CloudEvents recommendation)",
        });
    }
    if RESERVED.contains(&name) {
        return Err(EventError::InvalidExtensionName {
            name: name.to_owned(),
            reason: "reserved name; set it through its typed method (with_tenant, with_partition_key, with_trace_context, …)",
        });
    }
    Ok(())
}

/// Checks a value this crate is asked to write: CloudEvents integers are
/// 32-bit signed, so a larger one would be refused by a consumer that
/// checks.
pub(crate) fn check_new_value(name: &str, value: &ExtensionValue) -> Result<(), EventError> {
    match value {
        ExtensionValue::Integer(i) if i32::try_from(*i).is_err() => Err(EventError::invalid(
            name,
            format!("{i} does not fit a CloudEvents integer (32-bit signed); send it as a string"),
        )),
        _ => Ok(()),
    }
}
