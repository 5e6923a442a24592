//! saas-core's integration tests: one binary, one module per area.

mod basics;
mod jwt;
mod resolve;
mod slug;
