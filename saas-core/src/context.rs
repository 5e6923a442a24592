//! Who is acting, for which tenant.

use std::any::{Any, TypeId};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::id::TenantId;
use crate::slug::TenantSlug;

/// Lifecycle status of a tenant, shared by every crate.
///
/// Only [`Active`](TenantStatus::Active) tenants may be served: the request
/// layer and scoped storage access refuse the others with a typed error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TenantStatus {
    /// Being created; not yet usable.
    Provisioning,
    /// Serving requests.
    Active,
    /// Temporarily refused (unpaid, abuse…); data kept.
    Suspended,
    /// Being moved to another placement; writes may be paused.
    Moving,
    /// Deletion in progress.
    Deleting,
    /// Gone.
    Deleted,
}

impl TenantStatus {
    /// Whether requests for a tenant in this status may be served.
    pub fn is_servable(self) -> bool {
        matches!(self, TenantStatus::Active)
    }

    /// The lowercase name used in storage and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Provisioning => "provisioning",
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Moving => "moving",
            TenantStatus::Deleting => "deleting",
            TenantStatus::Deleted => "deleted",
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller: a user, a service account or a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Stable subject identifier (the JWT `sub`).
    pub subject: String,
    /// Roles granted to the caller within the tenant.
    pub roles: BTreeSet<String>,
    /// OAuth-style scopes granted to the caller.
    pub scopes: BTreeSet<String>,
}

impl Principal {
    /// A principal with no roles or scopes.
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            roles: BTreeSet::new(),
            scopes: BTreeSet::new(),
        }
    }

    /// Adds a role.
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.roles.insert(role.into());
        self
    }

    /// Adds a scope.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.insert(scope.into());
        self
    }

    /// Whether the caller has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains(role)
    }

    /// Whether the caller has `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }
}

/// A type map for data that later crates attach to a context (the tenant's
/// placement, its plan snapshot…) without `saas-core` knowing their types.
///
/// Values are shared (`Arc`), so cloning a context is cheap.
#[derive(Clone, Default)]
pub struct Extensions {
    map: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Extensions {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts a value, replacing any earlier value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.map.insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if one was inserted.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.map
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Copies every value of `other` into `self` (values of `other` win).
    pub fn extend(&mut self, other: &Extensions) {
        for (k, v) in &other.map {
            self.map.insert(*k, Arc::clone(v));
        }
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.map.len())
            .finish()
    }
}

/// Everything a tenant-scoped operation needs to know: the tenant, and who
/// is acting for it.
///
/// Contexts are passed explicitly. Storage layers refuse to hand out a
/// scoped connection without one, which is what makes "no tenant, no data"
/// hold.
///
/// ```
/// use saas_core::{Principal, TenantContext, TenantId, TenantSlug};
///
/// let ctx = TenantContext::new(TenantId::new(), TenantSlug::parse("acme")?)
///     .with_principal(Principal::new("user-1").with_role("admin"));
/// assert!(ctx.principal().is_some_and(|p| p.has_role("admin")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TenantContext {
    tenant_id: TenantId,
    slug: TenantSlug,
    principal: Option<Principal>,
    extensions: Extensions,
}

impl TenantContext {
    /// A context for a tenant with no principal (background work).
    pub fn new(tenant_id: TenantId, slug: TenantSlug) -> Self {
        Self {
            tenant_id,
            slug,
            principal: None,
            extensions: Extensions::new(),
        }
    }

    /// Sets the acting principal.
    pub fn with_principal(mut self, principal: Principal) -> Self {
        self.principal = Some(principal);
        self
    }

    /// Attaches an extension value.
    pub fn with_extension<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }

    /// The tenant's id.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// The tenant's slug.
    pub fn slug(&self) -> &TenantSlug {
        &self.slug
    }

    /// The acting principal, if any.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    /// Attached extension values.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Mutable access to the extension values.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }
}
