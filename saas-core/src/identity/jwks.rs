//! Keys from JWKs and JWKS documents (RFC 7517).
//!
//! A JWKS is usually fetched from an identity provider that publishes keys
//! for many consumers, so it may hold keys this library cannot use (a
//! P-521 curve, an encryption key, a new key type). Such keys are skipped
//! with a warning instead of failing the whole set; only a set left with
//! no usable key is an error.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use serde::Deserialize;
use serde_json::Value;

use super::error::sanitize;
use super::keys::{KeyFamily, check_secret};
use super::{Algorithm, AuthError, KeySet, VerificationKey};

/// How [`KeySet::from_jwks_json_with`] reads a JWKS.
///
/// ```
/// use saas_core::{Algorithm, JwksOptions};
///
/// // The provider publishes RSA keys without "alg" and signs with RS256.
/// let options = JwksOptions::new().with_default_algorithm(Algorithm::RS256);
/// assert_eq!(options.default_algorithm(), Some(Algorithm::RS256));
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct JwksOptions {
    default_algorithm: Option<Algorithm>,
}

impl JwksOptions {
    /// No default algorithm: keys without `alg` whose algorithm cannot be
    /// inferred are skipped.
    pub fn new() -> Self {
        Self::default()
    }

    /// The algorithm for keys without `alg` (optional in RFC 7517 §4.4)
    /// whose algorithm cannot be inferred from the key itself, such as RSA
    /// and `oct` keys. A key's own `alg`, or an unambiguous curve, always
    /// wins. A key the default does not fit (an EC key with an RS256
    /// default) is skipped.
    pub fn with_default_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.default_algorithm = Some(algorithm);
        self
    }

    /// The default algorithm, if one is set.
    pub fn default_algorithm(&self) -> Option<Algorithm> {
        self.default_algorithm
    }
}

impl VerificationKey {
    /// A key from a JWK. The algorithm comes from the JWK's `alg`; where it
    /// is absent it is inferred only when unambiguous (EC P-256 → ES256,
    /// P-384 → ES384, OKP Ed25519 → EdDSA). RSA and symmetric JWKs must
    /// carry `alg` (or be loaded through [`KeySet::from_jwks_json_with`]
    /// with a default algorithm). The key type and curve must fit the
    /// algorithm, and a symmetric (`oct`) secret must be at least as long
    /// as the hash output, as for [`VerificationKey::hmac`].
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, AuthError> {
        Self::from_jwk_with_default(jwk, None)
    }

    fn from_jwk_with_default(jwk: &Jwk, default: Option<Algorithm>) -> Result<Self, AuthError> {
        let algorithm = jwk_algorithm(jwk, default)?;
        let fits = match (&jwk.algorithm, algorithm.family()) {
            (AlgorithmParameters::RSA(_), KeyFamily::Rsa)
            | (AlgorithmParameters::OctetKey(_), KeyFamily::Hmac) => true,
            (AlgorithmParameters::EllipticCurve(p), KeyFamily::Ec) => {
                p.curve
                    == if algorithm == Algorithm::ES384 {
                        EllipticCurve::P384
                    } else {
                        EllipticCurve::P256
                    }
            }
            (AlgorithmParameters::OctetKeyPair(p), KeyFamily::Ed) => {
                p.curve == EllipticCurve::Ed25519
            }
            _ => false,
        };
        if !fits {
            return Err(AuthError::InvalidKey {
                reason: format!("JWK key type or curve does not fit its algorithm {algorithm}"),
            });
        }
        if let AlgorithmParameters::OctetKey(oct) = &jwk.algorithm {
            // The same floor as `VerificationKey::hmac` (RFC 7518 §3.2).
            let secret = URL_SAFE_NO_PAD
                .decode(&oct.value)
                .map_err(|_| AuthError::InvalidKey {
                    reason: "JWK \"k\" is not base64url without padding".to_owned(),
                })?;
            check_secret(algorithm, &secret)?;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|_| AuthError::InvalidKey {
            reason: "could not read the JWK key material".to_owned(),
        })?;
        Ok(Self::from_parts(
            jwk.common.key_id.as_deref(),
            algorithm,
            key,
        ))
    }
}

fn jwk_algorithm(jwk: &Jwk, default: Option<Algorithm>) -> Result<Algorithm, AuthError> {
    if let Some(alg) = jwk.common.key_algorithm {
        return match alg {
            KeyAlgorithm::HS256 => Ok(Algorithm::HS256),
            KeyAlgorithm::HS384 => Ok(Algorithm::HS384),
            KeyAlgorithm::HS512 => Ok(Algorithm::HS512),
            KeyAlgorithm::RS256 => Ok(Algorithm::RS256),
            KeyAlgorithm::RS384 => Ok(Algorithm::RS384),
            KeyAlgorithm::RS512 => Ok(Algorithm::RS512),
            KeyAlgorithm::PS256 => Ok(Algorithm::PS256),
            KeyAlgorithm::ES256 => Ok(Algorithm::ES256),
            KeyAlgorithm::ES384 => Ok(Algorithm::ES384),
            KeyAlgorithm::EdDSA => Ok(Algorithm::EdDSA),
            _ => Err(AuthError::InvalidKey {
                reason: "JWK algorithm is not supported for signatures".to_owned(),
            }),
        };
    }
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            Ok(Algorithm::ES256)
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => {
            Ok(Algorithm::ES384)
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Ok(Algorithm::EdDSA)
        }
        _ => default.ok_or_else(|| AuthError::InvalidKey {
            reason: "JWK has no \"alg\" and its algorithm cannot be inferred; set \"alg\" \
                     or a default algorithm (JwksOptions::with_default_algorithm)"
                .to_owned(),
        }),
    }
}

