use std::sync::Arc;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use saas_core::{
    Algorithm, AuthError, AuthMode, Error, ErrorKind, HeaderResolver, HostResolver,
    InMemoryTenantLookup, JwtVerifier, KeySet, ManualClock, PathPrefixResolver, RequestInfo,
    RequestRejection, RequestResolver, SigningKey, TenantId, TenantKey, TenantLookup,
    TenantResolver, TenantSlug, TenantStatus, TenantSummary, TokenClaimResolver, TokenClaims,
    TokenIssuer, VerificationKey,
};

const SECRET: &[u8] = b"resolver-tests-secret-of-32-bytes-or-more";

fn slug(s: &str) -> TenantKey {
    TenantKey::Slug(TenantSlug::parse(s).unwrap())
}

fn info<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> RequestInfo<'a> {
    RequestInfo::new(uri, headers)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::try_from(*k).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn host_resolver_reads_one_subdomain_level() {
    let r = HostResolver::new("example.com").unwrap().ignore("app");
    let uri: Uri = "/".parse().unwrap();
    let cases: &[(&str, Option<TenantKey>)] = &[
        ("acme.example.com", Some(slug("acme"))),
        ("ACME.Example.COM:8443", Some(slug("acme"))),
        ("acme.example.com.", Some(slug("acme"))),
        ("example.com", None),
        ("www.example.com", None),
        ("app.example.com", None),
        ("acme.other.com", None),
        ("evilexample.com", None),
        ("[::1]:8080", None),
    ];
    for (host, expected) in cases {
        let h = headers(&[("host", host)]);
        assert_eq!(&r.resolve(&info(&uri, &h)).unwrap(), expected, "{host}");
    }
    for host in [
        "a.b.example.com",
        "-bad.example.com",
        "xn--80ak6aa92e.example.com",
    ] {
        let h = headers(&[("host", host)]);
        assert!(r.resolve(&info(&uri, &h)).is_err(), "{host}");
    }
    // Without a Host header the URI authority is used.
    let uri: Uri = "https://globex.example.com/x".parse().unwrap();
    let h = HeaderMap::new();
    assert_eq!(r.resolve(&info(&uri, &h)).unwrap(), Some(slug("globex")));
    assert!(HostResolver::new("bad domain").is_err());
    assert!(HostResolver::new("").is_err());
}

#[test]
fn header_resolver_takes_ids_or_slugs_once() {
    let r = HeaderResolver::new("x-tenant").unwrap();
    let uri: Uri = "/".parse().unwrap();
    let id = TenantId::new();
    let h = headers(&[("x-tenant", &id.to_string())]);
    assert_eq!(r.resolve(&info(&uri, &h)).unwrap(), Some(TenantKey::Id(id)));
    let h = headers(&[("x-tenant", "acme")]);
    assert_eq!(r.resolve(&info(&uri, &h)).unwrap(), Some(slug("acme")));
    assert_eq!(r.resolve(&info(&uri, &HeaderMap::new())).unwrap(), None);
    let h = headers(&[("x-tenant", "acme"), ("x-tenant", "globex")]);
    assert!(
        r.resolve(&info(&uri, &h)).is_err(),
        "duplicates are refused"
    );
    let h = headers(&[("x-tenant", "x\"; drop schema public; --")]);
    assert!(r.resolve(&info(&uri, &h)).is_err());
    assert!(HeaderResolver::new("bad header\n").is_err());
}

#[test]
fn path_prefix_resolver_reads_the_next_segment() {
    let r = PathPrefixResolver::new("/t/").unwrap();
    let h = HeaderMap::new();
    let resolve = |p: &str| {
        let uri: Uri = p.parse().unwrap();
        r.resolve(&info(&uri, &h))
    };
    assert_eq!(resolve("/t/acme/projects").unwrap(), Some(slug("acme")));
    assert_eq!(resolve("/t/acme").unwrap(), Some(slug("acme")));
    assert_eq!(resolve("/other/acme").unwrap(), None);
    assert!(resolve("/t/").is_err());
    assert!(resolve("/t/%22;drop/x").is_err());
    assert!(PathPrefixResolver::new("t/").is_err());
}

