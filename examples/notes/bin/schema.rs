//! The notes API with a PostgreSQL schema per tenant; see `examples/README.md`.
//! Run: `cargo run --bin notes-schema`.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    saas_examples::notes::serve("notes-schema", saas_tenancy::Strategy::Schema).await
}