/// A JWKS document, each key kept raw so one key that jsonwebtoken cannot
/// parse does not fail the others.
#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<Value>,
}

/// At most this many skipped keys are named in the no-usable-key error.
const MAX_SKIPPED_LISTED: usize = 8;

impl KeySet {
    /// Reads a JWKS document (`{"keys": [...]}`) with default
    /// [`JwksOptions`]; see [`KeySet::from_jwks_json_with`].
    pub fn from_jwks_json(json: &str) -> Result<Self, AuthError> {
        Self::from_jwks_json_with(json, &JwksOptions::default())
    }

    /// Reads a JWKS document (`{"keys": [...]}`).
    ///
    /// Keys with `"use": "enc"` are left out silently. Every other key this
    /// library cannot verify with (unsupported key type, curve or `alg`, no
    /// `alg` and no default, a too-short secret, unreadable key material)
    /// is skipped with a `tracing` warning naming its `kid` and the reason.
    ///
    /// # Errors
    ///
    /// [`AuthError::InvalidKey`] if the document is not a JWKS, if no key
    /// is usable (the message names the skipped keys), or if two usable
    /// keys share a `kid` (or both lack one), since either could then
    /// verify a token.
    ///
    /// ```
    /// use saas_core::{Algorithm, AuthError, JwksOptions, KeySet};
    ///
    /// // An HS256 secret without "alg", and a P-521 key, which is unsupported.
    /// let jwks = r#"{"keys": [
    ///     {"kty": "oct", "kid": "k1", "k": "YW4taHMyNTYtc2VjcmV0LW9mLWF0LWxlYXN0LTMyLWJ5dGVzIQ"},
    ///     {"kty": "EC", "kid": "k2", "crv": "P-521", "x": "AAAA", "y": "AAAA"}
    /// ]}"#;
    ///
    /// let options = JwksOptions::new().with_default_algorithm(Algorithm::HS256);
    /// let keys = KeySet::from_jwks_json_with(jwks, &options)?;
    /// assert_eq!(keys.len(), 1);
    ///
    /// // Without the default no key is usable.
    /// assert!(matches!(KeySet::from_jwks_json(jwks), Err(AuthError::InvalidKey { .. })));
    /// # Ok::<(), AuthError>(())
    /// ```
    pub fn from_jwks_json_with(json: &str, options: &JwksOptions) -> Result<Self, AuthError> {
        let set: RawJwks = serde_json::from_str(json).map_err(|_| AuthError::InvalidKey {
            reason: "JWKS document is not valid JSON of the form {\"keys\": [...]}".to_owned(),
        })?;
        let mut keys = Self::new();
        let mut skipped = Vec::new();
        for (index, raw) in set.keys.iter().enumerate() {
            let field = |name: &str| raw.get(name).and_then(Value::as_str).map(sanitize);
            if field("use").as_deref() == Some("enc") {
                continue;
            }
            let key = serde_json::from_value::<Jwk>(raw.clone())
                .map_err(|_| "not a JWK that can be read (check kty and its fields)".to_owned())
                .and_then(|jwk| {
                    VerificationKey::from_jwk_with_default(&jwk, options.default_algorithm).map_err(
                        |err| match err {
                            AuthError::InvalidKey { reason } => reason,
                            other => other.to_string(),
                        },
                    )
                });
            match key {
                Ok(key) => keys.insert(key)?,
                Err(reason) => {
                    let kid = field("kid").unwrap_or_else(|| format!("#{index}"));
                    let alg = field("alg").unwrap_or_default();
                    tracing::warn!(
                        kid = %kid,
                        alg = %alg,
                        reason = %reason,
                        "skipping a JWKS key that cannot verify tokens"
                    );
                    skipped.push((kid, reason));
                }
            }
        }
        if keys.is_empty() {
            return Err(no_usable_key(&skipped));
        }
        Ok(keys)
    }
}

fn no_usable_key(skipped: &[(String, String)]) -> AuthError {
    let mut reason = "the JWKS has no usable signature key".to_owned();
    if !skipped.is_empty() {
        reason.push_str(" (skipped:");
        for (kid, why) in skipped.iter().take(MAX_SKIPPED_LISTED) {
            let _ = write!(reason, " kid {kid:?}: {why};");
        }
        if skipped.len() > MAX_SKIPPED_LISTED {
            let _ = write!(reason, " and {} more;", skipped.len() - MAX_SKIPPED_LISTED);
        }
        reason.pop();
        reason.push(')');
    }
    reason.push_str(
        "; publish a key with a supported kty/crv/alg, or set a default algorithm for keys \
         without \"alg\" (JwksOptions::with_default_algorithm)",
    );
    AuthError::InvalidKey { reason }
}
