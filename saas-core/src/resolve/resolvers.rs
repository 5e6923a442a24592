use std::collections::BTreeSet;
use std::fmt;

use http::{HeaderMap, HeaderName, Uri};

use super::ResolveError;
use crate::id::TenantKey;
use crate::identity::VerifiedToken;
use crate::slug::TenantSlug;

/// The parts of a request resolvers may look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The request URI.
    pub uri: &'a Uri,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The verified bearer token, if the request carried one.
    pub token: Option<&'a VerifiedToken>,
}

impl<'a> RequestInfo<'a> {
    /// Request information without a token.
    pub fn new(uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        Self {
            uri,
            headers,
            token: None,
        }
    }

    /// Adds the verified token.
    pub fn with_token(mut self, token: Option<&'a VerifiedToken>) -> Self {
        self.token = token;
        self
    }
}

/// Finds which tenant a request is for, from one source.
///
/// Contract: `Ok(None)` when the source does not name a tenant;
/// [`ResolveError`] when it names one in an unacceptable form (it is never
/// silently ignored: a request that tries to name a tenant and fails must
/// not fall through to another source).
pub trait TenantResolver: Send + Sync + fmt::Debug {
    /// A short name for messages and logs (`"host"`, `"header"`, …).
    fn source(&self) -> &'static str;

    /// The tenant named by this source, if any.
    fn resolve(&self, request: &RequestInfo<'_>) -> Result<Option<TenantKey>, ResolveError>;
}

/// Resolves `{slug}.{base_domain}` hosts, e.g. `acme.example.com`.
///
/// The host is read from the `Host` header, else from the URI. Case and a
/// trailing dot are ignored, and so is the port. The bare base domain and
/// ignored labels (`www` by default) name no tenant. Hosts outside the base
/// domain name no tenant. Deeper names (`a.b.example.com`) are rejected.
#[derive(Debug, Clone)]
pub struct HostResolver {
    suffix: String,
    ignored: BTreeSet<String>,
}

impl HostResolver {
    /// A resolver for subdomains of `base_domain` (e.g. `"example.com"`).
    pub fn new(base_domain: &str) -> Result<Self, crate::Error> {
        let base = base_domain.trim_end_matches('.').to_ascii_lowercase();
        let valid = !base.is_empty()
            && base
                .split('.')
                .all(|label| TenantSlug::parse(label).is_ok());
        if !valid {
            return Err(crate::Error::new(
                crate::ErrorKind::InvalidInput,
                format!("base domain {base_domain:?} is not a valid DNS name"),
            ));
        }
        Ok(Self {
            suffix: format!(".{base}"),
            ignored: BTreeSet::from(["www".to_owned()]),
        })
    }

    /// A subdomain label that names no tenant (e.g. `app`, `api`).
    pub fn ignore(mut self, label: impl Into<String>) -> Self {
        self.ignored.insert(label.into());
        self
    }
}

fn request_host<'a>(request: &RequestInfo<'a>) -> Result<Option<&'a str>, ResolveError> {
    match request.headers.get(http::header::HOST) {
        Some(value) => value
            .to_str()
            .map(Some)
            .map_err(|_| ResolveError::invalid("host", "Host header is not visible ASCII")),
        None => Ok(request.uri.host()),
    }
}

impl TenantResolver for HostResolver {
    fn source(&self) -> &'static str {
        "host"
    }

    fn resolve(&self, request: &RequestInfo<'_>) -> Result<Option<TenantKey>, ResolveError> {
        let Some(host) = request_host(request)? else {
            return Ok(None);
        };
        let host = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
        let Some(label) = host.strip_suffix(&self.suffix) else {
            return Ok(None);
        };
        if label.contains('.') {
            return Err(ResolveError::invalid(
                "host",
                "only one subdomain level names a tenant",
            ));
        }
        if label.is_empty() || self.ignored.contains(label) {
            return Ok(None);
        }
        TenantSlug::parse(label)
            .map(|slug| Some(TenantKey::Slug(slug)))
            .map_err(|_| ResolveError::invalid("host", "subdomain is not a valid tenant slug"))
    }
}

fn strip_port(host: &str) -> &str {
    // IPv6 literals ("[::1]:8080") never name a tenant; keep them whole so
    // they simply fail to match the base domain.
    if host.starts_with('[') {
        return host;
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Resolves a header carrying a tenant id or slug (e.g. `X-Tenant`).
#[derive(Debug, Clone)]
pub struct HeaderResolver {
    name: HeaderName,
}

impl HeaderResolver {
    /// A resolver reading header `name`.
    pub fn new(name: &str) -> Result<Self, crate::Error> {
        let name = HeaderName::try_from(name).map_err(|_| {
            crate::Error::new(
                crate::ErrorKind::InvalidInput,
                format!("{name:?} is not a valid header name"),
            )
        })?;
        Ok(Self { name })
    }
}

impl TenantResolver for HeaderResolver {
    fn source(&self) -> &'static str {
        "header"
    }

    fn resolve(&self, request: &RequestInfo<'_>) -> Result<Option<TenantKey>, ResolveError> {
        let mut values = request.headers.get_all(&self.name).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(ResolveError::invalid(
                "header",
                "the tenant header appears more than once",
            ));
        }
        let value = value
            .to_str()
            .map_err(|_| ResolveError::invalid("header", "tenant header is not visible ASCII"))?;
        TenantKey::parse(value.trim()).map(Some).map_err(|_| {
            ResolveError::invalid("header", "tenant header is neither a tenant id nor a slug")
        })
    }
}

/// Resolves a path prefix such as `/t/{tenant}/…`.
#[derive(Debug, Clone)]
pub struct PathPrefixResolver {
    prefix: String,
}

impl PathPrefixResolver {
    /// A resolver for paths starting with `prefix` (e.g. `"/t/"`); the next
    /// segment is the tenant id or slug.
    pub fn new(prefix: &str) -> Result<Self, crate::Error> {
        if !prefix.starts_with('/') || !prefix.ends_with('/') {
            return Err(crate::Error::new(
                crate::ErrorKind::InvalidInput,
                format!("path prefix {prefix:?} must start and end with '/'"),
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }
}

impl TenantResolver for PathPrefixResolver {
    fn source(&self) -> &'static str {
        "path"
    }

    fn resolve(&self, request: &RequestInfo<'_>) -> Result<Option<TenantKey>, ResolveError> {
        let Some(rest) = request.uri.path().strip_prefix(&self.prefix) else {
            return Ok(None);
        };
        let segment = rest.split('/').next().unwrap_or_default();
        if segment.is_empty() {
            return Err(ResolveError::invalid(
                "path",
                "the path prefix is not followed by a tenant",
            ));
        }
        TenantKey::parse(segment).map(Some).map_err(|_| {
            ResolveError::invalid("path", "path segment is neither a tenant id nor a slug")
        })
    }
}

/// Resolves the tenant named by the verified token's tenant claim.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenClaimResolver;

impl TenantResolver for TokenClaimResolver {
    fn source(&self) -> &'static str {
        "token"
    }

    fn resolve(&self, request: &RequestInfo<'_>) -> Result<Option<TenantKey>, ResolveError> {
        Ok(request.token.and_then(|t| t.tenant.clone()))
    }
}
