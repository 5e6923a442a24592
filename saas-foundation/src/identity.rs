//! A host's own tokens, in one value: an HS256 issuer (sign-up and login
//! hand tokens out) and the verifier that checks them, and the request
//! resolver that trusts them.

use std::sync::Arc;

use saas_core::{
    Algorithm, AuthError, JwtVerifier, KeySet, RequestResolver, RequestResolverBuilder, SigningKey,
    TokenIssuer, VerificationKey,
};
use saas_tenancy::{CatalogLookup, DynCatalog};

use crate::config::Secret;

/// The key id tokens are signed under, so a second key can be added
/// beside it later (rotation) without breaking tokens already out.
const KEY_ID: &str = "hs256-1";

/// Tokens the host issues itself, signed with one secret (HS256) for one
/// audience, and verified with the same.
///
/// ```
/// use saas_core::{TenantKey, TenantId, TokenClaims};
/// use saas_foundation::config::Secret;
/// use saas_foundation::identity::Identity;
///
/// let identity = Identity::hs256(&Secret::random(), "notes-api")?;
/// let tenant = TenantId::new();
/// let token = identity.issuer().issue(&TokenClaims::new("owner").tenant(TenantKey::Id(tenant)))?;
/// assert_eq!(identity.verifier().verify(&token)?.tenant, Some(TenantKey::Id(tenant)));
/// # Ok::<(), saas_core::AuthError>(())
/// ```
#[derive(Clone)]
pub struct Identity {
    issuer: Arc<TokenIssuer>,
    verifier: JwtVerifier,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

impl Identity {
    /// Tokens signed and verified with `secret` (HS256), issued for and
    /// accepted only with the audience `audience`.
    ///
    /// # Errors
    /// [`AuthError`]: a secret too short for HS256 (under 32 bytes), an
    /// empty audience.
    pub fn hs256(secret: &Secret, audience: &str) -> Result<Self, AuthError> {
        let key = SigningKey::hmac(Some(KEY_ID), Algorithm::HS256, secret.expose())?;
        let issuer = TokenIssuer::builder(key).audience(audience).build()?;
        let key = VerificationKey::hmac(Some(KEY_ID), Algorithm::HS256, secret.expose())?;
        let verifier = JwtVerifier::builder(KeySet::new().with(key)?)
            .audience(audience)
            .build()?;
        Ok(Identity {
            issuer: Arc::new(issuer),
            verifier,
        })
    }

    /// Issues tokens.
    pub fn issuer(&self) -> &Arc<TokenIssuer> {
        &self.issuer
    }

    /// Verifies tokens.
    pub fn verifier(&self) -> &JwtVerifier {
        &self.verifier
    }

    /// A request resolver that looks tenants up in `catalog` and requires
    /// a token this identity verifies; add the resolvers that name the
    /// tenant (a header, the host, the token's claim), then build.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use saas_core::{HeaderResolver, TokenClaimResolver};
    /// use saas_foundation::config::Secret;
    /// use saas_foundation::identity::Identity;
    /// use saas_core::SystemClock;
    /// use saas_tenancy::{DynCatalog, InMemoryCatalog};
    ///
    /// let catalog: DynCatalog = Arc::new(InMemoryCatalog::new(Arc::new(SystemClock)));
    /// let resolver = Identity::hs256(&Secret::random(), "api")?
    ///     .resolver(catalog)
    ///     .resolver(HeaderResolver::new("x-tenant")?)
    ///     .resolver(TokenClaimResolver)
    ///     .build()?;
    /// # let _ = resolver;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resolver(&self, catalog: DynCatalog) -> RequestResolverBuilder {
        RequestResolver::builder(Arc::new(CatalogLookup::new(catalog)))
            .verifier(self.verifier.clone())
    }
}
