use std::fmt;
use std::sync::Arc;

use http::HeaderMap;

use super::{RequestInfo, RequestRejection, TenantLookup, TenantResolver, TenantSummary};
use crate::context::TenantContext;
use crate::identity::{AuthError, JwtVerifier, VerifiedToken};

/// Whether requests must carry a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// A valid token is required (default).
    #[default]
    Required,
    /// A token is verified when present; requests without one are resolved
    /// from the other sources and get no principal.
    Optional,
}

/// Authenticates a request and resolves its tenant: the engine behind the
/// HTTP layer, usable directly by other transports (gRPC, queues).
///
/// ```
/// use std::sync::Arc;
/// use saas_core::{HostResolver, InMemoryTenantLookup, RequestResolver, TenantId, TenantSlug,
///                 TenantSummary, AuthMode};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let lookup = Arc::new(InMemoryTenantLookup::new());
/// let id = TenantId::new();
/// lookup.insert(TenantSummary::active(id, TenantSlug::parse("acme")?))?;
///
/// let resolver = RequestResolver::builder(lookup)
///     .auth(AuthMode::Optional)
///     .resolver(HostResolver::new("example.com")?)
///     .build()?;
///
/// let (parts, ()) = http::Request::get("https://acme.example.com/projects")
///     .body(())?
///     .into_parts();
/// let ctx = resolver.resolve(&parts.uri, &parts.headers).await?;
/// assert_eq!(ctx.tenant_id(), id);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct RequestResolver {
    inner: Arc<Inner>,
}

struct Inner {
    verifier: Option<JwtVerifier>,
    auth: AuthMode,
    resolvers: Vec<Box<dyn TenantResolver>>,
    lookup: Arc<dyn TenantLookup>,
}

/// Builds a [`RequestResolver`].
pub struct RequestResolverBuilder {
    inner: Inner,
}

impl RequestResolver {
    /// Starts a builder that looks tenants up in `lookup`.
    pub fn builder(lookup: Arc<dyn TenantLookup>) -> RequestResolverBuilder {
        RequestResolverBuilder {
            inner: Inner {
                verifier: None,
                auth: AuthMode::Required,
                resolvers: Vec::new(),
                lookup,
            },
        }
    }

    /// Authenticates and resolves a request given its URI and headers.
    pub async fn resolve(
        &self,
        uri: &http::Uri,
        headers: &HeaderMap,
    ) -> Result<TenantContext, RequestRejection> {
        let result = self.resolve_inner(uri, headers).await;
        if let Err(rejection) = &result {
            tracing::debug!(code = rejection.code(), %rejection, "request rejected");
            #[cfg(feature = "metrics")]
            crate::metrics::resolver_rejected(rejection.code());
        }
        result
    }

