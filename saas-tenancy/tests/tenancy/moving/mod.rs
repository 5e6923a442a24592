//! Moving tenants between placements and servers while they keep writing.

mod fixture;
mod kill;
mod online;
