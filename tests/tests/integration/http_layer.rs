//! The axum layer end to end, through a real router.

use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use chrono::Duration;
use http::{Request, StatusCode};
use saas_core::http::{Tenant, TenantLayer};
use saas_core::{
    Algorithm, HostResolver, InMemoryTenantLookup, JwtVerifier, KeySet, RequestResolver,
    SigningKey, TenantId, TenantKey, TenantSlug, TenantStatus, TenantSummary, TokenClaimResolver,
    TokenClaims, TokenIssuer, VerificationKey,
};
use serde_json::Value;
use tower::ServiceExt;
use tracing::span;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

const SECRET: &[u8] = b"http-layer-tests-secret-32-bytes-min";

struct App {
    router: Router,
    issuer: TokenIssuer,
    lookup: Arc<InMemoryTenantLookup>,
    acme: TenantId,
}

async fn whoami(Tenant(ctx): Tenant) -> String {
    let subject = ctx
        .principal()
        .map(|p| p.subject.clone())
        .unwrap_or_default();
    format!("{} {} {}", ctx.slug(), ctx.tenant_id(), subject)
}

fn app() -> App {
    spans();
    let issuer = TokenIssuer::builder(SigningKey::hmac(None, Algorithm::HS256, SECRET).unwrap())
        .build()
        .unwrap();
    let verifier = JwtVerifier::builder(
        KeySet::new()
            .with(VerificationKey::hmac(None, Algorithm::HS256, SECRET).unwrap())
            .unwrap(),
    )
    .build()
    .unwrap();
    let lookup = Arc::new(InMemoryTenantLookup::new());
    let acme = TenantId::new();
    lookup
        .insert(TenantSummary::active(
            acme,
            TenantSlug::parse("acme").unwrap(),
        ))
        .unwrap();
    lookup
        .insert(TenantSummary::active(
            TenantId::new(),
            TenantSlug::parse("globex").unwrap(),
        ))
        .unwrap();
    let resolver = RequestResolver::builder(lookup.clone())
        .verifier(verifier)
        .resolver(HostResolver::new("example.com").unwrap())
        .resolver(TokenClaimResolver)
        .build()
        .unwrap();
    let router = Router::new()
        .route("/whoami", get(whoami))
        .layer(TenantLayer::new(resolver))
        // Outside the layer: a wiring mistake the extractor must report.
        .route("/unprotected", get(whoami));
    App {
        router,
        issuer,
        lookup,
        acme,
    }
}

async fn send(
    router: &Router,
    host: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String, http::HeaderMap) {
    let mut req = Request::get(path).header("host", host);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap(), headers)
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap();
    v["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_valid_request_reaches_the_handler_with_its_tenant() {
    let app = app();
    let token = app
        .issuer
        .issue(&TokenClaims::new("alice").tenant(TenantKey::Id(app.acme)))
        .unwrap();
    let (status, body, _) = send(&app.router, "acme.example.com", "/whoami", Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, format!("acme {} alice", app.acme));
}

#[tokio::test]
async fn rejections_are_json_with_the_right_status() {
    let app = app();
    let acme_token = app
        .issuer
        .issue(&TokenClaims::new("alice").tenant(TenantKey::Id(app.acme)))
        .unwrap();
    let untenanted = app.issuer.issue(&TokenClaims::new("bob")).unwrap();
    let expired = app
        .issuer
        .issue_with_ttl(
            &TokenClaims::new("alice").tenant(TenantKey::Id(app.acme)),
            Duration::minutes(-10),
        )
        .unwrap();

    let (status, body, headers) = send(&app.router, "acme.example.com", "/whoami", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "unauthenticated");
    assert_eq!(headers["www-authenticate"], "Bearer");

    let (status, body, _) = send(&app.router, "acme.example.com", "/whoami", Some(&expired)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("expired"), "{body}");

    let (status, body, _) = send(
        &app.router,
        "acme.example.com",
        "/whoami",
        Some(&untenanted),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("tenant claim"), "{body}");

    let (status, body, _) = send(
        &app.router,
        "globex.example.com",
        "/whoami",
        Some(&acme_token),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "tenant_conflict");

    let (status, body, _) = send(
        &app.router,
        "initech.example.com",
        "/whoami",
        Some(&acme_token),
    )
    .await;
    // 403, not 404: an acme token cannot probe which other tenants exist.
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_code(&body), "tenant_conflict");

    let initech_token = app
        .issuer
        .issue(&TokenClaims::new("carol").tenant(TenantKey::parse("initech").unwrap()))
        .unwrap();
    let (status, body, _) = send(
        &app.router,
        "initech.example.com",
        "/whoami",
        Some(&initech_token),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "unknown_tenant");

    let (status, body, _) =
        send(&app.router, "a.b.example.com", "/whoami", Some(&acme_token)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "invalid_tenant_reference");

    app.lookup
        .set_status(app.acme, TenantStatus::Suspended)
        .unwrap();
    let (status, body, _) = send(
        &app.router,
        "acme.example.com",
        "/whoami",
        Some(&acme_token),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "tenant_not_servable");
}

#[tokio::test]
async fn the_extractor_without_the_layer_is_a_500_not_a_tenant() {
    let app = app();
    let (status, body, _) = send(&app.router, "acme.example.com", "/unprotected", None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(&body), "missing_tenant_layer");
}

/// Records the `tenant_id` field of every `tenant_request` span.
#[derive(Clone, Default)]
struct SpanRecorder(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> Layer<S> for SpanRecorder {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, _id: &span::Id, _ctx: Context<'_, S>) {
        struct Visit<'a>(&'a mut Vec<String>);
        impl tracing::field::Visit for Visit<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "tenant_id" {
                    self.0.push(format!("{value:?}"));
                }
            }
        }
        if attrs.metadata().name() == "tenant_request" {
            let mut seen = self.0.lock().unwrap();
            attrs.record(&mut Visit(&mut seen));
        }
    }
}

/// The process-wide span recorder, installed before any test in this binary
/// builds a router.
///
/// tracing caches each callsite's interest the first time it fires. A
/// recorder installed per test (`set_default`) races with other tests firing
/// the layer's span for the first time on their threads and can cache
/// "never" for it, hiding the span (CI saw exactly that). Installing one
/// global recorder before any span can fire leaves nothing to race; each
/// test then looks only for its own tenant, whose id is fresh per `app()`.
fn spans() -> &'static SpanRecorder {
    static RECORDER: OnceLock<SpanRecorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder = SpanRecorder::default();
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(recorder.clone()),
        )
        .expect("no other global subscriber in this test binary");
        recorder
    })
}

#[tokio::test]
async fn request_spans_carry_the_tenant_id() {
    let app = app();
    let token = app
        .issuer
        .issue(&TokenClaims::new("alice").tenant(TenantKey::Id(app.acme)))
        .unwrap();
    let (status, _, _) = send(&app.router, "acme.example.com", "/whoami", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    let acme = app.acme.to_string();
    let seen = spans().0.lock().unwrap();
    let mine = seen.iter().filter(|id| **id == acme).count();
    assert_eq!(mine, 1, "one tenant_request span with this tenant's id");
}
