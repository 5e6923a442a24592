use chrono::{DateTime, Utc};

use super::Algorithm;
use crate::error::ErrorKind;

/// Why a token was refused, or why a key or token could not be made.
///
/// Each variant names the check that failed. Messages never contain the
/// token, a key or a secret; untrusted strings from a token header (`kid`,
/// `alg`) are shortened to printable ASCII before they are reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credentials where they are required.
    #[error("no bearer token in the request; send `Authorization: Bearer <jwt>`")]
    MissingToken,
    /// Not a structurally valid JWT (segments, base64url, JSON).
    #[error("malformed token: {reason}")]
    Malformed {
        /// Which part is malformed.
        reason: &'static str,
    },
    /// The signature does not match the key the token claims.
    #[error("token signature is invalid for the selected key")]
    BadSignature,
    /// The token's `kid` names no configured key, or the token has no `kid`
    /// and several keys could apply.
    #[error("{}", match kid { Some(k) => format!("no verification key with kid {k:?}"), None => "token has no kid and the key set has several keys; add a kid header".to_owned() })]
    UnknownKey {
        /// The (sanitised) key id from the token header.
        kid: Option<String>,
    },
    /// The token's `alg` is not the algorithm pinned by the selected key
    /// (this is how `alg: none` and HS/RS confusion are refused).
    #[error("token algorithm {found:?} is not allowed; the key requires {expected}")]
    DisallowedAlgorithm {
        /// The (sanitised) algorithm named in the token header.
        found: String,
        /// The algorithm of the selected key.
        expected: Algorithm,
    },
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired at {expired_at}")]
    Expired {
        /// The token's `exp`.
        expired_at: DateTime<Utc>,
    },
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not valid before {valid_from}")]
    NotYetValid {
        /// The token's `nbf`.
        valid_from: DateTime<Utc>,
    },
    /// `iss` is not the configured issuer.
    #[error("token issuer is not the expected issuer")]
    WrongIssuer,
    /// No `aud` entry is among the configured audiences.
    #[error("token audience is not an accepted audience")]
    WrongAudience,
    /// A required claim is absent.
    #[error("token lacks the required claim {claim:?}")]
    MissingClaim {
        /// The claim name.
        claim: String,
    },
    /// A claim has the wrong type or an invalid value.
    #[error("token claim {claim:?} is invalid: {reason}")]
    InvalidClaim {
        /// The claim name.
        claim: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The tenant claim is required and absent.
    #[error("token lacks the tenant claim {claim:?}")]
    MissingTenantClaim {
        /// The configured tenant claim name.
        claim: String,
    },
    /// A key or verifier configuration is unusable (wrong PEM, too short a
    /// secret, duplicate kid…). Raised when building, never per request.
    #[error("invalid key configuration: {reason}")]
    InvalidKey {
        /// What is wrong.
        reason: String,
    },
    /// Signing a token failed.
    #[error("could not sign token: {reason}")]
    Signing {
        /// What went wrong.
        reason: String,
    },
}

impl AuthError {
    /// [`ErrorKind::Unauthorized`] for refused tokens;
    /// [`ErrorKind::InvalidInput`] for configuration and signing failures.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AuthError::InvalidKey { .. } | AuthError::Signing { .. } => ErrorKind::InvalidInput,
            _ => ErrorKind::Unauthorized,
        }
    }
}

/// Shortens an untrusted header value to at most 64 printable ASCII
/// characters so it can be logged and shown without echoing junk.
pub(crate) fn sanitize(value: &str) -> String {
    value
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}
