//! The notes API with new tenants placed by `Mode::Row`; see
//! `examples/README.md`. Run: `cargo run --bin notes-row`.

use saas_examples::notes::{Mode, serve};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    serve(Mode::Row).await
}
