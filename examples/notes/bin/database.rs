//! The notes API with a database (or SQLite file) per tenant; see `examples/README.md`.
//! Run: `cargo run --bin notes-database`.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    saas_examples::notes::serve("notes-database", saas_tenancy::Strategy::Database).await
}
