//! The notes API with new tenants placed by `Mode::Database`; see
//! `examples/README.md`. Run: `cargo run --bin notes-database`.

use saas_examples::notes::{Mode, serve};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    serve(Mode::Database).await
}
