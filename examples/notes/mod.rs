//! The notes API: a small multi-tenant SaaS over HTTP (projects and notes)
//! composed from every saas-foundation crate.
//!
//! - **saas-core**: sign-up issues a JWT; each request is authenticated and
//!   its tenant resolved from the `X-Tenant` header or the subdomain of
//!   `<slug>.localhost`, anchored by the token's tenant claim.
//! - **saas-tenancy**: every read and write goes through a tenant-scoped
//!   PostgreSQL transaction; the mode decides where new tenants live
//!   (shared tables under row-level security, a schema each, or a database
//!   each).
//! - **saas-billing**: a free plan (3 projects, 1,000 API calls a month)
//!   and a pro plan; every API call is metered; `GET /invoice` rates the
//!   open period.
//! - **saas-events**: each change is published to the transactional outbox
//!   inside the same tenant transaction; a relay forwards it to an
//!   in-process bus whose subscriber writes the tenant's audit log.

mod api;
mod billing;
mod schema;
mod server;
mod store;

pub use server::serve;