    async fn resolve_inner(
        &self,
        uri: &http::Uri,
        headers: &HeaderMap,
    ) -> Result<TenantContext, RequestRejection> {
        let inner = &*self.inner;
        let token = self.authenticate(headers)?;
        let request = RequestInfo::new(uri, headers).with_token(token.as_ref());

        // A token bound to a tenant is the anchor: that tenant is looked up
        // first and every other source is only compared with it, so a token
        // for tenant A can neither be served as B nor probe whether B exists.
        let mut chosen: Option<(&'static str, TenantSummary)> = None;
        if let Some(bound) = token.as_ref().and_then(|t| t.tenant.as_ref()) {
            chosen = Some(("token", self.find(bound, "token").await?));
        }
        for resolver in &inner.resolvers {
            let Some(key) = resolver.resolve(&request)? else {
                continue;
            };
            let source = resolver.source();
            match &chosen {
                // Compared by key, without a lookup: an id and a slug of the
                // same tenant agree.
                Some((first, tenant)) => {
                    if !names(&key, tenant) {
                        return Err(RequestRejection::Conflict {
                            first,
                            second: source,
                        });
                    }
                }
                None => chosen = Some((source, self.find(&key, source).await?)),
            }
        }

        let Some((_, tenant)) = chosen else {
            let tried = inner
                .resolvers
                .iter()
                .map(|r| r.source())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(RequestRejection::NoTenant { tried });
        };
        if !tenant.status.is_servable() {
            return Err(RequestRejection::TenantNotServable {
                status: tenant.status,
            });
        }
        let mut ctx = TenantContext::new(tenant.id, tenant.slug);
        ctx.extensions_mut().extend(&tenant.extensions);
        if let Some(token) = &token {
            ctx = ctx.with_principal(token.principal());
        }
        Ok(ctx)
    }

    async fn find(
        &self,
        key: &crate::TenantKey,
        source: &'static str,
    ) -> Result<TenantSummary, RequestRejection> {
        self.inner
            .lookup
            .find(key)
            .await
            .map_err(RequestRejection::Lookup)?
            .ok_or(RequestRejection::UnknownTenant {
                source_name: source,
            })
    }

    fn authenticate(&self, headers: &HeaderMap) -> Result<Option<VerifiedToken>, AuthError> {
        let inner = &*self.inner;
        let Some(verifier) = &inner.verifier else {
            return Ok(None);
        };
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return match inner.auth {
                AuthMode::Required => Err(AuthError::MissingToken),
                AuthMode::Optional => Ok(None),
            };
        };
        if values.next().is_some() {
            return Err(AuthError::Malformed {
                reason: "more than one Authorization header",
            });
        }
        let value = value.to_str().map_err(|_| AuthError::Malformed {
            reason: "Authorization header is not visible ASCII",
        })?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(AuthError::Malformed {
                    reason: "Authorization header is not of the form `Bearer <jwt>`",
                });
            }
        };
        verifier.verify(token).map(Some)
    }
}

impl fmt::Debug for RequestResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestResolver")
            .field("verifier", &self.inner.verifier)
            .field("auth", &self.inner.auth)
            .field("resolvers", &self.inner.resolvers)
            .field("lookup", &self.inner.lookup)
            .finish()
    }
}

impl fmt::Debug for RequestResolverBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestResolverBuilder")
            .field("auth", &self.inner.auth)
            .field("resolvers", &self.inner.resolvers)
            .finish_non_exhaustive()
    }
}

impl RequestResolverBuilder {
    /// Verifies bearer tokens with `verifier`.
    pub fn verifier(mut self, verifier: JwtVerifier) -> Self {
        self.inner.verifier = Some(verifier);
        self
    }

    /// Whether a token is required (default) or optional.
    pub fn auth(mut self, mode: AuthMode) -> Self {
        self.inner.auth = mode;
        self
    }

    /// Appends a tenant source; sources are consulted in the order added.
    pub fn resolver(mut self, resolver: impl TenantResolver + 'static) -> Self {
        self.inner.resolvers.push(Box::new(resolver));
        self
    }

    /// Validates the configuration: at least one source, and a verifier
    /// whenever tokens are required.
    pub fn build(self) -> Result<RequestResolver, crate::Error> {
        if self.inner.resolvers.is_empty() {
            return Err(crate::Error::new(
                crate::ErrorKind::InvalidInput,
                "no tenant resolvers configured; add at least one with .resolver(..)",
            ));
        }
        if self.inner.auth == AuthMode::Required && self.inner.verifier.is_none() {
            return Err(crate::Error::new(
                crate::ErrorKind::InvalidInput,
                "tokens are required but no verifier is configured; call .verifier(..) or .auth(AuthMode::Optional)",
            ));
        }
        Ok(RequestResolver {
            inner: Arc::new(self.inner),
        })
    }
}

/// Whether `key` names `tenant`.
fn names(key: &crate::TenantKey, tenant: &TenantSummary) -> bool {
    match key {
        crate::TenantKey::Id(id) => *id == tenant.id,
        crate::TenantKey::Slug(slug) => *slug == tenant.slug,
    }
}
