use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, TimeZone, Utc};
use saas_core::{
    Algorithm, AuthError, ClaimNames, Clock, JwtVerifier, KeySet, ManualClock, SigningKey,
    TenantId, TenantKey, TenantSlug, TokenClaims, TokenIssuer, VerificationKey,
};
use serde_json::json;

const SECRET: &[u8] = b"test-secret-that-is-long-enough-for-hs256";
const ISS: &str = "https://auth.test";
const AUD: &str = "api";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn issuer(key: SigningKey, clock: &ManualClock) -> TokenIssuer {
    TokenIssuer::builder(key)
        .issuer(ISS)
        .audience(AUD)
        .ttl(Duration::seconds(60))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

fn verifier(keys: KeySet, clock: &ManualClock) -> JwtVerifier {
    JwtVerifier::builder(keys)
        .issuer(ISS)
        .audience(AUD)
        .leeway(Duration::seconds(30))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

fn hs_pair(clock: &ManualClock) -> (TokenIssuer, JwtVerifier) {
    let sk = SigningKey::hmac(Some("k1"), Algorithm::HS256, SECRET).unwrap();
    let vk = VerificationKey::hmac(Some("k1"), Algorithm::HS256, SECRET).unwrap();
    (
        issuer(sk, clock),
        verifier(KeySet::new().with(vk).unwrap(), clock),
    )
}

fn claims() -> TokenClaims {
    TokenClaims::new("alice")
        .tenant(TenantKey::Slug(TenantSlug::parse("acme").unwrap()))
        .role("admin")
        .role("billing")
        .scope("projects:read")
        .scope("projects:write")
}

/// Signs arbitrary claims with the HS256 test key, bypassing the issuer's
/// rules, to build tokens the issuer would never make.
fn raw_hs256(kid: Option<&str>, body: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    jsonwebtoken::encode(
        &header,
        &body,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn valid_body(clock: &ManualClock) -> serde_json::Value {
    let now = clock.now().timestamp();
    json!({"sub": "alice", "iss": ISS, "aud": AUD, "exp": now + 60, "tenant_id": "acme"})
}

#[test]
fn every_algorithm_round_trips_claims() {
    let clock = ManualClock::new(t0());
    let cases: Vec<(SigningKey, VerificationKey)> = vec![
        (
            SigningKey::hmac(Some("hs"), Algorithm::HS256, SECRET).unwrap(),
            VerificationKey::hmac(Some("hs"), Algorithm::HS256, SECRET).unwrap(),
        ),
        (
            SigningKey::rsa_pem(Some("rs"), Algorithm::RS256, &fixture("rsa_private.pem")).unwrap(),
            VerificationKey::rsa_pem(Some("rs"), Algorithm::RS256, &fixture("rsa_public.pem"))
                .unwrap(),
        ),
        (
            SigningKey::ec_pem(Some("es"), Algorithm::ES256, &fixture("ec_private.pem")).unwrap(),
            VerificationKey::ec_pem(Some("es"), Algorithm::ES256, &fixture("ec_public.pem"))
                .unwrap(),
        ),
        (
            SigningKey::ed_pem(Some("ed"), &fixture("ed_private.pem")).unwrap(),
            VerificationKey::ed_pem(Some("ed"), &fixture("ed_public.pem")).unwrap(),
        ),
    ];
    for (sk, vk) in cases {
        let alg = sk.algorithm();
        let token = issuer(sk, &clock).issue(&claims()).unwrap();
        let v = verifier(KeySet::new().with(vk).unwrap(), &clock)
            .verify(&token)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(v.subject, "alice", "{alg}");
        assert_eq!(
            v.tenant,
            Some(TenantKey::Slug(TenantSlug::parse("acme").unwrap()))
        );
        assert!(v.roles.contains("admin") && v.roles.contains("billing"));
        assert!(v.scopes.contains("projects:write") && v.scopes.len() == 2);
        assert_eq!(v.expires_at, t0() + Duration::seconds(60));
        assert_eq!(v.issued_at, Some(t0()));
        let p = v.principal();
        assert!(p.has_role("admin") && p.has_scope("projects:read"));
    }
}

#[test]
fn a_token_signed_by_another_key_is_a_bad_signature() {
    let clock = ManualClock::new(t0());
    let other =
        SigningKey::rsa_pem(Some("rs"), Algorithm::RS256, &fixture("rsa2_private.pem")).unwrap();
    let token = issuer(other, &clock).issue(&claims()).unwrap();
    let vk =
        VerificationKey::rsa_pem(Some("rs"), Algorithm::RS256, &fixture("rsa_public.pem")).unwrap();
    let err = verifier(KeySet::new().with(vk).unwrap(), &clock)
        .verify(&token)
        .unwrap_err();
    assert_eq!(err, AuthError::BadSignature);
}

#[test]
fn a_tampered_payload_is_a_bad_signature() {
    let clock = ManualClock::new(t0());
    let (iss, ver) = hs_pair(&clock);
    let token = iss.issue(&claims()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut body: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    body["tenant_id"] = json!("globex");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(body.to_string()),
        parts[2]
    );
    assert_eq!(ver.verify(&forged).unwrap_err(), AuthError::BadSignature);
}

#[test]
fn alg_none_is_refused_by_the_algorithm_check() {
    let clock = ManualClock::new(t0());
    let (_, ver) = hs_pair(&clock);
    for alg in ["none", "None", "NONE"] {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": "k1"}).to_string());
        let body = URL_SAFE_NO_PAD.encode(valid_body(&clock).to_string());
        let err = ver.verify(&format!("{header}.{body}.")).unwrap_err();
        assert_eq!(
            err,
            AuthError::DisallowedAlgorithm {
                found: alg.to_owned(),
                expected: Algorithm::HS256
            }
        );
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion attack: the attacker knows the public key and
    // uses its PEM bytes as an HMAC secret.
    let clock = ManualClock::new(t0());
    let public_pem = fixture("rsa_public.pem");
    let forger = SigningKey::hmac(Some("rs"), Algorithm::HS256, &public_pem).unwrap();
    let token = issuer(forger, &clock).issue(&claims()).unwrap();
    let vk = VerificationKey::rsa_pem(Some("rs"), Algorithm::RS256, &public_pem).unwrap();
    let err = verifier(KeySet::new().with(vk).unwrap(), &clock)
        .verify(&token)
        .unwrap_err();
    assert_eq!(
        err,
        AuthError::DisallowedAlgorithm {
            found: "HS256".to_owned(),
            expected: Algorithm::RS256
        }
    );
}

#[test]
fn unknown_and_missing_kids() {
    let clock = ManualClock::new(t0());
    let (_, ver) = hs_pair(&clock);
    let token = raw_hs256(Some("k9"), valid_body(&clock));
    assert_eq!(
        ver.verify(&token).unwrap_err(),
        AuthError::UnknownKey {
            kid: Some("k9".into())
        }
    );

    // No kid and a single key: that key is used.
    let token = raw_hs256(None, valid_body(&clock));
    assert_eq!(ver.verify(&token).unwrap().subject, "alice");

    // No kid and two keys: refused rather than guessed.
    let keys = KeySet::new()
        .with(VerificationKey::hmac(Some("k1"), Algorithm::HS256, SECRET).unwrap())
        .unwrap()
        .with(VerificationKey::hmac(Some("k2"), Algorithm::HS256, SECRET).unwrap())
        .unwrap();
    let two = verifier(keys, &clock);
    assert_eq!(
        two.verify(&token).unwrap_err(),
        AuthError::UnknownKey { kid: None }
    );
}

#[test]
fn expiry_honours_the_leeway_to_the_second() {
    let clock = ManualClock::new(t0());
    let (iss, ver) = hs_pair(&clock);
    let token = iss.issue(&claims()).unwrap(); // exp = t0 + 60s, leeway 30s
    clock.set(t0() + Duration::seconds(89));
    assert!(ver.verify(&token).is_ok(), "inside the leeway");
    clock.set(t0() + Duration::seconds(90));
    assert_eq!(
        ver.verify(&token).unwrap_err(),
        AuthError::Expired {
            expired_at: t0() + Duration::seconds(60)
        }
    );
    clock.set(t0() + Duration::seconds(91));
    assert!(matches!(
        ver.verify(&token).unwrap_err(),
        AuthError::Expired { .. }
    ));
}

#[test]
fn exp_is_required_and_must_be_a_number() {
    let clock = ManualClock::new(t0());
    let (_, ver) = hs_pair(&clock);
    let mut body = valid_body(&clock);
    body.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        ver.verify(&raw_hs256(Some("k1"), body.clone()))
            .unwrap_err(),
        AuthError::MissingClaim {
            claim: "exp".into()
        }
    );
    body["exp"] = json!("tomorrow");
    assert!(matches!(
        ver.verify(&raw_hs256(Some("k1"), body)).unwrap_err(),
        AuthError::InvalidClaim { claim, .. } if claim == "exp"
    ));
}

/// Seconds after `t0()` as a fractional NumericDate, as Python's
/// `time.time() + n` writes it.
fn t0_plus(secs: f64) -> serde_json::Value {
    json!(t0().timestamp() as f64 + secs)
}

#[test]
fn fractional_numeric_dates_are_accepted_and_compared_exactly() {
    let clock = ManualClock::new(t0());
    let exact = |leeway: i64| {
        JwtVerifier::builder(
            KeySet::new()
                .with(VerificationKey::hmac(Some("k1"), Algorithm::HS256, SECRET).unwrap())
                .unwrap(),
        )
        .leeway(Duration::seconds(leeway))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
    };
    let (strict, lenient) = (exact(0), exact(30));
    let mut body = valid_body(&clock);
    body["exp"] = t0_plus(100.5);
    body["nbf"] = t0_plus(10.5);
    body["iat"] = t0_plus(0.25);
    let token = raw_hs256(Some("k1"), body);
    let at = |ms: i64| clock.set(t0() + Duration::milliseconds(ms));

    at(10_400);
    assert_eq!(
        strict.verify(&token).unwrap_err(),
        AuthError::NotYetValid {
            valid_from: t0() + Duration::milliseconds(10_500)
        }
    );
    at(10_500);
    let v = strict.verify(&token).unwrap();
    assert_eq!(v.expires_at, t0() + Duration::milliseconds(100_500));
    assert_eq!(v.issued_at, Some(t0() + Duration::milliseconds(250)));
    at(100_400);
    assert!(strict.verify(&token).is_ok(), "before exp");
    for expired in [100_500, 100_600] {
        at(expired);
        assert_eq!(
            strict.verify(&token).unwrap_err(),
            AuthError::Expired {
                expired_at: t0() + Duration::milliseconds(100_500)
            },
            "at {expired} ms"
        );
    }
    assert!(lenient.verify(&token).is_ok(), "inside the leeway");
    at(130_400);
    assert!(lenient.verify(&token).is_ok(), "still inside the leeway");
    at(130_500);
    assert!(matches!(
        lenient.verify(&token).unwrap_err(),
        AuthError::Expired { .. }
    ));

    // The fraction is kept to the microsecond, as `time.time()` gives it.
    let mut body = valid_body(&clock);
    body["exp"] = json!(1_767_225_600.123_456_f64 + 86_400.0 * 365.0);
    clock.set(t0());
    let v = strict.verify(&raw_hs256(Some("k1"), body)).unwrap();
    assert_eq!(v.expires_at.timestamp_subsec_nanos(), 123_456_000);
}

#[test]
fn numeric_dates_must_be_non_negative_numbers() {
    let clock = ManualClock::new(t0());
    let (_, ver) = hs_pair(&clock);
    for (claim, value) in [
        ("exp", json!("tomorrow")),
        ("exp", json!(true)),
        ("exp", json!(null)),
        ("exp", json!(-1)),
        ("exp", json!(-0.5)),
        ("exp", json!(1e300)),
        ("exp", json!(u64::MAX)),
        ("nbf", json!(-5)),
        ("nbf", json!(-0.001)),
        ("nbf", json!("now")),
        ("iat", json!(-1)),
        ("iat", json!(-1.5)),
        ("iat", json!({"secs": 1})),
        ("iat", json!([1])),
    ] {
        let mut body = valid_body(&clock);
        body[claim] = value.clone();
        let err = ver.verify(&raw_hs256(Some("k1"), body)).unwrap_err();
        assert!(
            matches!(&err, AuthError::InvalidClaim { claim: c, .. } if c == claim),
            "{claim} = {value}: {err:?}"
        );
    }
    // jsonwebtoken's parse of exp/nbf fails the whole payload on these.
    for (claim, value) in [("exp", json!([1])), ("nbf", json!({"secs": 1}))] {
        let mut body = valid_body(&clock);
        body[claim] = value;
        assert!(matches!(
            ver.verify(&raw_hs256(Some("k1"), body)).unwrap_err(),
            AuthError::Malformed { .. }
        ));
    }
}

#[test]
fn not_before_is_honoured_with_leeway() {
    let clock = ManualClock::new(t0());
    let (_, ver) = hs_pair(&clock);
    let mut body = valid_body(&clock);
    body["nbf"] = json!(t0().timestamp() + 31);
    assert_eq!(
        ver.verify(&raw_hs256(Some("k1"), body.clone()))
            .unwrap_err(),
        AuthError::NotYetValid {
            valid_from: t0() + Duration::seconds(31)
        }
    );
    body["nbf"] = json!(t0().timestamp() + 30);
    assert!(ver.verify(&raw_hs256(Some("k1"), body)).is_ok());
}

#[test]
fn issuer_and_audience_are_checked() {
    let clock = ManualClock::new(t0());
    let (_, ver) = hs_pair(&clock);
    let check = |patch: &dyn Fn(&mut serde_json::Value)| {
        let mut body = valid_body(&clock);
        patch(&mut body);
        ver.verify(&raw_hs256(Some("k1"), body))
    };
    assert_eq!(
        check(&|b| b["iss"] = json!("https://evil.test")).unwrap_err(),
        AuthError::WrongIssuer
    );
    assert_eq!(
        check(&|b| {
            b.as_object_mut().unwrap().remove("iss");
        })
        .unwrap_err(),
        AuthError::MissingClaim {
            claim: "iss".into()
        }
    );
    assert_eq!(
        check(&|b| b["aud"] = json!("other-api")).unwrap_err(),
        AuthError::WrongAudience
    );
    assert_eq!(
        check(&|b| b["aud"] = json!(["other", "also-other"])).unwrap_err(),
        AuthError::WrongAudience
    );
    assert!(check(&|b| b["aud"] = json!(["other", AUD])).is_ok());
    assert_eq!(
        check(&|b| {
            b.as_object_mut().unwrap().remove("aud");
        })
        .unwrap_err(),
        AuthError::MissingClaim {
            claim: "aud".into()
        }
    );
    assert_eq!(
        check(&|b| {
            b.as_object_mut().unwrap().remove("sub");
        })
        .unwrap_err(),
        AuthError::MissingClaim {
            claim: "sub".into()
        }
    );
}

#[test]
fn tenant_claim_is_required_validated_and_renamable() {
    let clock = ManualClock::new(t0());
    let (iss, ver) = hs_pair(&clock);
    let token = iss.issue(&TokenClaims::new("alice")).unwrap();
    assert_eq!(
        ver.verify(&token).unwrap_err(),
        AuthError::MissingTenantClaim {
            claim: "tenant_id".into()
        }
    );

    let mut body = valid_body(&clock);
    body["tenant_id"] = json!("x\"; drop schema public; --");
    assert!(matches!(
        ver.verify(&raw_hs256(Some("k1"), body)).unwrap_err(),
        AuthError::InvalidClaim { claim, .. } if claim == "tenant_id"
    ));

    let lenient = JwtVerifier::builder(
        KeySet::new()
            .with(VerificationKey::hmac(Some("k1"), Algorithm::HS256, SECRET).unwrap())
            .unwrap(),
    )
    .issuer(ISS)
    .audience(AUD)
    .require_tenant(false)
    .clock(Arc::new(clock.clone()))
    .build()
    .unwrap();
    assert_eq!(lenient.verify(&token).unwrap().tenant, None);

    // Custom claim names, used consistently by issuer and verifier.
    let names = ClaimNames {
        tenant: "tid".into(),
        roles: "groups".into(),
        scopes: "scp".into(),
    };
    let id = TenantId::new();
    let custom_issuer =
        TokenIssuer::builder(SigningKey::hmac(Some("k1"), Algorithm::HS256, SECRET).unwrap())
            .claim_names(names.clone())
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
    let custom_verifier = JwtVerifier::builder(
        KeySet::new()
            .with(VerificationKey::hmac(Some("k1"), Algorithm::HS256, SECRET).unwrap())
            .unwrap(),
    )
    .claim_names(names)
    .clock(Arc::new(clock.clone()))
    .build()
    .unwrap();
    let token = custom_issuer
        .issue(
            &TokenClaims::new("bob")
                .tenant(TenantKey::Id(id))
                .role("owner"),
        )
        .unwrap();
    let v = custom_verifier.verify(&token).unwrap();
    assert_eq!(v.tenant, Some(TenantKey::Id(id)));
    assert!(v.roles.contains("owner"));
    assert!(v.claims.contains_key("tid") && v.claims.contains_key("groups"));
}

#[test]
fn malformed_tokens_are_typed() {
    let clock = ManualClock::new(t0());
    let (_, ver) = hs_pair(&clock);
    let long = "a".repeat(9000);
    for bad in [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.e30.sig",
        "e30.e30.sig", // header {} has no alg
        long.as_str(),
    ] {
        assert!(
            matches!(ver.verify(bad), Err(AuthError::Malformed { .. })),
            "{:?}",
            &bad[..bad.len().min(20)]
        );
    }
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": "k1"}).to_string());
    let not_json = URL_SAFE_NO_PAD.encode("not json");
    assert!(matches!(
        ver.verify(&format!("{header}.{not_json}.c2ln")),
        Err(AuthError::Malformed { .. }) | Err(AuthError::BadSignature)
    ));
    let crit =
        URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": "k1", "crit": ["exp"]}).to_string());
    assert!(matches!(
        ver.verify(&format!("{crit}.e30.c2ln")),
        Err(AuthError::Malformed { .. })
    ));
}

#[test]
fn rejections_never_echo_tokens_or_secrets() {
    let clock = ManualClock::new(t0());
    let (iss, ver) = hs_pair(&clock);
    let token = iss.issue(&claims()).unwrap();
    clock.advance(Duration::hours(1));
    let err = ver.verify(&token).unwrap_err();
    let secret = String::from_utf8_lossy(SECRET).to_string();
    for text in [err.to_string(), format!("{err:?}"), format!("{ver:?}")] {
        assert!(!text.contains(&token));
        assert!(!text.contains(token.split('.').nth(2).unwrap()));
        assert!(!text.contains(&secret), "{text}");
    }
    let sk = SigningKey::hmac(Some("k1"), Algorithm::HS256, SECRET).unwrap();
    assert!(!format!("{sk:?}").contains(&secret));

    // A hostile kid is shortened and made printable before it is reported.
    let hostile = format!("{}\u{7}\n", "k".repeat(500));
    let token = raw_hs256(Some(&hostile), valid_body(&clock));
    match ver.verify(&token).unwrap_err() {
        AuthError::UnknownKey { kid: Some(kid) } => {
            assert!(kid.len() <= 64 && kid.chars().all(|c| c.is_ascii_graphic()));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn keys_rotate_at_runtime() {
    let clock = ManualClock::new(t0());
    let old = SigningKey::hmac(Some("2025"), Algorithm::HS256, SECRET).unwrap();
    let new_secret = b"the-next-secret-also-32-bytes-or-more!!";
    let new = SigningKey::hmac(Some("2026"), Algorithm::HS256, new_secret).unwrap();
    let old_token = issuer(old, &clock).issue(&claims()).unwrap();
    let new_token = issuer(new, &clock).issue(&claims()).unwrap();

    let old_vk = VerificationKey::hmac(Some("2025"), Algorithm::HS256, SECRET).unwrap();
    let new_vk = VerificationKey::hmac(Some("2026"), Algorithm::HS256, new_secret).unwrap();
    let ver = verifier(KeySet::new().with(old_vk.clone()).unwrap(), &clock);
    assert!(ver.verify(&old_token).is_ok());
    assert!(matches!(
        ver.verify(&new_token),
        Err(AuthError::UnknownKey { .. })
    ));

    // Overlap: both accepted.
    ver.replace_keys(
        KeySet::new()
            .with(old_vk)
            .unwrap()
            .with(new_vk.clone())
            .unwrap(),
    )
    .unwrap();
    assert!(ver.verify(&old_token).is_ok() && ver.verify(&new_token).is_ok());

    // Old key retired.
    ver.replace_keys(KeySet::new().with(new_vk).unwrap())
        .unwrap();
    assert!(matches!(
        ver.verify(&old_token),
        Err(AuthError::UnknownKey { .. })
    ));
    assert!(ver.verify(&new_token).is_ok());
    assert!(ver.replace_keys(KeySet::new()).is_err());
}

#[test]
fn jwks_keys_verify_their_algorithms() {
    let clock = ManualClock::new(t0());
    let jwks = String::from_utf8(fixture("jwks.json")).unwrap();
    let keys = KeySet::from_jwks_json(&jwks).unwrap();
    assert_eq!(keys.len(), 3, "the encryption key is skipped");
    let ver = verifier(keys, &clock);
    let signers = [
        SigningKey::rsa_pem(Some("rsa-1"), Algorithm::RS256, &fixture("rsa_private.pem")).unwrap(),
        SigningKey::ed_pem(Some("ed-1"), &fixture("ed_private.pem")).unwrap(),
        SigningKey::ec_pem(Some("ec-1"), Algorithm::ES256, &fixture("ec_private.pem")).unwrap(),
    ];
    for sk in signers {
        let kid = sk.kid().unwrap().to_owned();
        let token = issuer(sk, &clock).issue(&claims()).unwrap();
        let v = ver.verify(&token).unwrap_or_else(|e| panic!("{kid}: {e}"));
        assert_eq!(v.kid.as_deref(), Some(kid.as_str()));
    }
    assert!(matches!(
        KeySet::from_jwks_json("{\"keys\": [{\"kty\": \"RSA\"}]}"),
        Err(AuthError::InvalidKey { .. })
    ));
    assert!(matches!(
        KeySet::from_jwks_json("not json"),
        Err(AuthError::InvalidKey { .. })
    ));
}

#[test]
fn bad_key_configuration_is_refused_up_front() {
    assert!(matches!(
        VerificationKey::hmac(None, Algorithm::HS256, b"short"),
        Err(AuthError::InvalidKey { .. })
    ));
    assert!(matches!(
        SigningKey::hmac(None, Algorithm::HS512, &[7u8; 32]),
        Err(AuthError::InvalidKey { .. })
    ));
    assert!(matches!(
        VerificationKey::hmac(None, Algorithm::RS256, SECRET),
        Err(AuthError::InvalidKey { .. })
    ));
    assert!(matches!(
        VerificationKey::rsa_pem(None, Algorithm::RS256, b"not a pem"),
        Err(AuthError::InvalidKey { .. })
    ));
    assert!(matches!(
        VerificationKey::ec_pem(None, Algorithm::RS256, &fixture("ec_public.pem")),
        Err(AuthError::InvalidKey { .. })
    ));
    let k = VerificationKey::hmac(Some("a"), Algorithm::HS256, SECRET).unwrap();
    assert!(matches!(
        KeySet::new().with(k.clone()).unwrap().with(k),
        Err(AuthError::InvalidKey { .. })
    ));
    assert!(JwtVerifier::builder(KeySet::new()).build().is_err());
    let one = KeySet::new()
        .with(VerificationKey::hmac(None, Algorithm::HS256, SECRET).unwrap())
        .unwrap();
    assert!(
        JwtVerifier::builder(one)
            .leeway(Duration::hours(1))
            .build()
            .is_err()
    );
    let sk = SigningKey::hmac(None, Algorithm::HS256, SECRET).unwrap();
    assert!(
        TokenIssuer::builder(sk)
            .ttl(Duration::zero())
            .build()
            .is_err()
    );
}
