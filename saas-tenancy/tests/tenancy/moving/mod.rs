//! Moving tenants between placements and servers while they keep writing.

mod capture;
mod columns;
mod fence;
mod fixture;
mod isolation;
mod kill;
mod online;
mod purge;
mod queues;
mod retention;
mod to_sqlite;
mod writers;
