//! The tenant catalog: who the tenants are and where they live.

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "_sql")]
mod row;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use saas_core::{TenantId, TenantKey, TenantLookup, TenantSlug, TenantStatus, TenantSummary};

use crate::error::TenancyError;
use crate::placement::Placement;
use crate::record::{ListOptions, NewTenant, TenantPage, TenantRecord};

pub use memory::InMemoryCatalog;
#[cfg(feature = "postgres")]
pub use postgres::PgCatalog;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteCatalog;

/// Stores tenant records.
///
/// Behaviour contract (checked by [`crate::testing::catalog`]):
/// - `create` stores the record as given; a second tenant with the same
///   slug or id is [`TenancyError::AlreadyExists`], also when two creates
///   race (exactly one wins);
/// - `get` / `get_by_slug` return `Ok(None)` for unknown tenants;
/// - `list` returns tenants ordered by id, `limit` at a time, filtered by
///   the options, with `next` set while more may follow;
/// - `set_status` applies [`transition_allowed`](crate::transition_allowed)
///   atomically against the stored status (a concurrent change cannot be
///   overwritten by a stale decision), updates `updated_at`, and returns
///   the new record; unknown tenants are [`TenancyError::TenantNotFound`];
/// - `cut_over` (optional) changes a `moving` tenant's placement and
///   status together, once, as its own docs say.
#[async_trait]
pub trait Catalog: Send + Sync + fmt::Debug {
    /// Adds a tenant.
    async fn create(&self, tenant: NewTenant) -> Result<TenantRecord, TenancyError>;

    /// The tenant with `id`.
    async fn get(&self, id: TenantId) -> Result<Option<TenantRecord>, TenancyError>;

    /// The tenant with `slug`.
    async fn get_by_slug(&self, slug: &TenantSlug) -> Result<Option<TenantRecord>, TenancyError>;

    /// A page of tenants.
    async fn list(&self, options: &ListOptions) -> Result<TenantPage, TenancyError>;

    /// Every tenant matching `options`' filters, in id order, read page by
    /// page with `options.limit` as the page size (`after` is ignored).
    async fn list_all(&self, options: &ListOptions) -> Result<Vec<TenantRecord>, TenancyError> {
        let mut page_options = options.clone().with_after(None);
        let mut all = Vec::new();
        loop {
            let page = self.list(&page_options).await?;
            all.extend(page.tenants);
            match page.next {
                Some(next) => page_options = page_options.with_after(Some(next)),
                None => return Ok(all),
            }
        }
    }

    /// Moves a tenant to `to`.
    async fn set_status(
        &self,
        id: TenantId,
        to: TenantStatus,
    ) -> Result<TenantRecord, TenancyError>;

    /// Cuts a moving tenant over to its new placement: status `moving` →
    /// `active` and placement `from` → `to`, in one atomic change (a
    /// record not `moving` at `from` is not touched). Idempotent: a
    /// tenant already `active` at `to` is returned as is, so a mover that
    /// died right after the change finishes on resume.
    ///
    /// Used by the SQLite mover; the default refuses with
    /// [`TenancyError::Unsupported`] (a third-party catalog opts in).
    ///
    /// # Errors
    /// [`TenancyError::TenantNotFound`], or [`TenancyError::InvalidInput`]
    /// when the tenant is neither moving at `from` nor active at `to`.
    async fn cut_over(
        &self,
        id: TenantId,
        from: &Placement,
        to: &Placement,
    ) -> Result<TenantRecord, TenancyError> {
        let _ = (id, from, to);
        Err(TenancyError::Unsupported(
            "this catalog cannot change a tenant's placement (Catalog::cut_over)".to_owned(),
        ))
    }

    /// The PostgreSQL pool holding the records, when the catalog is a
    /// PostgreSQL table ([`PgCatalog`]): tenant moves keep their ledger
    /// next to the records and announce cut-overs on it (`NOTIFY`).
    /// `None` (the default) for other catalogs.
    #[cfg(feature = "postgres")]
    fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        None
    }
}

/// A shareable catalog.
pub type DynCatalog = Arc<dyn Catalog>;

/// Makes any [`Catalog`] the [`TenantLookup`] of the request layer. The
/// resolved context carries the tenant's [`Placement`] in
/// its extensions.
#[derive(Debug, Clone)]
pub struct CatalogLookup {
    catalog: DynCatalog,
}

impl CatalogLookup {
    /// Wraps `catalog`.
    pub fn new(catalog: DynCatalog) -> Self {
        Self { catalog }
    }
}

#[async_trait]
impl TenantLookup for CatalogLookup {
    async fn find(&self, key: &TenantKey) -> Result<Option<TenantSummary>, saas_core::Error> {
        let record = match key {
            TenantKey::Id(id) => self.catalog.get(*id).await?,
            TenantKey::Slug(slug) => self.catalog.get_by_slug(slug).await?,
        };
        Ok(record.map(|r| r.summary()))
    }
}

/// The tenant with `id` if it may be served: unknown tenants are
/// [`TenancyError::TenantNotFound`], tenants in any status but active are
/// [`TenancyError::TenantNotServable`].
#[cfg(feature = "sqlite")]
pub(crate) async fn servable(
    catalog: &dyn Catalog,
    id: TenantId,
) -> Result<TenantRecord, TenancyError> {
    let record = catalog
        .get(id)
        .await?
        .ok_or_else(|| TenancyError::TenantNotFound(format!("with id {id}")))?;
    check_servable(record)
}

