//! Every crate's error as an HTTP response: RFC 9457 problem details
//! (`application/problem+json`) chosen from the error's [`ErrorKind`], so
//! handlers return `Result<_, Problem>` and use `?` on any of them.

use std::error::Error as StdError;
use std::fmt;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use saas_core::ErrorKind;

pub use saas_core::http::PROBLEM_JSON;
use saas_core::http::problem_response;

/// An error that says what kind of failure it is — what decides its HTTP
/// status. Implemented for the error types of every saas-foundation crate.
pub trait ClassifiedError: StdError + Send + Sync + 'static {
    /// The kind of failure.
    fn error_kind(&self) -> ErrorKind;

    /// Whether the message may be shown to the client. A database's own
    /// message names tables, constraints and policies, so it is not shown
    /// even when its kind is a client error (a unique violation is a 409).
    fn message_is_public(&self) -> bool {
        true
    }
}

macro_rules! classified {
    ($($error:ty),* $(,)?) => {
        $(impl ClassifiedError for $error {
            fn error_kind(&self) -> ErrorKind {
                self.kind()
            }
        })*
    };
}

classified!(
    saas_core::Error,
    saas_core::AuthError,
    saas_core::SlugError,
    saas_core::RequestRejection,
    saas_billing::BillingError,
    saas_events::EventError,
);

impl ClassifiedError for saas_tenancy::TenancyError {
    fn error_kind(&self) -> ErrorKind {
        self.kind()
    }

    fn message_is_public(&self) -> bool {
        !self.is_from_database()
    }
}

/// A query's own error, classified as the tenancy classifies it; its
/// message (which names tables and constraints) is never shown.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl ClassifiedError for sqlx::Error {
    fn error_kind(&self) -> ErrorKind {
        saas_tenancy::database_kind(self)
    }

    fn message_is_public(&self) -> bool {
        false
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl ClassifiedError for crate::signup::SignUpError {
    fn error_kind(&self) -> ErrorKind {
        self.kind()
    }

    fn message_is_public(&self) -> bool {
        match self {
            crate::signup::SignUpError::Tenancy(e) => !e.is_from_database(),
            _ => true,
        }
    }
}

/// An HTTP error response in the RFC 9457 problem-details format.
///
/// Built from any [`ClassifiedError`] (`?` converts) or by hand. The status
/// follows the error's [`ErrorKind`]; the body carries `type`
/// (`about:blank`), `title` (the status's reason), `status`, `detail` and
/// `code` (the kind, in snake case, for clients to branch on). Built from
/// an error, a server-side failure (500, 503, 504) never shows its cause —
/// a database error may name tables or hosts — and is logged at `error`
/// with it instead; a database's refusal (a unique or foreign key
/// violation, a privilege) shows only its kind and is logged at `warn`.
/// [`Problem::new`] shows the detail it is given.
///
/// ```
/// use axum::response::IntoResponse;
/// use saas_core::ErrorKind;
/// use saas_foundation::problem::Problem;
/// use saas_tenancy::TenancyError;
///
/// let missing = Problem::from_error(&TenancyError::InvalidInput("the slug is empty".into()));
/// assert_eq!(missing.status(), http::StatusCode::BAD_REQUEST);
/// assert_eq!(missing.kind(), ErrorKind::InvalidInput);
///
/// let response = Problem::new(ErrorKind::NotFound, "no such project").into_response();
/// assert_eq!(response.status(), http::StatusCode::NOT_FOUND);
/// assert_eq!(response.headers()["content-type"], "application/problem+json");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    kind: ErrorKind,
    detail: String,
    code: Option<String>,
}

impl Problem {
    /// A problem of `kind` explaining `detail` to the client.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            detail: detail.into(),
            code: None,
        }
    }

    /// Answers with the application's own `code` (`plan_limit`, say)
    /// instead of the kind's, for clients that branch on a finer reason;
    /// the status still follows the kind.
    ///
    /// ```
    /// use saas_core::ErrorKind;
    /// use saas_foundation::problem::Problem;
    ///
    /// let problem = Problem::new(ErrorKind::Forbidden, "the free plan allows 3 projects")
    ///     .with_code("plan_limit");
    /// assert_eq!(problem.code(), "plan_limit");
    /// ```
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The `code` member: the application's, or the kind's.
    pub fn code(&self) -> &str {
        self.code.as_deref().unwrap_or(self.kind.as_str())
    }

    /// The problem for `error`: its kind, and its message as the detail
    /// unless the failure is on the server's side.
    pub fn from_error<E: ClassifiedError + ?Sized>(error: &E) -> Self {
        let kind = error.error_kind();
        if hides_cause(kind) {
            tracing::error!(error = %error, source = ?error.source(), "request failed");
            return Problem::new(kind, server_side_detail(kind));
        }
        if !error.message_is_public() {
            // A refusal by the database (a constraint, a privilege): the
            // client learns the kind, the log the details.
            tracing::warn!(error = %error, "request refused by the database");
            return Problem::new(kind, client_side_detail(kind));
        }
        Problem::new(kind, error.to_string())
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        status_of(self.kind)
    }

    /// What the client is told.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status(), self.kind, self.detail)
    }
}

impl<E: ClassifiedError> From<E> for Problem {
    fn from(error: E) -> Self {
        Problem::from_error(&error)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = problem_response(self.status(), self.code(), &self.detail);
        if self.kind.is_retryable() {
            // Worth another try soon; a client may wait longer.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The status of each kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
        // A kind added later is a server-side failure until mapped.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn hides_cause(kind: ErrorKind) -> bool {
    status_of(kind).is_server_error() && kind != ErrorKind::Unsupported
}

fn client_side_detail(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::AlreadyExists => "it exists already",
        ErrorKind::Conflict => "it conflicts with the current state; reload and retry",
        ErrorKind::Forbidden => "this is not allowed",
        ErrorKind::NotFound => "it does not exist",
        _ => "the request breaks a rule of the data; check it and retry",
    }
}

fn server_side_detail(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Unavailable => "a service this request needs is unavailable; try again",
        ErrorKind::Timeout => "the request took too long; try again",
        _ => "the server failed to handle the request; it has been logged",
    }
}
