//! Error kinds and retryability.

use std::time::Duration;

use saas_core::ErrorKind;
use saas_events::EventError;

#[test]
fn kinds_and_retryability_follow_meaning() {
    let cases = [
        (
            EventError::MissingAttribute { attribute: "id" },
            ErrorKind::InvalidInput,
            false,
        ),
        (
            EventError::PayloadTooLarge { size: 2, limit: 1 },
            ErrorKind::InvalidInput,
            false,
        ),
        (
            EventError::rejected("bad order"),
            ErrorKind::InvalidInput,
            false,
        ),
        (
            EventError::NoHandler {
                event_type: "x".into(),
            },
            ErrorKind::InvalidInput,
            false,
        ),
        (EventError::handler("db down"), ErrorKind::Unavailable, true),
        (
            EventError::Timeout {
                after: Duration::from_secs(1),
            },
            ErrorKind::Timeout,
            true,
        ),
        (EventError::Closed, ErrorKind::Unavailable, false),
        (
            EventError::Unsupported {
                operation: "groups",
            },
            ErrorKind::Unsupported,
            false,
        ),
    ];
    for (error, kind, retryable) in cases {
        assert_eq!(error.kind(), kind, "{error}");
        assert_eq!(error.is_retryable(), retryable, "{error}");
    }
}

#[test]
fn payload_too_large_says_both_numbers() {
    let error = EventError::PayloadTooLarge {
        size: 1_048_577,
        limit: 1_048_576,
    };
    assert_eq!(
        error.to_string(),
        "event payload is 1048577 bytes, over the limit of 1048576 bytes"
    );
}
