use crate::context::TenantStatus;
use crate::error::{Error, ErrorKind};
use crate::identity::AuthError;

/// A tenant source named a tenant in an unacceptable form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tenant reference in the {source_name}: {reason}")]
pub struct ResolveError {
    /// The resolver's source name (`"host"`, `"header"`, …).
    pub source_name: &'static str,
    /// What is wrong.
    pub reason: &'static str,
}

impl ResolveError {
    pub(crate) fn invalid(source_name: &'static str, reason: &'static str) -> Self {
        Self {
            source_name,
            reason,
        }
    }
}

/// Why a request was not given a tenant context. Each variant maps to an
/// HTTP status through [`RequestRejection::status`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestRejection {
    /// Authentication failed (401).
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    /// A source named a tenant in an invalid form (400).
    #[error(transparent)]
    InvalidTenantReference(#[from] ResolveError),
    /// No source named a tenant (400).
    #[error("the request names no tenant (looked at: {tried})")]
    NoTenant {
        /// The sources consulted, comma-separated.
        tried: String,
    },
    /// The named tenant does not exist (404).
    #[error("no such tenant (named by the {source_name})")]
    UnknownTenant {
        /// The source that named it.
        source_name: &'static str,
    },
    /// Two sources named different tenants (403).
    #[error("the {first} and the {second} name different tenants")]
    Conflict {
        /// The first source.
        first: &'static str,
        /// The disagreeing source.
        second: &'static str,
    },
    /// The tenant exists but is not active (403).
    #[error("tenant is {status} and cannot be served")]
    TenantNotServable {
        /// Its status.
        status: TenantStatus,
    },
    /// The tenant store could not be consulted (503 when retryable).
    #[error("tenant lookup failed: {0}")]
    Lookup(Error),
}

impl RequestRejection {
    /// The error kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RequestRejection::Unauthenticated(e) => e.kind(),
            RequestRejection::InvalidTenantReference(_) | RequestRejection::NoTenant { .. } => {
                ErrorKind::InvalidInput
            }
            RequestRejection::UnknownTenant { .. } => ErrorKind::NotFound,
            RequestRejection::Conflict { .. } | RequestRejection::TenantNotServable { .. } => {
                ErrorKind::Forbidden
            }
            RequestRejection::Lookup(e) => e.kind(),
        }
    }

    /// The HTTP status for this rejection.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            RequestRejection::Unauthenticated(AuthError::InvalidKey { .. })
            | RequestRejection::Unauthenticated(AuthError::Signing { .. }) => {
                S::INTERNAL_SERVER_ERROR
            }
            RequestRejection::Unauthenticated(_) => S::UNAUTHORIZED,
            RequestRejection::InvalidTenantReference(_) | RequestRejection::NoTenant { .. } => {
                S::BAD_REQUEST
            }
            RequestRejection::UnknownTenant { .. } => S::NOT_FOUND,
            RequestRejection::Conflict { .. } | RequestRejection::TenantNotServable { .. } => {
                S::FORBIDDEN
            }
            RequestRejection::Lookup(e) if e.is_retryable() => S::SERVICE_UNAVAILABLE,
            RequestRejection::Lookup(_) => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code for JSON bodies.
    pub fn code(&self) -> &'static str {
        match self {
            RequestRejection::Unauthenticated(_) => "unauthenticated",
            RequestRejection::InvalidTenantReference(_) => "invalid_tenant_reference",
            RequestRejection::NoTenant { .. } => "no_tenant",
            RequestRejection::UnknownTenant { .. } => "unknown_tenant",
            RequestRejection::Conflict { .. } => "tenant_conflict",
            RequestRejection::TenantNotServable { .. } => "tenant_not_servable",
            RequestRejection::Lookup(_) => "tenant_lookup_failed",
        }
    }
}