/// The status `set_status` may change to `to` from: suspended for
/// active, active for suspended. Provisioning, deleting and deleted are
/// reached only through the operations that do the work (setting them
/// directly would mark a tenant active without its storage, or deleted
/// with its data), so any other `to` is refused.
#[cfg(feature = "_sql")]
pub(crate) fn suspend_or_resume_from(
    to: saas_core::TenantStatus,
) -> Result<saas_core::TenantStatus, TenancyError> {
    use saas_core::TenantStatus::{Active, Suspended};
    match to {
        Active => Ok(Suspended),
        Suspended => Ok(Active),
        _ => Err(TenancyError::InvalidInput(format!(
            "set_status only suspends and resumes; {to} is reached through \
             provision, retry_provisioning or delete_tenant"
        ))),
    }
}

/// The change step of `set_status`, the same on every backend: the
/// caller validated `to` with [`suspend_or_resume_from`] and read `before`
/// under the tenant's lock. A tenant already in `to` is returned as is
/// (nothing written); one in the other status is changed in `catalog`;
/// any other status is [`TenancyError::InvalidTransition`].
#[cfg(feature = "_sql")]
pub(crate) async fn suspend_or_resume(
    catalog: &dyn Catalog,
    before: &TenantRecord,
    to: saas_core::TenantStatus,
) -> Result<TenantRecord, TenancyError> {
    if before.status == to {
        Ok(before.clone())
    } else if before.status == suspend_or_resume_from(to)? {
        catalog.set_status(before.id, to).await
    } else {
        Err(TenancyError::InvalidTransition {
            tenant: before.id,
            from: before.status,
            to,
        })
    }
}

/// How long a deletion waits for scoped handles still open on the tenant,
/// unless the builder says otherwise (both backends).
#[cfg(feature = "_sql")]
pub(crate) const DEFAULT_DELETION_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses a deletion grace period longer than an hour (both backends'
/// builders): a deletion holds the tenant's lock that long.
#[cfg(feature = "_sql")]
pub(crate) fn check_deletion_grace(grace: std::time::Duration) -> Result<(), TenancyError> {
    const MAX: std::time::Duration = std::time::Duration::from_secs(3600);
    if grace > MAX {
        return Err(TenancyError::InvalidInput(format!(
            "deletion grace {grace:?} is longer than the {MAX:?} allowed"
        )));
    }
    Ok(())
}

/// Refuses a record whose schema or database name is not the one derived
/// from its tenant id. Names are derived, never chosen, so a record that
/// holds another name was written outside the library — possibly to point
/// one tenant at another's storage (`UPDATE saas_tenants SET
/// object_name = '<B's schema>' WHERE id = <A>`). Logged at `error`.
#[cfg(feature = "_sql")]
pub(crate) fn check_placement(record: &TenantRecord) -> Result<(), TenancyError> {
    let Some(found) = record.placement.object_name() else {
        return Ok(());
    };
    let expected = crate::placement::TenantObjectName::for_tenant(record.id);
    if *found == expected {
        return Ok(());
    }
    tracing::error!(
        tenant = %record.id,
        found = found.as_str(),
        expected = expected.as_str(),
        "catalog record names storage not derived from the tenant id; refused"
    );
    Err(TenancyError::PlacementNotDerived {
        tenant: record.id,
        found: found.as_str().to_owned(),
        expected: expected.as_str().to_owned(),
    })
}

/// Refuses a record whose status may not be served, or whose placement
/// is not its own (see [`check_placement`]).
#[cfg(feature = "_sql")]
pub(crate) fn check_servable(record: TenantRecord) -> Result<TenantRecord, TenancyError> {
    check_placement(&record)?;
    if record.status.is_servable() {
        Ok(record)
    } else {
        Err(TenancyError::TenantNotServable {
            tenant: record.id,
            status: record.status,
        })
    }
}

/// What [`Catalog::cut_over`] found when it changed nothing: the record
/// already cut over (returned), or an error saying why not.
pub(crate) fn cut_over_outcome(
    current: Option<TenantRecord>,
    id: TenantId,
    from: &Placement,
    to: &Placement,
) -> Result<TenantRecord, TenancyError> {
    let current = current.ok_or_else(|| TenancyError::TenantNotFound(format!("with id {id}")))?;
    if current.status == TenantStatus::Active && current.placement == *to {
        return Ok(current);
    }
    Err(TenancyError::InvalidInput(format!(
        "tenant {id} is {} at {:?}; a cut-over needs it moving at {from:?} (or active at {to:?})",
        current.status, current.placement
    )))
}

/// Applies the transition rule, shared by every backend.
pub(crate) fn check_transition(
    record: &TenantRecord,
    to: TenantStatus,
) -> Result<(), TenancyError> {
    if crate::record::transition_allowed(record.status, to) {
        Ok(())
    } else {
        Err(TenancyError::InvalidTransition {
            tenant: record.id,
            from: record.status,
            to,
        })
    }
}
