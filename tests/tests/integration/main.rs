//! Cross-crate integration tests: one binary, one module per area.

mod http_layer;
mod tenant_id_sqlx;
