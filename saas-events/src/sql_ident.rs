//! The SQL identifiers the SQL backends build statements with.

use crate::error::EventError;

/// Checks an SQL identifier we generate statements with: 1–63 lowercase
/// ASCII letters, digits and `_`, not starting with a digit. Always quoted
/// when used, so this is defence in depth.
pub(crate) fn check_ident(name: &str, what: &'static str) -> Result<(), EventError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(EventError::InvalidName {
            name: name.chars().take(63).collect(),
            reason: what,
        })
    }
}
