use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::sanitize;
use super::{AuthError, ClaimNames, KeySet, VerifiedToken};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::id::TenantKey;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Verifies JWTs against a [`KeySet`] and turns their claims into a
/// [`VerifiedToken`].
///
/// Checks, in order, each failing with its own [`AuthError`]:
/// structure and size → key by `kid` → the header's `alg` equals the
/// key's algorithm → signature → `exp` (required) → `nbf` (if present)
/// → issuer → audience → `sub` → tenant claim. Time is read from the
/// configured [`Clock`], with a leeway (default 30 s) for clock skew.
///
/// `exp`, `nbf` and `iat` are NumericDates (RFC 7519 §2): non-negative
/// seconds since the epoch, integer or fractional (`1767225600.5`, as
/// Python's `time.time() + n` writes), a fraction kept to the microsecond.
/// A token is expired once `now >= exp + leeway` and not yet valid while
/// `now + leeway < nbf`. Any other value there is refused: a string,
/// boolean, null or negative number as [`AuthError::InvalidClaim`]; an
/// array or object in `exp`/`nbf` as [`AuthError::Malformed`], because
/// jsonwebtoken's own parse of those two claims rejects the payload first.
///
/// ```
/// use saas_core::{Algorithm, JwtVerifier, KeySet, SigningKey, TokenClaims, TokenIssuer,
///                 VerificationKey, TenantKey};
///
/// let secret = b"an-hs256-secret-of-at-least-32-bytes!";
/// let issuer = TokenIssuer::builder(SigningKey::hmac(Some("k1"), Algorithm::HS256, secret)?)
///     .issuer("https://auth.example.com")
///     .audience("api")
///     .build()?;
/// let verifier = JwtVerifier::builder(
///         KeySet::new().with(VerificationKey::hmac(Some("k1"), Algorithm::HS256, secret)?)?)
///     .issuer("https://auth.example.com")
///     .audience("api")
///     .build()?;
///
/// let token = issuer.issue(&TokenClaims::new("user-1").tenant(TenantKey::parse("acme")?))?;
/// let verified = verifier.verify(&token)?;
/// assert_eq!(verified.subject, "user-1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    keys: RwLock<Arc<KeySet>>,
    issuer: Option<String>,
    audiences: BTreeSet<String>,
    leeway: Duration,
    claim_names: ClaimNames,
    require_tenant: bool,
    clock: SharedClock,
}

/// Builds a [`JwtVerifier`].
#[derive(Debug)]
pub struct JwtVerifierBuilder {
    keys: KeySet,
    issuer: Option<String>,
    audiences: BTreeSet<String>,
    leeway: Duration,
    claim_names: ClaimNames,
    require_tenant: bool,
    clock: SharedClock,
}

impl JwtVerifier {
    /// Starts a builder that accepts tokens signed by `keys`.
    pub fn builder(keys: KeySet) -> JwtVerifierBuilder {
        JwtVerifierBuilder {
            keys,
            issuer: None,
            audiences: BTreeSet::new(),
            leeway: Duration::seconds(30),
            claim_names: ClaimNames::default(),
            require_tenant: true,
            clock: Arc::new(SystemClock),
        }
    }

    /// Replaces the key set (key rotation, a refreshed JWKS). Tokens
    /// verified afterwards use the new set.
    pub fn replace_keys(&self, keys: KeySet) -> Result<(), AuthError> {
        if keys.is_empty() {
            return Err(empty_keys());
        }
        *self
            .inner
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        Ok(())
    }

    /// The claim names this verifier reads.
    pub fn claim_names(&self) -> &ClaimNames {
        &self.inner.claim_names
    }

