//! Runnable examples for saas-foundation; see `examples/README.md`.
//!
//! The library part is the notes API shared by the three `notes-*`
//! binaries, one per tenancy mode: the application code is the same, only
//! the placement of new tenants differs.

pub mod notes;
