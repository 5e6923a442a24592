//! Rules for topic and consumer group names.

use crate::error::EventError;

/// The longest topic or group name accepted.
pub const MAX_NAME_LEN: usize = 200;

/// Checks a topic or consumer group name: 1 to [`MAX_NAME_LEN`] ASCII
/// letters, digits, `.`, `-` and `_`, not starting or ending with `.`.
///
/// These names map unchanged onto NATS subjects, Redis keys and SQL string
/// values, so every backend accepts the same names.
///
/// ```
/// use saas_events::validate_name;
/// assert!(validate_name("billing.invoices-v1").is_ok());
/// assert!(validate_name("").is_err());
/// assert!(validate_name("orders > all").is_err());
/// ```
///
/// # Errors
/// [`EventError::InvalidName`] naming the rule broken.
pub fn validate_name(name: &str) -> Result<(), EventError> {
    let bad = |reason| {
        Err(EventError::InvalidName {
            name: name.chars().take(MAX_NAME_LEN).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("names must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("names must be at most 200 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return bad("names may contain only ASCII letters, digits, '.', '-' and '_'");
    }
    if name.starts_with('.') || name.ends_with('.') {
        return bad("names must not start or end with '.'");
    }
    Ok(())
}
