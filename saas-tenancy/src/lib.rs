#![doc = include_str!("../README.md")]

pub mod archive;
mod audit;
pub mod catalog;
mod cluster_choice;
mod error;
#[cfg(feature = "_sql")]
mod fleet;
mod hooks;
mod ident;
pub mod migration;
mod placement;
#[cfg(feature = "postgres")]
pub mod postgres;
mod record;
#[cfg(feature = "_sql")]
pub mod registry;
#[cfg(feature = "_sql")]
mod scoped;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use audit::{AuditFinding, AuditObject, Weakness};
#[cfg(feature = "postgres")]
pub use catalog::PostgresCatalog;
#[cfg(feature = "sqlite")]
pub use catalog::SqliteCatalog;
pub use catalog::{Catalog, CatalogLookup, DynCatalog, InMemoryCatalog};
pub use error::TenancyError;
pub use hooks::{LifecycleEvent, LifecycleHooks, NoHooks};
pub use ident::{SqlIdent, TenantTable};
pub use placement::{ClusterName, Placement, PlacementPolicy, Strategy, TenantObjectName};
pub use record::{
    ListOptions, MAX_DISPLAY_NAME_LEN, NewTenant, TenantPage, TenantRecord, transition_allowed,
};
#[cfg(feature = "_sql")]
pub use scoped::{Tenancy, TenantTransaction};
