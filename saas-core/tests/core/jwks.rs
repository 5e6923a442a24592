//! JWKS loading: key checks, unsupported keys, the default algorithm.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use saas_core::{Algorithm, AuthError, KeySet, VerificationKey};
use serde_json::{Value, json};

fn oct(kid: &str, alg: &str, secret: &[u8]) -> Value {
    json!({"kty": "oct", "kid": kid, "alg": alg, "k": URL_SAFE_NO_PAD.encode(secret)})
}

fn jwks(keys: Vec<Value>) -> String {
    json!({ "keys": keys }).to_string()
}

#[test]
fn jwk_oct_secrets_need_the_hash_length_like_hmac_keys() {
    for (alg, short, enough) in [
        (Algorithm::HS256, 31, 32),
        (Algorithm::HS384, 47, 48),
        (Algorithm::HS512, 63, 64),
    ] {
        let short_secret = vec![7u8; short];
        let jwk: Jwk = serde_json::from_value(oct("k", alg.as_str(), &short_secret)).unwrap();
        assert_eq!(
            VerificationKey::from_jwk(&jwk).unwrap_err(),
            VerificationKey::hmac(Some("k"), alg, &short_secret).unwrap_err(),
            "{alg}: the same error as VerificationKey::hmac"
        );
        let jwk: Jwk = serde_json::from_value(oct("k", alg.as_str(), &vec![7u8; enough])).unwrap();
        assert_eq!(VerificationKey::from_jwk(&jwk).unwrap().algorithm(), alg);
    }
    // Alone in a set, the short key leaves nothing usable.
    assert!(matches!(
        KeySet::from_jwks_json(&jwks(vec![oct("k", "HS256", b"short")])),
        Err(AuthError::InvalidKey { .. })
    ));
}
