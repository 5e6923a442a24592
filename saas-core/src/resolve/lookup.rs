use std::collections::HashMap;
use std::fmt;
use std::sync::{PoisonError, RwLock};

use async_trait::async_trait;

use crate::context::{Extensions, TenantStatus};
use crate::error::{Error, ErrorKind};
use crate::id::{TenantId, TenantKey};
use crate::slug::TenantSlug;

/// What the request layer needs to know about a tenant.
#[derive(Debug, Clone)]
pub struct TenantSummary {
    /// The tenant's id.
    pub id: TenantId,
    /// The tenant's slug.
    pub slug: TenantSlug,
    /// Its lifecycle status; only active tenants are served.
    pub status: TenantStatus,
    /// Data copied into the request's [`TenantContext`](crate::TenantContext)
    /// (for example the tenant's placement or plan snapshot).
    pub extensions: Extensions,
}

impl TenantSummary {
    /// An active tenant with no extensions.
    pub fn active(id: TenantId, slug: TenantSlug) -> Self {
        Self {
            id,
            slug,
            status: TenantStatus::Active,
            extensions: Extensions::new(),
        }
    }
}

/// Finds tenants by id or slug. Implemented by the tenancy catalog (and by
/// hosts with their own tenant store).
///
/// Contract:
/// - an unknown tenant is `Ok(None)`, not an error;
/// - a tenant in any status is returned (the caller decides what to serve);
/// - a failure to reach the store is an error of kind
///   [`ErrorKind::Unavailable`] so the request layer answers 503, not 404.
#[async_trait]
pub trait TenantLookup: Send + Sync + fmt::Debug {
    /// Looks a tenant up by id or slug.
    async fn find(&self, key: &TenantKey) -> Result<Option<TenantSummary>, Error>;
}

#[async_trait]
impl<T: TenantLookup + ?Sized> TenantLookup for std::sync::Arc<T> {
    async fn find(&self, key: &TenantKey) -> Result<Option<TenantSummary>, Error> {
        (**self).find(key).await
    }
}

/// A [`TenantLookup`] held in memory: for tests, examples and hosts with a
/// fixed set of tenants.
///
/// ```
/// use saas_core::{InMemoryTenantLookup, TenantId, TenantKey, TenantLookup, TenantSlug,
///                 TenantSummary};
///
/// # tokio_test_block_on(async {
/// let lookup = InMemoryTenantLookup::new();
/// let id = TenantId::new();
/// lookup.insert(TenantSummary::active(id, TenantSlug::parse("acme")?))?;
/// let found = lookup.find(&TenantKey::parse("acme")?).await?;
/// assert_eq!(found.map(|t| t.id), Some(id));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Default)]
pub struct InMemoryTenantLookup {
    inner: RwLock<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    by_id: HashMap<TenantId, TenantSummary>,
    by_slug: HashMap<TenantSlug, TenantId>,
}

impl InMemoryTenantLookup {
    /// An empty lookup.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tenant. A second tenant with the same id or slug is
    /// [`ErrorKind::AlreadyExists`].
    pub fn insert(&self, tenant: TenantSummary) -> Result<(), Error> {
        let mut t = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if t.by_id.contains_key(&tenant.id) || t.by_slug.contains_key(&tenant.slug) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "a tenant with id {} or slug {} exists",
                    tenant.id, tenant.slug
                ),
            ));
        }
        t.by_slug.insert(tenant.slug.clone(), tenant.id);
        t.by_id.insert(tenant.id, tenant);
        Ok(())
    }

    /// Changes a tenant's status.
    pub fn set_status(&self, id: TenantId, status: TenantStatus) -> Result<(), Error> {
        let mut t = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let tenant = t
            .by_id
            .get_mut(&id)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no tenant with id {id}")))?;
        tenant.status = status;
        Ok(())
    }
}

#[async_trait]
impl TenantLookup for InMemoryTenantLookup {
    async fn find(&self, key: &TenantKey) -> Result<Option<TenantSummary>, Error> {
        let t = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let id = match key {
            TenantKey::Id(id) => Some(*id),
            TenantKey::Slug(slug) => t.by_slug.get(slug).copied(),
        };
        Ok(id.and_then(|id| t.by_id.get(&id).cloned()))
    }
}