    /// Verifies `token` (the compact JWS, without a `Bearer ` prefix).
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        let inner = &*self.inner;
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed {
                reason: "token is longer than 8192 bytes",
            });
        }
        let header = parse_header(token)?;
        let keys = Arc::clone(&inner.keys.read().unwrap_or_else(PoisonError::into_inner));
        let key = keys.select(header.kid.as_deref())?;
        if header.alg != key.algorithm().as_str() {
            return Err(AuthError::DisallowedAlgorithm {
                found: sanitize(&header.alg),
                expected: key.algorithm(),
            });
        }

        // jsonwebtoken checks the signature only; every claim is checked
        // below against the injected clock, with typed errors.
        let mut validation = jsonwebtoken::Validation::new(key.algorithm().to_jwt());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, key.decoding_key(), &validation)
                .map_err(map_jwt_error)?;
        let claims = data.claims;

        let now = inner.clock.now();
        let expires_at = time_claim(&claims, "exp")?.ok_or_else(|| missing("exp"))?;
        if now >= expires_at + inner.leeway {
            return Err(AuthError::Expired {
                expired_at: expires_at,
            });
        }
        if let Some(valid_from) = time_claim(&claims, "nbf")?
            && now + inner.leeway < valid_from
        {
            return Err(AuthError::NotYetValid { valid_from });
        }
        let issued_at = time_claim(&claims, "iat")?;

        if let Some(expected) = &inner.issuer {
            match claims.get("iss") {
                None => return Err(missing("iss")),
                Some(Value::String(iss)) if iss == expected => {}
                Some(_) => return Err(AuthError::WrongIssuer),
            }
        }
        if !inner.audiences.is_empty() {
            check_audience(&claims, &inner.audiences)?;
        }

        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(invalid("sub", "must be a non-empty string")),
            None => return Err(missing("sub")),
        };

        let names = &inner.claim_names;
        let tenant = match claims.get(&names.tenant) {
            None | Some(Value::Null) => {
                if inner.require_tenant {
                    return Err(AuthError::MissingTenantClaim {
                        claim: names.tenant.clone(),
                    });
                }
                None
            }
            Some(Value::String(s)) => Some(TenantKey::parse(s).map_err(|_| {
                invalid(&names.tenant, "must be a tenant id (UUID) or a valid slug")
            })?),
            Some(_) => return Err(invalid(&names.tenant, "must be a string")),
        };
        let roles = string_set(&claims, &names.roles)?;
        let scopes = string_set(&claims, &names.scopes)?;

        Ok(VerifiedToken {
            subject,
            tenant,
            roles,
            scopes,
            expires_at,
            issued_at,
            kid: key.kid().map(str::to_owned),
            claims,
        })
    }
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self
            .inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("JwtVerifier")
            .field("keys", &**keys)
            .field("issuer", &self.inner.issuer)
            .field("audiences", &self.inner.audiences)
            .field("leeway", &self.inner.leeway)
            .field("claim_names", &self.inner.claim_names)
            .field("require_tenant", &self.inner.require_tenant)
            .finish()
    }
}

impl JwtVerifierBuilder {
    /// Requires `iss` to equal `issuer`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Accepts tokens whose `aud` contains `audience`; call again to accept
    /// several. With none configured, `aud` is not checked.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.insert(audience.into());
        self
    }

    /// Clock-skew allowance for `exp` and `nbf` (0 to 5 minutes).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The names of the tenant, roles and scopes claims.
    pub fn claim_names(mut self, names: ClaimNames) -> Self {
        self.claim_names = names;
        self
    }

    /// Whether a token must name a tenant (default `true`). Turn it off
    /// for tokens that are resolved to a tenant by other means (host,
    /// header); the conflict rule still applies when a token does name one.
    pub fn require_tenant(mut self, required: bool) -> Self {
        self.require_tenant = required;
        self
    }

    /// The clock to check `exp`/`nbf` against (default: system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<JwtVerifier, AuthError> {
        super::install_crypto_provider();
        if self.keys.is_empty() {
            return Err(empty_keys());
        }
        if self.leeway < Duration::zero() || self.leeway > Duration::minutes(5) {
            return Err(AuthError::InvalidKey {
                reason: "leeway must be between 0 and 5 minutes".to_owned(),
            });
        }
        let n = &self.claim_names;
        if n.tenant.is_empty() || n.roles.is_empty() || n.scopes.is_empty() {
            return Err(AuthError::InvalidKey {
                reason: "claim names must not be empty".to_owned(),
            });
        }
        Ok(JwtVerifier {
            inner: Arc::new(Inner {
                keys: RwLock::new(Arc::new(self.keys)),
                issuer: self.issuer,
                audiences: self.audiences,
                leeway: self.leeway,
                claim_names: self.claim_names,
                require_tenant: self.require_tenant,
                clock: self.clock,
            }),
        })
    }
}

