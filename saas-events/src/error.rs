//! The crate's one error type.

use std::time::Duration;

use saas_core::ErrorKind;

/// A boxed error from a handler or a backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in `saas-events`.
///
/// Variants are named by meaning; [`EventError::kind`] maps each to the
/// workspace-wide [`ErrorKind`] and [`EventError::is_retryable`] says whether
/// the same call (or the same event, for a handler) may succeed later.
///
/// ```
/// use saas_events::{Event, EventError};
/// use saas_core::ErrorKind;
///
/// let err = Event::from_json_slice(br#"{"specversion":"1.0","id":"1","source":"/x"}"#)
///     .unwrap_err();
/// assert!(matches!(err, EventError::MissingAttribute { attribute: "type" }));
/// assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// assert!(!err.is_retryable());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// A required CloudEvents attribute (`id`, `source`, `specversion`,
    /// `type`) is absent or empty.
    #[error("missing required CloudEvents attribute `{attribute}` (it must be a non-empty string)")]
    MissingAttribute {
        /// The attribute name.
        attribute: &'static str,
    },

    /// An attribute is present but breaks a rule of the CloudEvents spec or
    /// of this crate (a bad RFC 3339 time, a tenant id that is not a UUID…).
    #[error("invalid CloudEvents attribute `{attribute}`: {reason}")]
    InvalidAttribute {
        /// The attribute name.
        attribute: String,
        /// Which rule it breaks.
        reason: String,
    },

    /// An extension attribute name is not lowercase ASCII letters and digits,
    /// is too long, or is reserved.
    #[error("invalid extension attribute name `{name}`: {reason}")]
    InvalidExtensionName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The event claims a CloudEvents version other than 1.0.
    #[error("unsupported CloudEvents specversion `{found}`; only \"1.0\" is supported")]
    UnsupportedSpecVersion {
        /// The version found.
        found: String,
    },

    /// The event is not valid CloudEvents JSON (not an object, wrong types…).
    #[error("malformed CloudEvents JSON: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },

    /// The payload is larger than the configured limit.
    #[error("event payload is {size} bytes, over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Payload size in bytes (JSON-encoded `data`, or raw binary data).
        size: usize,
        /// The limit in force.
        limit: usize,
    },

    /// A payload could not be encoded to JSON.
    #[error("could not encode the event payload as JSON: {source}")]
    Encode {
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// The payload could not be decoded into the requested type.
    #[error("could not decode the event payload: {reason}")]
    Decode {
        /// What went wrong.
        reason: String,
    },

    /// The event carries no `data`.
    #[error("the event has no data")]
    NoData,

    /// A topic or consumer group name breaks the naming rules.
    #[error("invalid name `{name}`: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The publisher, subscriber or subscription has been closed.
    #[error("the event bus or subscription is closed")]
    Closed,

    /// The backend does not support this operation or option.
    #[error("unsupported by this backend: {operation}")]
    Unsupported {
        /// What was asked for.
        operation: &'static str,
    },

    /// A handler failed; the event may succeed on a later attempt.
    #[error("handler failed: {source}")]
    Handler {
        /// The handler's error.
        #[source]
        source: BoxError,
    },

    /// A handler refused the event for good (retrying cannot help); the
    /// dead-letter middleware sends it to the dead-letter topic at once.
    #[error("event rejected: {reason}")]
    Rejected {
        /// Why.
        reason: String,
    },

    /// No handler is registered for the event's type.
    #[error("no handler for event type `{event_type}`")]
    NoHandler {
        /// The event type.
        event_type: String,
    },

    /// A handler or backend call ran out of time.
    #[error("timed out after {after:?}")]
    Timeout {
        /// The time limit.
        after: Duration,
    },

    /// A backend (broker, database) failed.
    #[error("{backend} backend error: {source}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// Whether the same call may succeed later.
        retryable: bool,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl EventError {
    /// A retryable handler failure wrapping `source`.
    pub fn handler(source: impl Into<BoxError>) -> Self {
        EventError::Handler {
            source: source.into(),
        }
    }

    /// A permanent rejection of the event (not retried; dead-lettered at once).
    pub fn rejected(reason: impl Into<String>) -> Self {
        EventError::Rejected {
            reason: reason.into(),
        }
    }

    /// The error of a tower service in the handler pipeline as an
    /// `EventError`: an `EventError` (boxed by a layer) is itself; tower's
    /// timeout `Elapsed` is [`EventError::Timeout`] after `ran_for` (how
    /// long the call had run; the layer does not say its limit);
    /// `load_shed`'s `Overloaded` and anything else is a retryable
    /// [`EventError::Handler`].
    pub(crate) fn from_service_error(error: BoxError, ran_for: Duration) -> Self {
        let error = match error.downcast::<EventError>() {
            Ok(error) => return *error,
            Err(error) => error,
        };
        if error.is::<tower::timeout::error::Elapsed>() {
            return EventError::Timeout { after: ran_for };
        }
        // An overloaded service (`load_shed`) may take the event later, so
        // it joins every other foreign error as a retryable handler
        // failure, keeping the original as the source.
        EventError::Handler { source: error }
    }

    pub(crate) fn invalid(attribute: impl Into<String>, reason: impl Into<String>) -> Self {
        EventError::InvalidAttribute {
            attribute: attribute.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        EventError::Malformed {
            reason: reason.into(),
        }
    }

    /// The workspace-wide kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EventError::MissingAttribute { .. }
            | EventError::InvalidAttribute { .. }
            | EventError::InvalidExtensionName { .. }
            | EventError::UnsupportedSpecVersion { .. }
            | EventError::Malformed { .. }
            | EventError::PayloadTooLarge { .. }
            | EventError::Decode { .. }
            | EventError::NoData
            | EventError::InvalidName { .. }
            | EventError::Rejected { .. }
            | EventError::NoHandler { .. } => ErrorKind::InvalidInput,
            EventError::Encode { .. } => ErrorKind::InvalidInput,
            EventError::Closed => ErrorKind::Unavailable,
            EventError::Unsupported { .. } => ErrorKind::Unsupported,
            EventError::Handler { .. } => ErrorKind::Unavailable,
            EventError::Timeout { .. } => ErrorKind::Timeout,
            EventError::Backend { retryable, .. } => {
                if *retryable {
                    ErrorKind::Unavailable
                } else {
                    ErrorKind::Internal
                }
            }
        }
    }

    /// Whether the same call — or, for handler errors, the same event — may
    /// succeed later. Handler failures, timeouts and retryable backend errors
    /// are; invalid input, rejections and a closed bus are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            EventError::Closed => false,
            other => other.kind().is_retryable(),
        }
    }
}
