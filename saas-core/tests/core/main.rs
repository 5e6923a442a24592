//! saas-core's integration tests: one binary, one module per area.

// Tests fail loudly on unexpected errors; unwrap is the point here.
#![allow(clippy::unwrap_used)]

mod basics;
mod jwks;
mod jwt;
mod resolve;
mod slug;
