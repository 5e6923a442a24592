//! Errors as RFC 9457 problem+json responses: a status, a stable `code`
//! and a `detail` that says what to do.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use saas_billing::BillingError;
use saas_events::EventError;
use saas_foundation::problem::Problem;
use saas_foundation::signup::SignUpError;
use saas_tenancy::TenancyError;

/// An error a handler answers with.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub(crate) fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // RFC 9457 problem details, as the tenant layer's rejections.
        saas_core::http::problem_response(self.status, self.code, &self.message)
    }
}

/// Every crate's error by its kind (saas-foundation's problem mapping):
/// the status and code follow the kind, and a server-side failure's cause
/// goes to the log, not to the client.
impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        Self::new(p.status(), p.kind().as_str(), p.detail())
    }
}

macro_rules! from_classified {
    ($($error:ty),*) => {
        $(impl From<$error> for ApiError {
            fn from(e: $error) -> Self {
                Problem::from_error(&e).into()
            }
        })*
    };
}
from_classified!(TenancyError, BillingError, EventError, SignUpError);

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        TenancyError::from(e).into()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}
