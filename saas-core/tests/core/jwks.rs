//! JWKS loading: key checks, unsupported keys, the default algorithm.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Duration, TimeZone, Utc};
use jsonwebtoken::jwk::Jwk;
use saas_core::{
    Algorithm, AuthError, JwksOptions, JwtVerifier, KeySet, ManualClock, SigningKey, TokenClaims,
    TokenIssuer, VerificationKey,
};
use serde_json::{Value, json};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The fixture set's keys (RSA RS256, Ed25519, EC P-256, one `enc` key).
fn fixture_keys() -> Vec<Value> {
    let set: Value = serde_json::from_slice(&fixture("jwks.json")).unwrap();
    set["keys"].as_array().unwrap().clone()
}

/// The fixture RSA public key as a JWK without `alg`.
fn rsa_without_alg(kid: &str) -> Value {
    let mut key = fixture_keys()[0].clone();
    let key_obj = key.as_object_mut().unwrap();
    key_obj.remove("alg");
    key_obj.insert("kid".into(), json!(kid));
    key
}

fn oct(kid: &str, alg: &str, secret: &[u8]) -> Value {
    json!({"kty": "oct", "kid": kid, "alg": alg, "k": URL_SAFE_NO_PAD.encode(secret)})
}

/// A P-521 public key (a real point; P-521 is not a supported curve).
fn p521(kid: &str) -> Value {
    json!({
        "kty": "EC", "kid": kid, "crv": "P-521",
        "x": "AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk",
        "y": "ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2"
    })
}

fn jwks(keys: Vec<Value>) -> String {
    json!({ "keys": keys }).to_string()
}

fn verify_rs256(keys: KeySet, kid: &str) -> Result<(), AuthError> {
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(t0));
    let sk = SigningKey::rsa_pem(Some(kid), Algorithm::RS256, &fixture("rsa_private.pem")).unwrap();
    let token = TokenIssuer::builder(sk)
        .ttl(Duration::seconds(60))
        .clock(clock.clone())
        .build()
        .unwrap()
        .issue(&TokenClaims::new("alice"))
        .unwrap();
    JwtVerifier::builder(keys)
        .require_tenant(false)
        .clock(clock)
        .build()?
        .verify(&token)
        .map(drop)
}

/// The warnings logged on this thread while `f` runs.
///
/// Recorded by a process-wide subscriber that is interested in every
/// callsite, and keeps the lines of the threads that are capturing: a
/// scoped subscriber instead races tracing's per-callsite interest cache
/// with other tests' threads (a warning fired first elsewhere, while no
/// subscriber wanted it, could be cached as "never" and go unseen here).
fn warnings_during<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // Another global subscriber would be the test binary's own choice.
        let _ = tracing::subscriber::set_global_default(Recorder);
    });
    CAPTURED.with(|captured| *captured.borrow_mut() = Some(Vec::new()));
    let out = f();
    let lines = CAPTURED.with(|captured| captured.borrow_mut().take());
    (out, lines.unwrap_or_default())
}

thread_local! {
    /// The warnings of this thread, while it captures.
    static CAPTURED: std::cell::RefCell<Option<Vec<String>>> =
        const { std::cell::RefCell::new(None) };
}

struct Recorder;

struct Line(String);

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            let mut line = Line(String::new());
            event.record(&mut line);
            CAPTURED.with(|captured| {
                if let Some(lines) = captured.borrow_mut().as_mut() {
                    lines.push(line.0);
                }
            });
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
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

#[test]
fn unsupported_keys_are_skipped_with_a_warning_naming_them() {
    let mut keys = fixture_keys();
    keys.push(p521("p521-key"));
    keys.push(rsa_without_alg("rsa-no-alg"));
    keys.push(
        json!({"kty": "EC", "kid": "es512-key", "alg": "ES512", "crv": "P-521",
                     "x": p521("")["x"], "y": p521("")["y"]}),
    );
    keys.push(json!({"kty": "AKP", "kid": "pq-key", "alg": "ML-DSA-44", "pub": "AAAA"}));
    keys.push(oct("short-oct", "HS256", b"too short"));
    let mut mislabelled = p521("p521-as-es256");
    mislabelled["alg"] = json!("ES256");
    keys.push(mislabelled);
    keys.push(json!({"kty": "RSA", "kid": "not-a-jwk", "alg": "RS256", "n": 42}));
    let (loaded, warnings) = warnings_during(|| KeySet::from_jwks_json(&jwks(keys)));
    let loaded = loaded.unwrap();
    assert_eq!(loaded.len(), 3, "the fixture's three signature keys");
    assert!(verify_rs256(loaded, "rsa-1").is_ok());
    let skipped = [
        "p521-key",
        "rsa-no-alg",
        "es512-key",
        "pq-key",
        "short-oct",
        "p521-as-es256",
        "not-a-jwk",
    ];
    for kid in skipped {
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(kid) && w.contains("reason")),
            "no warning names {kid}: {warnings:?}"
        );
    }
    assert_eq!(warnings.len(), skipped.len(), "{warnings:?}");
}

#[test]
fn keys_without_alg_take_the_sets_default_algorithm() {
    let set = jwks(vec![rsa_without_alg("rsa-no-alg"), p521("p521-key")]);
    let options = JwksOptions::new().with_default_algorithm(Algorithm::RS256);
    let keys = KeySet::from_jwks_json_with(&set, &options).unwrap();
    assert_eq!(keys.len(), 1, "the P-521 key is still skipped");
    assert!(verify_rs256(keys, "rsa-no-alg").is_ok());

    // Without a default, neither key is usable: a typed error naming them.
    let err = KeySet::from_jwks_json(&set).unwrap_err();
    match &err {
        AuthError::InvalidKey { reason } => {
            assert!(reason.contains("no usable"), "{reason}");
            assert!(reason.contains("rsa-no-alg") && reason.contains("p521-key"));
        }
        other => panic!("unexpected {other:?}"),
    }

    // A default of the wrong family does not fit: skipped, not misused.
    let options = JwksOptions::new().with_default_algorithm(Algorithm::ES256);
    assert!(matches!(
        KeySet::from_jwks_json_with(&jwks(vec![rsa_without_alg("r")]), &options),
        Err(AuthError::InvalidKey { .. })
    ));
    // An alg the key carries wins over the default; inference too.
    let options = JwksOptions::new().with_default_algorithm(Algorithm::RS384);
    let keys =
        KeySet::from_jwks_json_with(&String::from_utf8(fixture("jwks.json")).unwrap(), &options)
            .unwrap();
    assert_eq!(keys.len(), 3);
    assert!(verify_rs256(keys, "rsa-1").is_ok());
}

#[test]
fn a_jwks_without_usable_keys_is_a_typed_error() {
    for set in [
        jwks(vec![]),
        jwks(vec![fixture_keys()[3].clone()]), // an encryption key only
        jwks(vec![p521("a"), json!({"kty": "nope"})]),
        "{\"keys\": 1}".to_owned(),
        "not json".to_owned(),
    ] {
        let err = KeySet::from_jwks_json(&set).unwrap_err();
        assert!(
            matches!(err, AuthError::InvalidKey { .. }),
            "{set}: {err:?}"
        );
    }
}
