//! Runnable examples for saas-foundation; see `examples/README.md`.
