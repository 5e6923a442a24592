//! Finding the tenant of a request.
//!
//! A [`RequestResolver`] authenticates the bearer token (if configured),
//! asks each [`TenantResolver`] of its chain which tenant the request names,
//! looks every answer up through a [`TenantLookup`], and builds the
//! [`TenantContext`](crate::TenantContext).
//!
//! **The conflict rule:** every source that names a tenant must name the
//! same one. A token for tenant A sent to `b.example.com` is rejected, never
//! served as A or as B. A token that names a tenant is the anchor: its tenant
//! is looked up first and the other sources are only compared with it, so
//! the answer does not reveal whether the other tenant exists. Sources are
//! compared with the looked-up tenant, so an id and a slug of the same tenant
//! agree.

mod chain;
mod lookup;
mod rejection;
mod resolvers;

pub use chain::{AuthMode, RequestResolver, RequestResolverBuilder};
pub use lookup::{InMemoryTenantLookup, TenantLookup, TenantSummary};
pub use rejection::{RequestRejection, ResolveError};
pub use resolvers::{
    HeaderResolver, HostResolver, PathPrefixResolver, RequestInfo, TenantResolver,
    TokenClaimResolver,
};
