#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod context;
mod error;
mod id;
mod slug;

pub mod identity;
pub mod resolve;

#[cfg(feature = "axum")]
pub mod http;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use context::{Extensions, Principal, TenantContext, TenantStatus};
pub use error::{Error, ErrorKind};
pub use id::{TenantId, TenantKey};
pub use identity::{
    Algorithm, AuthError, ClaimNames, JwksOptions, JwtVerifier, KeySet, SigningKey, TokenClaims,
    TokenIssuer, VerificationKey, VerifiedToken,
};
pub use resolve::{
    AuthMode, HeaderResolver, HostResolver, InMemoryTenantLookup, PathPrefixResolver, RequestInfo,
    RequestRejection, RequestResolver, RequestResolverBuilder, ResolveError, TenantLookup,
    TenantResolver, TenantSummary, TokenClaimResolver,
};
pub use slug::{DEFAULT_RESERVED_SLUGS, MAX_SLUG_LEN, SlugError, SlugPolicy, TenantSlug};

// The main public types are shared across tasks; keep them Send + Sync.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TenantContext>();
    assert_send_sync::<JwtVerifier>();
    assert_send_sync::<TokenIssuer>();
    assert_send_sync::<RequestResolver>();
    assert_send_sync::<Error>();
    assert_send_sync::<ManualClock>();
};
