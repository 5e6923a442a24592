//! Tenant records as the catalog stores them.

use chrono::{DateTime, Utc};
use saas_core::{TenantId, TenantSlug, TenantStatus, TenantSummary};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::TenancyError;
use crate::placement::{ClusterName, Placement, Strategy};

/// One tenant in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Stable id.
    pub id: TenantId,
    /// URL name, unique in the catalog.
    pub slug: TenantSlug,
    /// Name for people.
    pub display_name: String,
    /// Lifecycle status.
    pub status: TenantStatus,
    /// Where its data lives.
    pub placement: Placement,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Host-defined data (plan, region, …).
    pub metadata: Map<String, Value>,
}

impl TenantRecord {
    /// The summary the request layer needs; the placement travels in the
    /// context's extensions.
    pub fn summary(&self) -> TenantSummary {
        let mut summary = TenantSummary::active(self.id, self.slug.clone());
        summary.status = self.status;
        summary.extensions.insert(self.placement.clone());
        summary
    }
}

/// The longest display name accepted.
pub const MAX_DISPLAY_NAME_LEN: usize = 200;

/// A tenant to create.
///
/// ```
/// use saas_tenancy::{ClusterName, NewTenant, Strategy};
/// use saas_core::TenantSlug;
///
/// let tenant = NewTenant::new(
///     TenantSlug::parse("acme")?,
///     "Acme Corp",
///     Strategy::Schema,
///     ClusterName::new("main")?,
/// )?;
/// assert_eq!(tenant.placement().strategy(), Strategy::Schema);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub(crate) id: TenantId,
    pub(crate) slug: TenantSlug,
    pub(crate) display_name: String,
    pub(crate) placement: Placement,
    pub(crate) status: TenantStatus,
    pub(crate) metadata: Map<String, Value>,
}

impl NewTenant {
    /// A new tenant with a fresh id, placed by `strategy` on `cluster`,
    /// starting in [`TenantStatus::Provisioning`].
    pub fn new(
        slug: TenantSlug,
        display_name: impl Into<String>,
        strategy: Strategy,
        cluster: ClusterName,
    ) -> Result<Self, TenancyError> {
        let display_name = display_name.into();
        if display_name.trim().is_empty() || display_name.chars().count() > MAX_DISPLAY_NAME_LEN {
            return Err(TenancyError::InvalidInput(format!(
                "display name must be 1-{MAX_DISPLAY_NAME_LEN} characters and not blank"
            )));
        }
        if display_name.chars().any(char::is_control) {
            return Err(TenancyError::InvalidInput(
                "display name must not contain control characters".to_owned(),
            ));
        }
        let id = TenantId::new();
        Ok(Self {
            id,
            slug,
            display_name,
            placement: Placement::derive(strategy, cluster, id),
            status: TenantStatus::Provisioning,
            metadata: Map::new(),
        })
    }

    /// Keeps an id the host already gave this tenant (adopting an existing
    /// `tenants` table: its rows keep their `tenant_id`), instead of a fresh
    /// one. The placement's schema or database name follows the id.
    /// Provisioning an id the catalog already holds fails with
    /// `AlreadyExists`. Reusing the id of a tenant that was deleted adopts
    /// whatever its deletion left behind under the same names (a schema or
    /// database kept by a deletion grace period): purge first.
    ///
    /// ```
    /// use saas_core::{TenantId, TenantSlug};
    /// use saas_tenancy::{ClusterName, NewTenant, Strategy};
    ///
    /// let existing = TenantId::new(); // read from the host's own table
    /// let new = NewTenant::new(
    ///     TenantSlug::parse("acme")?,
    ///     "Acme",
    ///     Strategy::Shared,
    ///     ClusterName::new("main")?,
    /// )?
    /// .with_id(existing);
    /// assert_eq!(new.id(), existing);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_id(mut self, id: TenantId) -> Self {
        let cluster = self.placement.cluster().clone();
        self.placement = Placement::derive(self.placement.strategy(), cluster, id);
        self.id = id;
        self
    }

    /// Starts the tenant [`TenantStatus::Active`] (when nothing needs to be
    /// provisioned, e.g. shared placement with tables already in place).
    pub fn active(mut self) -> Self {
        self.status = TenantStatus::Active;
        self
    }

    /// Attaches host metadata.
    pub fn metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = metadata;
        self
    }

    /// The id the tenant will have.
    pub fn id(&self) -> TenantId {
        self.id
    }

    /// Its slug.
    pub fn slug(&self) -> &TenantSlug {
        &self.slug
    }

    /// Its placement.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    pub(crate) fn into_record(self, now: DateTime<Utc>) -> TenantRecord {
        let now = catalog_time(now);
        TenantRecord {
            id: self.id,
            slug: self.slug,
            display_name: self.display_name,
            status: self.status,
            placement: self.placement,
            created_at: now,
            updated_at: now,
            metadata: self.metadata,
        }
    }
}

