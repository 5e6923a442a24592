use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::context::Principal;
use crate::id::TenantKey;

/// Names of the non-registered claims the library reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    /// The tenant claim (default `"tenant_id"`): a tenant id or slug.
    pub tenant: String,
    /// The roles claim (default `"roles"`): an array of strings or a
    /// space-separated string.
    pub roles: String,
    /// The scopes claim (default `"scope"`): a space-separated string
    /// (RFC 8693) or an array of strings.
    pub scopes: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            tenant: "tenant_id".to_owned(),
            roles: "roles".to_owned(),
            scopes: "scope".to_owned(),
        }
    }
}

/// The claims of a token that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The `sub` claim.
    pub subject: String,
    /// The tenant the token is for, if it names one.
    pub tenant: Option<TenantKey>,
    /// Roles from the roles claim.
    pub roles: BTreeSet<String>,
    /// Scopes from the scopes claim.
    pub scopes: BTreeSet<String>,
    /// `exp`.
    pub expires_at: DateTime<Utc>,
    /// `iat`, if present.
    pub issued_at: Option<DateTime<Utc>>,
    /// The `kid` of the key that verified it.
    pub kid: Option<String>,
    /// Every claim, for host-specific ones.
    pub claims: Map<String, Value>,
}

impl VerifiedToken {
    /// The caller as a [`Principal`].
    pub fn principal(&self) -> Principal {
        Principal {
            subject: self.subject.clone(),
            roles: self.roles.clone(),
            scopes: self.scopes.clone(),
        }
    }
}

/// What to put in a token being issued.
///
/// ```
/// use saas_core::{TenantKey, TenantSlug, TokenClaims};
///
/// let claims = TokenClaims::new("user-1")
///     .tenant(TenantKey::Slug(TenantSlug::parse("acme")?))
///     .role("admin")
///     .scope("projects:write");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct TokenClaims {
    pub(crate) subject: String,
    pub(crate) tenant: Option<TenantKey>,
    pub(crate) roles: BTreeSet<String>,
    pub(crate) scopes: BTreeSet<String>,
    pub(crate) extra: Map<String, Value>,
}

impl TokenClaims {
    /// Claims for subject `sub`.
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            ..Self::default()
        }
    }

    /// The tenant the token is for.
    pub fn tenant(mut self, tenant: TenantKey) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// Adds a role.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.roles.insert(role.into());
        self
    }

    /// Adds a scope.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.insert(scope.into());
        self
    }

    /// Adds a custom claim. Registered claims (`iss`, `sub`, `aud`, `exp`,
    /// `nbf`, `iat`, `jti`) and the configured tenant/roles/scopes claims
    /// are set by the issuer and override custom ones of the same name.
    pub fn claim(mut self, name: impl Into<String>, value: Value) -> Self {
        self.extra.insert(name.into(), value);
        self
    }
}
