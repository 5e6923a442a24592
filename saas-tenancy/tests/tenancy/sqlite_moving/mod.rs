//! Online moves of SQLite tenants (shared file ↔ tenant file, on one
//! cluster or between two): eight writers throughout, a second tenancy
//! instance sharing the files, kill and abort at each phase.

mod fixture;
mod kill;
mod online;
mod pg_side;
mod to_postgres;
mod to_postgres_refused;
mod writers;