struct Fixture {
    resolver: RequestResolver,
    issuer: TokenIssuer,
    lookup: Arc<InMemoryTenantLookup>,
    acme: TenantId,
    globex: TenantId,
}

fn fixture(auth: AuthMode, with_token_resolver: bool) -> Fixture {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap(),
    ));
    let issuer = TokenIssuer::builder(SigningKey::hmac(None, Algorithm::HS256, SECRET).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    let verifier = JwtVerifier::builder(
        KeySet::new()
            .with(VerificationKey::hmac(None, Algorithm::HS256, SECRET).unwrap())
            .unwrap(),
    )
    .require_tenant(false)
    .clock(clock)
    .build()
    .unwrap();
    let lookup = Arc::new(InMemoryTenantLookup::new());
    let acme = TenantId::new();
    let globex = TenantId::new();
    lookup
        .insert(TenantSummary::active(
            acme,
            TenantSlug::parse("acme").unwrap(),
        ))
        .unwrap();
    lookup
        .insert(TenantSummary::active(
            globex,
            TenantSlug::parse("globex").unwrap(),
        ))
        .unwrap();
    let mut builder = RequestResolver::builder(lookup.clone())
        .verifier(verifier)
        .auth(auth)
        .resolver(HeaderResolver::new("x-tenant").unwrap())
        .resolver(HostResolver::new("example.com").unwrap());
    if with_token_resolver {
        builder = builder.resolver(TokenClaimResolver);
    }
    Fixture {
        resolver: builder.build().unwrap(),
        issuer,
        lookup,
        acme,
        globex,
    }
}

impl Fixture {
    fn token(&self, tenant: Option<TenantKey>) -> String {
        let mut claims = TokenClaims::new("alice").role("member");
        if let Some(t) = tenant {
            claims = claims.tenant(t);
        }
        self.issuer.issue(&claims).unwrap()
    }

    async fn call(
        &self,
        host: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Result<saas_core::TenantContext, RequestRejection> {
        let mut h = headers(extra);
        h.insert("host", HeaderValue::from_str(host).unwrap());
        if let Some(t) = token {
            h.insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            );
        }
        self.resolver.resolve(&"/".parse().unwrap(), &h).await
    }
}

#[tokio::test]
async fn agreeing_sources_resolve_with_the_principal() {
    let f = fixture(AuthMode::Required, true);
    // The token names the tenant by id, the host by slug: they agree.
    let token = f.token(Some(TenantKey::Id(f.acme)));
    let ctx = f.call("acme.example.com", Some(&token), &[]).await.unwrap();
    assert_eq!(ctx.tenant_id(), f.acme);
    assert_eq!(ctx.slug().as_str(), "acme");
    let p = ctx.principal().unwrap();
    assert_eq!(p.subject, "alice");
    assert!(p.has_role("member"));
}

