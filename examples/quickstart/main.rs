//! Quickstart: issue a token, resolve the tenant of a request, print the
//! tenant context — and watch the conflict rule refuse a token used on
//! another tenant's host.
//!
//! Run with `cargo run --example quickstart`. No server needed.

use std::error::Error;
use std::sync::Arc;

use saas_core::{
    Algorithm, HostResolver, InMemoryTenantLookup, JwtVerifier, KeySet, RequestResolver,
    SigningKey, TenantId, TenantKey, TenantSlug, TenantSummary, TokenClaimResolver, TokenClaims,
    TokenIssuer, VerificationKey,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // Keys: one HS256 secret here; RS256/ES256/EdDSA and JWKS work the same.
    let secret = b"quickstart-secret-of-at-least-32-bytes";
    let issuer = TokenIssuer::builder(SigningKey::hmac(Some("k1"), Algorithm::HS256, secret)?)
        .issuer("https://auth.quickstart.test")
        .audience("quickstart-api")
        .build()?;
    let verifier = JwtVerifier::builder(KeySet::new().with(VerificationKey::hmac(
        Some("k1"),
        Algorithm::HS256,
        secret,
    )?)?)
    .issuer("https://auth.quickstart.test")
    .audience("quickstart-api")
    .build()?;

    // Two tenants in an in-memory lookup (the tenancy catalog plugs in here).
    let lookup = Arc::new(InMemoryTenantLookup::new());
    let acme = TenantId::new();
    let globex = TenantId::new();
    lookup.insert(TenantSummary::active(acme, TenantSlug::parse("acme")?))?;
    lookup.insert(TenantSummary::active(globex, TenantSlug::parse("globex")?))?;

    let resolver = RequestResolver::builder(lookup)
        .verifier(verifier)
        .resolver(HostResolver::new("quickstart.test")?)
        .resolver(TokenClaimResolver)
        .build()?;

    let token = issuer.issue(
        &TokenClaims::new("alice@acme")
            .tenant(TenantKey::Id(acme))
            .role("admin")
            .scope("projects:write"),
    )?;
    println!("issued a token for alice@acme ({} bytes)", token.len());

    let ctx = resolver
        .resolve(
            &"https://acme.quickstart.test/projects".parse()?,
            &bearer(&token)?,
        )
        .await?;
    let principal = ctx.principal().ok_or("the context has no principal")?;
    println!(
        "acme.quickstart.test -> tenant {} ({}), subject {}, roles {:?}, scopes {:?}",
        ctx.slug(),
        ctx.tenant_id(),
        principal.subject,
        principal.roles,
        principal.scopes
    );

    match resolver
        .resolve(
            &"https://globex.quickstart.test/projects".parse()?,
            &bearer(&token)?,
        )
        .await
    {
        Ok(_) => return Err("a token for acme was accepted on globex's host".into()),
        Err(rejection) => println!(
            "globex.quickstart.test with acme's token -> HTTP {}: {rejection}",
            rejection.status()
        ),
    }
    Ok(())
}

fn bearer(token: &str) -> Result<http::HeaderMap, Box<dyn Error>> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    Ok(headers)
}
