//! Cross-crate integration tests: one binary, one module per area.

// Tests fail loudly on unexpected errors; unwrap is the point here.
#![allow(clippy::unwrap_used)]

mod billing_outbox;
mod billing_tenancy;
mod http_layer;
mod tenant_id_sqlx;
