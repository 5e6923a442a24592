//! saas-tenancy's integration tests: one binary, one module per area.

// Tests fail loudly on unexpected errors; unwrap is the point here.
#![allow(clippy::unwrap_used)]

mod adversarial;
mod audit;
mod catalog;
mod fixtures;
mod leak;
mod lifecycle;
mod lifecycle_races;
mod migrate;
mod model;
mod pg_env;
mod pg_isolation;
mod send;
mod sqlite_audit;
mod sqlite_isolation;
mod sqlite_lifecycle;
mod sqlite_migrate;
mod sqlite_transfer;
mod transfer;
mod two_servers;
mod type_cache;