/// Which tenants to list, a page at a time.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ListOptions {
    /// Continue after this tenant (the previous page's `next`).
    pub after: Option<TenantId>,
    /// Page size, 1–1000 (default 100).
    pub limit: usize,
    /// Only tenants in this status.
    pub status: Option<TenantStatus>,
    /// Only tenants with this strategy.
    pub strategy: Option<Strategy>,
    /// Only tenants on this cluster.
    pub cluster: Option<ClusterName>,
}

impl Default for ListOptions {
    fn default() -> Self {
        Self {
            after: None,
            limit: 100,
            status: None,
            strategy: None,
            cluster: None,
        }
    }
}

impl ListOptions {
    /// Sets the page size.
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Continues after `id`.
    pub fn with_after(mut self, id: Option<TenantId>) -> Self {
        self.after = id;
        self
    }

    /// Filters by status.
    pub fn with_status(mut self, status: TenantStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Filters by strategy.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// Checks the page size.
    pub(crate) fn validate(&self) -> Result<(), TenancyError> {
        if (1..=1000).contains(&self.limit) {
            Ok(())
        } else {
            Err(TenancyError::InvalidInput(format!(
                "page size {} is out of range 1..=1000",
                self.limit
            )))
        }
    }

    pub(crate) fn matches(&self, r: &TenantRecord) -> bool {
        self.after.is_none_or(|a| r.id > a)
            && self.status.is_none_or(|s| r.status == s)
            && self.strategy.is_none_or(|s| r.placement.strategy() == s)
            && self
                .cluster
                .as_ref()
                .is_none_or(|c| r.placement.cluster() == c)
    }
}

/// One page of tenants, ordered by id (creation order for v7 ids).
#[derive(Debug, Clone)]
pub struct TenantPage {
    /// The tenants.
    pub tenants: Vec<TenantRecord>,
    /// Pass as [`ListOptions::after`] for the next page; `None` at the end.
    pub next: Option<TenantId>,
}

impl TenantPage {
    /// A page from up to `limit + 1` records read in id order: the extra
    /// record only tells that another page follows.
    pub(crate) fn from_overfetch(mut tenants: Vec<TenantRecord>, limit: usize) -> Self {
        let next = if tenants.len() > limit {
            tenants.truncate(limit);
            tenants.last().map(|r| r.id)
        } else {
            None
        };
        Self { tenants, next }
    }
}

/// Whether a tenant may move from `from` to `to`.
///
/// ```text
/// provisioning → active | deleting
/// active       → suspended | moving | deleting
/// suspended    → active | deleting
/// moving       → active
/// deleting     → deleted
/// ```
/// Setting the current status again is allowed (idempotent retries).
pub fn transition_allowed(from: TenantStatus, to: TenantStatus) -> bool {
    use TenantStatus::*;
    from == to
        || matches!(
            (from, to),
            (Provisioning, Active | Deleting)
                | (Active, Suspended | Moving | Deleting)
                | (Suspended, Active | Deleting)
                | (Moving, Active)
                | (Deleting, Deleted)
        )
}

#[cfg(feature = "_sql")]
pub(crate) fn parse_status(s: &str) -> Result<TenantStatus, TenancyError> {
    use TenantStatus::*;
    Ok(match s {
        "provisioning" => Provisioning,
        "active" => Active,
        "suspended" => Suspended,
        "moving" => Moving,
        "deleting" => Deleting,
        "deleted" => Deleted,
        other => return Err(TenancyError::Corrupt(format!("unknown status {other:?}"))),
    })
}

/// Every status from which `to` may be reached (including `to` itself).
#[cfg(feature = "_sql")]
pub(crate) fn allowed_from(to: TenantStatus) -> Vec<TenantStatus> {
    use TenantStatus::*;
    [Provisioning, Active, Suspended, Moving, Deleting, Deleted]
        .into_iter()
        .filter(|from| transition_allowed(*from, to))
        .collect()
}

/// Catalog timestamps have microsecond precision on every backend, the
/// precision of PostgreSQL's `timestamptz`, so a record reads back equal to
/// the one written whatever the store.
pub(crate) fn catalog_time(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    t.trunc_subsecs(6)
}