#[tokio::test]
async fn token_for_a_names_host_b_is_rejected() {
    for with_token_resolver in [true, false] {
        let f = fixture(AuthMode::Required, with_token_resolver);
        let token = f.token(Some(TenantKey::Id(f.acme)));
        let err = f
            .call("globex.example.com", Some(&token), &[])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                RequestRejection::Conflict {
                    first: "token",
                    second: "host"
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn header_and_host_must_agree() {
    let f = fixture(AuthMode::Required, true);
    let token = f.token(None);
    let err = f
        .call("acme.example.com", Some(&token), &[("x-tenant", "globex")])
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        RequestRejection::Conflict {
            first: "header",
            second: "host"
        }
    ));
    let globex = f.globex.to_string();
    let ctx = f
        .call("globex.example.com", Some(&token), &[("x-tenant", &globex)])
        .await
        .unwrap();
    assert_eq!(ctx.tenant_id(), f.globex);
}

#[tokio::test]
async fn an_invalid_source_never_falls_through() {
    let f = fixture(AuthMode::Required, true);
    let token = f.token(Some(TenantKey::Id(f.acme)));
    let err = f
        .call(
            "acme.example.com",
            Some(&token),
            &[("x-tenant", "Robert'); DROP TABLE tenants;--")],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RequestRejection::InvalidTenantReference(_)));
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn rejections_map_to_statuses() {
    let f = fixture(AuthMode::Required, true);
    let token = f.token(None);

    let err = f.call("acme.example.com", None, &[]).await.unwrap_err();
    assert!(matches!(
        err,
        RequestRejection::Unauthenticated(AuthError::MissingToken)
    ));
    assert_eq!(err.status(), StatusCode::UNAUTHORIZED);

    let err = f
        .call("acme.example.com", Some("not.a.jwt"), &[])
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::UNAUTHORIZED);

    let err = f.call("example.com", Some(&token), &[]).await.unwrap_err();
    assert!(matches!(err, RequestRejection::NoTenant { .. }));
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);

    let err = f
        .call("initech.example.com", Some(&token), &[])
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        RequestRejection::UnknownTenant {
            source_name: "host"
        }
    ));
    assert_eq!(err.status(), StatusCode::NOT_FOUND);

    f.lookup
        .set_status(f.acme, TenantStatus::Suspended)
        .unwrap();
    let err = f
        .call("acme.example.com", Some(&token), &[])
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        RequestRejection::TenantNotServable {
            status: TenantStatus::Suspended
        }
    ));
    assert_eq!(err.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn authorization_header_must_be_one_bearer_token() {
    let f = fixture(AuthMode::Required, true);
    let token = f.token(None);
    for value in [format!("Basic {token}"), token.clone(), String::new()] {
        let mut h = headers(&[("host", "acme.example.com")]);
        h.insert("authorization", HeaderValue::from_str(&value).unwrap());
        let err = f
            .resolver
            .resolve(&"/".parse().unwrap(), &h)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                RequestRejection::Unauthenticated(AuthError::Malformed { .. })
            ),
            "{value:?}: {err:?}"
        );
    }
    let bearer = format!("Bearer {token}");
    let h = headers(&[
        ("host", "acme.example.com"),
        ("authorization", &bearer),
        ("authorization", &bearer),
    ]);
    assert!(f.resolver.resolve(&"/".parse().unwrap(), &h).await.is_err());
    // The scheme is case-insensitive.
    let h = headers(&[
        ("host", "acme.example.com"),
        ("authorization", &format!("bearer {token}")),
    ]);
    assert!(f.resolver.resolve(&"/".parse().unwrap(), &h).await.is_ok());
}

#[tokio::test]
async fn optional_auth_resolves_anonymous_requests_without_principal() {
    let f = fixture(AuthMode::Optional, true);
    let ctx = f.call("acme.example.com", None, &[]).await.unwrap();
    assert_eq!(ctx.tenant_id(), f.acme);
    assert!(ctx.principal().is_none());
    // A token that is present is still verified.
    let err = f
        .call("acme.example.com", Some("a.b.c"), &[])
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
}

#[derive(Debug)]
struct DownLookup;

#[async_trait]
impl TenantLookup for DownLookup {
    async fn find(&self, _key: &TenantKey) -> Result<Option<TenantSummary>, Error> {
        Err(Error::new(ErrorKind::Unavailable, "catalog unreachable"))
    }
}

#[tokio::test]
async fn an_unreachable_store_is_503_not_404() {
    let resolver = RequestResolver::builder(Arc::new(DownLookup))
        .auth(AuthMode::Optional)
        .resolver(HostResolver::new("example.com").unwrap())
        .build()
        .unwrap();
    let h = headers(&[("host", "acme.example.com")]);
    let err = resolver
        .resolve(&"/".parse().unwrap(), &h)
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(err.kind().is_retryable());
}

#[test]
fn builder_refuses_unsafe_configurations() {
    let lookup = Arc::new(InMemoryTenantLookup::new());
    assert!(
        RequestResolver::builder(lookup.clone())
            .auth(AuthMode::Optional)
            .build()
            .is_err(),
        "no sources"
    );
    assert!(
        RequestResolver::builder(lookup)
            .resolver(TokenClaimResolver)
            .build()
            .is_err(),
        "tokens required but no verifier"
    );
}
