//! The shared error vocabulary.
//!
//! Every crate of the workspace has its own `#[non_exhaustive]` error enum
//! whose variants are named by meaning. Each of them can say which
//! [`ErrorKind`] it belongs to, so hosts can map any of our errors to an
//! HTTP status or a retry decision without matching on every variant.

use std::borrow::Cow;
use std::fmt;

/// What kind of failure an error is, independent of where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The thing asked for does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// The request conflicts with the current state (a concurrent change,
    /// a duplicate key with another payload, an illegal state transition).
    Conflict,
    /// The input is malformed or breaks a rule; retrying it as is cannot work.
    InvalidInput,
    /// The caller could not be authenticated.
    Unauthorized,
    /// The caller is authenticated but not allowed to do this.
    Forbidden,
    /// A dependency (database, broker) is unreachable or overloaded; the
    /// same call may succeed later.
    Unavailable,
    /// An operation ran out of time; the same call may succeed later.
    Timeout,
    /// The backend does not support this operation.
    Unsupported,
    /// A bug or broken invariant inside the library or its configuration.
    Internal,
}

impl ErrorKind {
    /// Whether retrying the same call unchanged can succeed.
    ///
    /// ```
    /// use saas_core::ErrorKind;
    /// assert!(ErrorKind::Unavailable.is_retryable());
    /// assert!(!ErrorKind::InvalidInput.is_retryable());
    /// ```
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Timeout)
    }

    /// A short, stable, machine-readable name (`"not_found"`, …), used in
    /// JSON error bodies and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A general error carrying an [`ErrorKind`], a message for people and an
/// optional source.
///
/// Used where a trait must accept failures from many backends (for example
/// [`TenantLookup`](crate::TenantLookup)). Messages must say what went wrong
/// and what to do, and never contain secrets.
///
/// ```
/// use saas_core::{Error, ErrorKind};
///
/// let err = Error::new(ErrorKind::Unavailable, "catalog database unreachable");
/// assert!(err.is_retryable());
/// assert_eq!(err.to_string(), "unavailable: catalog database unreachable");
/// ```
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// Creates an error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether retrying the same call unchanged can succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
