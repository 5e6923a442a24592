//! saas-tenancy's integration tests: one binary, one module per area.

// Tests fail loudly on unexpected errors; unwrap is the point here.
#![allow(clippy::unwrap_used)]

mod adversarial;
mod audit;
mod audit_policies;
mod audit_roles;
mod audit_tenants;
mod catalog;
mod deletion_fence;
mod escape_hatch;
mod fixtures;
mod leak;
mod leak_harness;
mod lifecycle;
mod lifecycle_races;
mod manifest;
mod metrics;
mod migrate;
mod model;
mod moving;
mod numbers;
mod pg_affinity;
mod pg_bouncer;
mod pg_cancel;
mod pg_env;
mod pg_isolation;
mod pg_leftovers;
mod pg_past_budget;
mod pg_session_state;
mod pg_spares;
mod placement_tamper;
mod redaction;
mod registry;
mod rls_plan;
mod send;
mod shared_migrations;
mod sqlite_adversarial;
mod sqlite_audit;
mod sqlite_clusters;
mod sqlite_foreign_keys;
mod sqlite_isolation;
mod sqlite_lifecycle;
mod sqlite_migrate;
mod sqlite_moving;
mod sqlite_pools;
mod sqlite_transfer;
mod suspended;
mod transfer;
mod two_servers;
mod type_cache;
