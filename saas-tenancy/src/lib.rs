#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The README links items of every feature (docs.rs builds with all of
// them, where every link is checked); a build without some of them
// documents what it has instead of failing on those links.
#![cfg_attr(
    not(all(feature = "postgres", feature = "sqlite", feature = "testing")),
    allow(rustdoc::broken_intra_doc_links)
)]

pub mod archive;
mod audit;
pub mod catalog;
#[cfg(feature = "_sql")]
mod cluster_choice;
mod error;
#[cfg(feature = "_sql")]
mod fleet;
mod hooks;
mod ident;
pub mod migration;
mod moving;
#[cfg(feature = "_sql")]
mod observe;
mod placement;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
mod record;
#[cfg(feature = "_sql")]
pub mod registry;
#[cfg(feature = "_sql")]
mod scoped;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;
#[cfg(feature = "_sql")]
mod tenancy_core;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use audit::{AuditFinding, AuditObject, Weakness};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use catalog::PgCatalog;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use catalog::SqliteCatalog;
pub use catalog::{Catalog, CatalogLookup, DynCatalog, InMemoryCatalog};
pub use error::TenancyError;
#[cfg(feature = "_sql")]
pub use error::database_kind;
pub use hooks::{LifecycleEvent, LifecycleHooks, NoHooks};
pub use ident::{SqlIdent, TenantTable};
pub use moving::{MoveMethod, MovePhase, MoveProgress, MoveProgressFn, MoveReport};
pub use placement::{ClusterName, Placement, PlacementPolicy, Strategy, TenantObjectName};
pub use record::{
    ListOptions, MAX_DISPLAY_NAME_LEN, NewTenant, TenantPage, TenantRecord, transition_allowed,
};
#[cfg(feature = "_sql")]
pub use scoped::{Tenancy, TenantTransaction};
