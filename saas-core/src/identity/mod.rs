//! JWT identity: keys, verification, issuing.
//!
//! Built on `jsonwebtoken` with its pure-Rust (`rust_crypto`) backend.
//! The rule that matters most: **the algorithm is pinned by the key**. A
//! token's `alg` header only has to agree with the key it selects by
//! `kid`; it never chooses how the signature is checked. That is what
//! refuses `alg: none` and the HS256-signed-with-the-RSA-public-key trick.

mod claims;
mod error;
mod issuer;
mod jwks;
mod keys;
mod verifier;

pub use claims::{ClaimNames, TokenClaims, VerifiedToken};
pub use error::AuthError;
pub use issuer::{TokenIssuer, TokenIssuerBuilder};
pub use jwks::JwksOptions;
pub use keys::{Algorithm, KeySet, SigningKey, VerificationKey};
pub use verifier::{JwtVerifier, JwtVerifierBuilder, MAX_TOKEN_LEN};

/// Makes the RustCrypto provider jsonwebtoken's process default, unless
/// the host installed one already (then theirs is kept).
pub(crate) fn install_crypto_provider() {
    // `Err` means a provider is installed already, which is fine.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}