fn empty_keys() -> AuthError {
    AuthError::InvalidKey {
        reason: "the key set is empty; add at least one verification key".to_owned(),
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

fn parse_header(token: &str) -> Result<Header, AuthError> {
    let mut parts = token.split('.');
    // An empty signature (as in `alg: none` tokens) is left to the
    // algorithm and signature checks, which report it precisely.
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed {
            reason: "a JWT has exactly three dot-separated segments",
        });
    };
    if header.is_empty() || payload.is_empty() {
        return Err(AuthError::Malformed {
            reason: "empty header or payload segment",
        });
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed {
            reason: "header is not base64url",
        })?;
    let header: Header = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed {
        reason: "header is not a JSON object with a string \"alg\"",
    })?;
    if header.crit.is_some() {
        return Err(AuthError::Malformed {
            reason: "header has critical extensions (\"crit\"), which are not supported",
        });
    }
    Ok(header)
}

fn map_jwt_error(err: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match err.kind() {
        K::InvalidSignature => AuthError::BadSignature,
        K::InvalidAlgorithm | K::InvalidAlgorithmName => AuthError::Malformed {
            reason: "token algorithm does not match the key",
        },
        K::Base64(_) => AuthError::Malformed {
            reason: "a segment is not base64url",
        },
        K::Json(_) => AuthError::Malformed {
            reason: "claims are not a JSON object",
        },
        K::Utf8(_) => AuthError::Malformed {
            reason: "a segment is not UTF-8",
        },
        _ => AuthError::Malformed {
            reason: "token could not be decoded",
        },
    }
}

fn missing(claim: &str) -> AuthError {
    AuthError::MissingClaim {
        claim: claim.to_owned(),
    }
}

fn invalid(claim: &str, reason: &'static str) -> AuthError {
    AuthError::InvalidClaim {
        claim: claim.to_owned(),
        reason,
    }
}

fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<DateTime<Utc>>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => numeric_date(value)
            .map(Some)
            .map_err(|reason| invalid(name, reason)),
    }
}

/// Reads a NumericDate (RFC 7519 §2): seconds since the epoch, an integer
/// or not (`time.time() + 3600` writes `1767225600.5`). A fraction is kept,
/// rounded to the microsecond (about what an `f64` holds at today's
/// timestamps), so `exp: 100.5` has expired at 100.5 s and not at 100.4 s.
/// Negative values, non-numbers and dates chrono cannot represent are
/// refused.
fn numeric_date(value: &Value) -> Result<DateTime<Utc>, &'static str> {
    const NOT_A_DATE: &str = "must be a non-negative number of seconds since the epoch";
    const OUT_OF_RANGE: &str = "is out of range";
    let Value::Number(number) = value else {
        return Err(NOT_A_DATE);
    };
    if let Some(secs) = number.as_i64() {
        if secs < 0 {
            return Err(NOT_A_DATE);
        }
        return DateTime::from_timestamp(secs, 0).ok_or(OUT_OF_RANGE);
    }
    if number.is_u64() {
        // Above i64::MAX: far beyond any date chrono represents.
        return Err(OUT_OF_RANGE);
    }
    let secs = number.as_f64().ok_or(NOT_A_DATE)?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(NOT_A_DATE);
    }
    // 9e12 s lies past chrono's last date (year 262143) and keeps
    // `secs * 1e6` below i64::MAX, so the cast below never saturates.
    if secs >= 9e12 {
        return Err(OUT_OF_RANGE);
    }
    let micros = (secs * 1e6).round() as i64;
    DateTime::from_timestamp_micros(micros).ok_or(OUT_OF_RANGE)
}

fn check_audience(
    claims: &Map<String, Value>,
    accepted: &BTreeSet<String>,
) -> Result<(), AuthError> {
    let matches = match claims.get("aud") {
        None => return Err(missing("aud")),
        Some(Value::String(aud)) => accepted.contains(aud),
        Some(Value::Array(auds)) => auds
            .iter()
            .any(|a| a.as_str().is_some_and(|a| accepted.contains(a))),
        Some(_) => return Err(invalid("aud", "must be a string or an array of strings")),
    };
    if matches {
        Ok(())
    } else {
        Err(AuthError::WrongAudience)
    }
}

fn string_set(claims: &Map<String, Value>, name: &str) -> Result<BTreeSet<String>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(BTreeSet::new()),
        Some(Value::String(s)) => Ok(s.split_whitespace().map(str::to_owned).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(name, "must contain only strings"))
            })
            .collect(),
        Some(_) => Err(invalid(name, "must be a string or an array of strings")),
    }
}
