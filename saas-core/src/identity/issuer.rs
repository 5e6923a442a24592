use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Duration;
use serde_json::{Map, Value};

use super::{AuthError, ClaimNames, SigningKey, TokenClaims};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::id::TenantKey;

/// Mints JWTs: for tests, examples, and hosts that are their own identity
/// provider.
///
/// Every token carries `sub`, `iat`, `nbf`, `exp` (now + ttl, default 15
/// minutes), a random `jti`, the configured `iss`/`aud`, and the tenant,
/// roles and scopes under the configured [`ClaimNames`]. The header
/// carries the key's `kid` and algorithm.
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    key: SigningKey,
    issuer: Option<String>,
    audiences: BTreeSet<String>,
    ttl: Duration,
    claim_names: ClaimNames,
    clock: SharedClock,
}

/// Builds a [`TokenIssuer`].
#[derive(Debug)]
pub struct TokenIssuerBuilder {
    inner: TokenIssuer,
}

impl TokenIssuer {
    /// Starts a builder that signs with `key`.
    pub fn builder(key: SigningKey) -> TokenIssuerBuilder {
        TokenIssuerBuilder {
            inner: TokenIssuer {
                key,
                issuer: None,
                audiences: BTreeSet::new(),
                ttl: Duration::minutes(15),
                claim_names: ClaimNames::default(),
                clock: Arc::new(SystemClock),
            },
        }
    }

    /// Signs a token for `claims`, valid for the configured ttl.
    pub fn issue(&self, claims: &TokenClaims) -> Result<String, AuthError> {
        self.issue_with_ttl(claims, self.ttl)
    }

    /// Signs a token valid for `ttl` from now (may be negative, to make
    /// expired tokens in tests).
    pub fn issue_with_ttl(&self, claims: &TokenClaims, ttl: Duration) -> Result<String, AuthError> {
        if claims.subject.is_empty() {
            return Err(AuthError::Signing {
                reason: "the subject must not be empty".to_owned(),
            });
        }
        let now = self.clock.now();
        let mut body: Map<String, Value> = claims.extra.clone();
        body.insert("sub".into(), Value::from(claims.subject.clone()));
        body.insert("iat".into(), Value::from(now.timestamp()));
        body.insert("nbf".into(), Value::from(now.timestamp()));
        body.insert("exp".into(), Value::from((now + ttl).timestamp()));
        body.insert("jti".into(), Value::from(uuid::Uuid::now_v7().to_string()));
        if let Some(iss) = &self.issuer {
            body.insert("iss".into(), Value::from(iss.clone()));
        }
        match self.audiences.len() {
            0 => {}
            1 => {
                if let Some(aud) = self.audiences.first() {
                    body.insert("aud".into(), Value::from(aud.clone()));
                }
            }
            _ => {
                body.insert(
                    "aud".into(),
                    Value::from(self.audiences.iter().cloned().collect::<Vec<_>>()),
                );
            }
        }
        let names = &self.claim_names;
        if let Some(tenant) = &claims.tenant {
            let value = match tenant {
                TenantKey::Id(id) => id.to_string(),
                TenantKey::Slug(slug) => slug.to_string(),
            };
            body.insert(names.tenant.clone(), Value::from(value));
        }
        if !claims.roles.is_empty() {
            body.insert(
                names.roles.clone(),
                Value::from(claims.roles.iter().cloned().collect::<Vec<_>>()),
            );
        }
        if !claims.scopes.is_empty() {
            let joined = claims.scopes.iter().cloned().collect::<Vec<_>>().join(" ");
            body.insert(names.scopes.clone(), Value::from(joined));
        }

        let mut header = jsonwebtoken::Header::new(self.key.algorithm().to_jwt());
        header.kid = self.key.kid().map(str::to_owned);
        jsonwebtoken::encode(&header, &body, self.key.encoding_key()).map_err(|e| {
            AuthError::Signing {
                reason: format!("{:?}", e.kind()),
            }
        })
    }
}

impl TokenIssuerBuilder {
    /// Sets `iss`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.inner.issuer = Some(issuer.into());
        self
    }

    /// Adds an `aud` entry.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.inner.audiences.insert(audience.into());
        self
    }

    /// Token lifetime (default 15 minutes; must be positive).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.inner.ttl = ttl;
        self
    }

    /// Claim names (must match the verifier's).
    pub fn claim_names(mut self, names: ClaimNames) -> Self {
        self.inner.claim_names = names;
        self
    }

    /// The clock for `iat`/`nbf`/`exp`.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.inner.clock = clock;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<TokenIssuer, AuthError> {
        super::install_crypto_provider();
        if self.inner.ttl <= Duration::zero() {
            return Err(AuthError::InvalidKey {
                reason: "token ttl must be positive".to_owned(),
            });
        }
        Ok(self.inner)
    }
}
