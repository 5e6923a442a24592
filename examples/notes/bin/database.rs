//! The notes API with new tenants placed by `Mode::Database`; see
//! `examples/README.md`. Run: `cargo run --bin notes-database`.

use saas_examples::notes::{Mode, NotesConfig, run};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    run(NotesConfig::from_env(Mode::Database)?).await
}
