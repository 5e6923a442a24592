//! The notes API with every tenant's rows in shared tables (row-level security); see `examples/README.md`.
//! Run: `cargo run --bin notes-row`.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    saas_examples::notes::serve("notes-row", saas_tenancy::Strategy::Shared).await
}
