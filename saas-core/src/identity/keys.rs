use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};

use super::AuthError;

/// A JWS signing algorithm. The key, never the token, decides which one
/// applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC with SHA-256 (shared secret).
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// The JOSE name (`"RS256"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    pub(crate) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Algorithm::HS256 => J::HS256,
            Algorithm::HS384 => J::HS384,
            Algorithm::HS512 => J::HS512,
            Algorithm::RS256 => J::RS256,
            Algorithm::RS384 => J::RS384,
            Algorithm::RS512 => J::RS512,
            Algorithm::PS256 => J::PS256,
            Algorithm::ES256 => J::ES256,
            Algorithm::ES384 => J::ES384,
            Algorithm::EdDSA => J::EdDSA,
        }
    }

    pub(super) fn family(self) -> KeyFamily {
        match self {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => KeyFamily::Hmac,
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 => {
                KeyFamily::Rsa
            }
            Algorithm::ES256 | Algorithm::ES384 => KeyFamily::Ec,
            Algorithm::EdDSA => KeyFamily::Ed,
        }
    }

    /// Minimum HMAC secret length: the hash output size (RFC 7518 §3.2).
    fn min_secret_len(self) -> usize {
        match self {
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => 32,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyFamily {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

fn expect_family(alg: Algorithm, family: KeyFamily, what: &str) -> Result<(), AuthError> {
    if alg.family() == family {
        Ok(())
    } else {
        Err(AuthError::InvalidKey {
            reason: format!("{alg} cannot be used with {what}"),
        })
    }
}

fn bad_pem(what: &str) -> AuthError {
    AuthError::InvalidKey {
        reason: format!("could not read the {what} PEM"),
    }
}

pub(super) fn check_secret(alg: Algorithm, secret: &[u8]) -> Result<(), AuthError> {
    expect_family(alg, KeyFamily::Hmac, "a shared secret")?;
    if secret.len() < alg.min_secret_len() {
        return Err(AuthError::InvalidKey {
            reason: format!(
                "{alg} secret has {} bytes; at least {} are required",
                secret.len(),
                alg.min_secret_len()
            ),
        });
    }
    Ok(())
}

/// A key that verifies tokens, pinned to one algorithm and optionally
/// named by a key id (`kid`).
#[derive(Clone)]
pub struct VerificationKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: Arc<DecodingKey>,
}

impl VerificationKey {
    /// An HMAC key (HS256/384/512). The secret must be at least as long as
    /// the hash output (32 bytes for HS256).
    pub fn hmac(kid: Option<&str>, algorithm: Algorithm, secret: &[u8]) -> Result<Self, AuthError> {
        check_secret(algorithm, secret)?;
        Ok(Self::from_parts(
            kid,
            algorithm,
            DecodingKey::from_secret(secret),
        ))
    }

    /// An RSA public key in PEM (RS256/384/512, PS256).
    pub fn rsa_pem(kid: Option<&str>, algorithm: Algorithm, pem: &[u8]) -> Result<Self, AuthError> {
        expect_family(algorithm, KeyFamily::Rsa, "an RSA key")?;
        let key = DecodingKey::from_rsa_pem(pem).map_err(|_| bad_pem("RSA public key"))?;
        Ok(Self::from_parts(kid, algorithm, key))
    }

    /// An EC public key in PEM (ES256 on P-256, ES384 on P-384).
    pub fn ec_pem(kid: Option<&str>, algorithm: Algorithm, pem: &[u8]) -> Result<Self, AuthError> {
        expect_family(algorithm, KeyFamily::Ec, "an EC key")?;
        let key = DecodingKey::from_ec_pem(pem).map_err(|_| bad_pem("EC public key"))?;
        Ok(Self::from_parts(kid, algorithm, key))
    }

    /// An Ed25519 public key in PEM (EdDSA).
    pub fn ed_pem(kid: Option<&str>, pem: &[u8]) -> Result<Self, AuthError> {
        let key = DecodingKey::from_ed_pem(pem).map_err(|_| bad_pem("Ed25519 public key"))?;
        Ok(Self::from_parts(kid, Algorithm::EdDSA, key))
    }

    pub(super) fn from_parts(kid: Option<&str>, algorithm: Algorithm, key: DecodingKey) -> Self {
        Self {
            kid: kid.map(str::to_owned),
            algorithm,
            key: Arc::new(key),
        }
    }

    /// The key id, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The pinned algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The keys a verifier accepts, by key id.
///
/// Rotation: add the new key (new `kid`) to the set, start issuing with it,
/// and drop the old one once its tokens have expired. A
/// [`JwtVerifier`](super::JwtVerifier) can swap its whole set at runtime.
///
/// A token without a `kid` is accepted only if the set holds exactly one
/// key, so adding a second key never silently changes which key verifies
/// an unnamed token.
#[derive(Clone, Default)]
pub struct KeySet {
    by_kid: BTreeMap<String, VerificationKey>,
    unnamed: Option<VerificationKey>,
}

impl KeySet {
    /// An empty set (verifies nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key. Two keys with the same `kid`, or two keys without one,
    /// are a configuration error.
    pub fn with(mut self, key: VerificationKey) -> Result<Self, AuthError> {
        self.insert(key)?;
        Ok(self)
    }

    /// Adds a key in place; see [`KeySet::with`].
    pub fn insert(&mut self, key: VerificationKey) -> Result<(), AuthError> {
        match key.kid.clone() {
            Some(kid) => {
                if self.by_kid.contains_key(&kid) {
                    return Err(AuthError::InvalidKey {
                        reason: format!("two keys share the kid {kid:?}"),
                    });
                }
                self.by_kid.insert(kid, key);
            }
            None => {
                if self.unnamed.is_some() {
                    return Err(AuthError::InvalidKey {
                        reason: "two keys have no kid; give each key a kid".to_owned(),
                    });
                }
                self.unnamed = Some(key);
            }
        }
        Ok(())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_kid.len() + usize::from(self.unnamed.is_some())
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Selects the key for a token header's `kid`.
    pub(crate) fn select(&self, kid: Option<&str>) -> Result<&VerificationKey, AuthError> {
        match kid {
            Some(kid) => self.by_kid.get(kid).ok_or_else(|| AuthError::UnknownKey {
                kid: Some(super::error::sanitize(kid)),
            }),
            None => {
                if self.len() == 1 {
                    if let Some(key) = &self.unnamed {
                        return Ok(key);
                    }
                    if let Some(key) = self.by_kid.values().next() {
                        return Ok(key);
                    }
                }
                Err(AuthError::UnknownKey { kid: None })
            }
        }
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.by_kid.keys().collect::<Vec<_>>())
            .field("unnamed", &self.unnamed.is_some())
            .finish()
    }
}

/// A key that signs tokens, pinned to one algorithm.
#[derive(Clone)]
pub struct SigningKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: Arc<EncodingKey>,
}

impl SigningKey {
    /// An HMAC key (HS256/384/512).
    pub fn hmac(kid: Option<&str>, algorithm: Algorithm, secret: &[u8]) -> Result<Self, AuthError> {
        check_secret(algorithm, secret)?;
        Ok(Self::from_parts(
            kid,
            algorithm,
            EncodingKey::from_secret(secret),
        ))
    }

    /// An RSA private key in PEM (PKCS#1 or PKCS#8).
    pub fn rsa_pem(kid: Option<&str>, algorithm: Algorithm, pem: &[u8]) -> Result<Self, AuthError> {
        expect_family(algorithm, KeyFamily::Rsa, "an RSA key")?;
        let key = EncodingKey::from_rsa_pem(pem).map_err(|_| bad_pem("RSA private key"))?;
        Ok(Self::from_parts(kid, algorithm, key))
    }

    /// An EC private key in PKCS#8 PEM.
    pub fn ec_pem(kid: Option<&str>, algorithm: Algorithm, pem: &[u8]) -> Result<Self, AuthError> {
        expect_family(algorithm, KeyFamily::Ec, "an EC key")?;
        let key = EncodingKey::from_ec_pem(pem).map_err(|_| bad_pem("EC private key"))?;
        Ok(Self::from_parts(kid, algorithm, key))
    }

    /// An Ed25519 private key in PKCS#8 PEM.
    pub fn ed_pem(kid: Option<&str>, pem: &[u8]) -> Result<Self, AuthError> {
        let key = EncodingKey::from_ed_pem(pem).map_err(|_| bad_pem("Ed25519 private key"))?;
        Ok(Self::from_parts(kid, Algorithm::EdDSA, key))
    }

    fn from_parts(kid: Option<&str>, algorithm: Algorithm, key: EncodingKey) -> Self {
        Self {
            kid: kid.map(str::to_owned),
            algorithm,
            key: Arc::new(key),
        }
    }

    /// The key id, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The pinned algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.key
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("key", &"<redacted>")
            .finish()
    }
}
