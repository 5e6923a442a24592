//! The one integration test binary of `saas-events`.
#![allow(clippy::unwrap_used)]

mod conformance;
mod envelope;
mod errors;
mod middleware;
mod router;
