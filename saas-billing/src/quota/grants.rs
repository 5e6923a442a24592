//! Entitlement grants: one-off quota top-ups on top of the plan's quota
//! (issue 20).
//!
//! Why a counter per grant rather than a raised limit: if grants only
//! raised the limit of the plan's counter, a grant expiring after part of
//! it was spent would take the spent part of *other* grants with it (the
//! counter cannot say which units came from where). A grant of its own
//! counter keeps what it gave for good and lapses only what is left, on
//! every [`QuotaStore`] as it is, each counter as exact as the store is.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use saas_core::{SharedClock, TenantId};
use uuid::Uuid;

use super::{Consumption, LeasedQuota, QuotaKey, QuotaStore, check_amount};
use crate::error::BillingError;

/// The prefix of a grant's own counter's period label (`grant/<id>`);
/// keep plan period labels from starting with it.
pub const GRANT_PERIOD_PREFIX: &str = "grant/";

/// A one-off top-up of a tenant's quota of one feature or meter: `amount`
/// more units, for one period (ending with it) or until an instant, or
/// both. Spent only after the plan's own quota; see [`GrantedQuota`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuotaGrant {
    id: Uuid,
    tenant: TenantId,
    name: String,
    amount: u64,
    period: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

impl QuotaGrant {
    /// `amount` more units of `name` for `tenant` in the period labelled
    /// `period` only (the label of the plan's [`QuotaKey`]): it ends with
    /// the period.
    ///
    /// # Errors
    /// `InvalidInput` if `amount` is 0 or above
    /// [`MAX_QUOTA_AMOUNT`](super::MAX_QUOTA_AMOUNT), `name` or `period` is
    /// empty or too long (as [`QuotaKey::new`]).
    pub fn for_period(
        tenant: TenantId,
        name: impl Into<String>,
        period: impl Into<String>,
        amount: u64,
    ) -> Result<QuotaGrant, BillingError> {
        let period = period.into();
        if period.is_empty() {
            return Err(BillingError::InvalidInput {
                field: "quota grant period",
                reason: "is empty; name the period, or use QuotaGrant::until".into(),
            });
        }
        let key = QuotaKey::new(tenant, name, period)?;
        QuotaGrant::checked(key.tenant, key.name, Some(key.period), amount, None)
    }

    /// `amount` more units of `name` for `tenant` in any period until
    /// `expires_at` (exclusive); what is left then lapses. Its units are
    /// counted once over its whole life, not once per period.
    ///
    /// # Errors
    /// As [`QuotaGrant::for_period`].
    pub fn until(
        tenant: TenantId,
        name: impl Into<String>,
        amount: u64,
        expires_at: DateTime<Utc>,
    ) -> Result<QuotaGrant, BillingError> {
        let key = QuotaKey::standing(tenant, name)?;
        QuotaGrant::checked(key.tenant, key.name, None, amount, Some(expires_at))
    }

    fn checked(
        tenant: TenantId,
        name: String,
        period: Option<String>,
        amount: u64,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<QuotaGrant, BillingError> {
        check_amount("quota grant amount", amount)?;
        if amount == 0 {
            return Err(BillingError::InvalidInput {
                field: "quota grant amount",
                reason: "is 0; grant at least one unit".into(),
            });
        }
        Ok(QuotaGrant {
            id: Uuid::new_v4(),
            tenant,
            name,
            amount,
            period,
            expires_at: expires_at.map(to_micros),
        })
    }

    /// The same grant under `id`: recording it again under that id (a
    /// retried purchase) changes nothing.
    pub fn with_id(mut self, id: Uuid) -> QuotaGrant {
        self.id = id;
        self
    }

    /// A per-period grant that also lapses at `expires_at`, if sooner.
    pub fn expiring_at(mut self, expires_at: DateTime<Utc>) -> QuotaGrant {
        self.expires_at = Some(to_micros(expires_at));
        self
    }

    /// Rebuilds a stored grant (for store implementations).
    ///
    /// # Errors
    /// As [`QuotaGrant::for_period`]; `InvalidInput` if it has neither a
    /// period nor an expiry.
    pub fn from_parts(
        id: Uuid,
        tenant: TenantId,
        name: String,
        amount: u64,
        period: Option<String>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<QuotaGrant, BillingError> {
        let grant = match (period, expires_at) {
            (Some(period), expires_at) => QuotaGrant::for_period(tenant, name, period, amount)
                .map(|g| QuotaGrant { expires_at, ..g })?,
            (None, Some(at)) => QuotaGrant::until(tenant, name, amount, at)?,
            (None, None) => {
                return Err(BillingError::InvalidInput {
                    field: "quota grant",
                    reason: "has neither a period nor an expiry".into(),
                });
            }
        };
        Ok(grant.with_id(id))
    }

    /// Its id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The tenant it tops up.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The feature or meter key.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The units granted.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The period it is for, if per-period.
    pub fn period(&self) -> Option<&str> {
        self.period.as_deref()
    }

    /// When it lapses, if it does before its period ends.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    /// Whether it tops up `key` at `now`: same tenant and name, its period
    /// (if any) is the key's, and not expired.
    pub fn applies_to(&self, key: &QuotaKey, now: DateTime<Utc>) -> bool {
        self.tenant == key.tenant()
            && self.name == key.name()
            && self.period.as_deref().is_none_or(|p| p == key.period())
            && self.expires_at.is_none_or(|at| now < at)
    }

    /// The counter its units are spent from (period label
    /// `grant/<id>`).
    pub fn counter(&self) -> QuotaKey {
        QuotaKey {
            tenant: self.tenant,
            name: self.name.clone(),
            period: format!("{GRANT_PERIOD_PREFIX}{}", self.id),
        }
    }

    /// The order grants are spent in: soonest expiry first, then those
    /// ending only with their period, ties by id.
    fn spend_order(&self, other: &QuotaGrant) -> Ordering {
        match (self.expires_at, other.expires_at) {
            (Some(a), Some(b)) => a.cmp(&b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
        .then(self.id.cmp(&other.id))
    }
}

/// Expiries are kept to the microsecond (what PostgreSQL stores), so a
/// grant reads back equal to what was recorded on every backend.
fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// Where grants are recorded. Implemented by every quota store, which
/// keeps them beside its counters (durable where the store is).
///
/// Behaviour contract (checked by [`crate::testing::quota_grants`],
/// feature `testing`):
/// - [`add_grant`](QuotaGrantStore::add_grant) records a grant once: the
///   same grant again (same id and terms) changes nothing; the same id
///   with other terms is `AlreadyExists` and the first stays.
/// - [`grants`](QuotaGrantStore::grants) lists one tenant's grants of
///   one name, expired ones included, never another tenant's.
/// - A new store on the same backend (a restart) sees them.
#[async_trait]
pub trait QuotaGrantStore: Send + Sync + fmt::Debug {
    /// Records `grant`.
    ///
    /// # Errors
    /// `AlreadyExists` if its id is recorded with other terms; `Backend`
    /// if the backend fails (retry with the same id).
    async fn add_grant(&self, grant: &QuotaGrant) -> Result<(), BillingError>;

    /// The tenant's grants of `name`, in any order.
    ///
    /// # Errors
    /// `Backend` if the backend fails.
    async fn grants(&self, tenant: TenantId, name: &str) -> Result<Vec<QuotaGrant>, BillingError>;
}

/// A quota store that also records grants (every quota store of this
/// crate), as the grant conformance suite takes it.
pub trait GrantingQuotaStore: QuotaStore + QuotaGrantStore {}

impl<S: QuotaStore + QuotaGrantStore + ?Sized> GrantingQuotaStore for S {}

pub(crate) fn grant_conflict(grant: &QuotaGrant) -> BillingError {
    BillingError::AlreadyExists {
        what: "quota grant with other terms (give a new grant a new id)",
        id: grant.id.to_string(),
    }
}

/// A plan's quota plus its grants, spent in order: the plan's own quota
/// first, then each grant that applies (soonest expiry first). Once all
/// of them are spent, [`try_consume`](GrantedQuota::try_consume) denies,
/// as [`QuotaStore::try_consume`] does on the plan's quota alone.
///
/// Every counter (the plan's key, each grant's
/// [`counter`](QuotaGrant::counter)) is one key of the [`QuotaStore`], so
/// the guarantees are the store's: exact across processes (the units
/// granted never exceed the plan's limit plus the grants), durable where
/// the store is. A request is served whole from one counter, never split:
/// a request of 5 with 3 left of the plan is served by a grant (and the 3
/// stay for smaller requests), so no write is ever half done. A grant that
/// expires keeps what was spent from it; a tenant's grants are looked up
/// by the key's tenant only.
///
/// Grants are for consumption (calls, tokens): there is no give-back
/// through grants, so for a count limit whose units go back
/// ([`QuotaStore::give_back`] on the plan's key) raise the limit itself
/// instead. Reservations are not spread over grants either: reserve on
/// the plan's key.
///
/// ```
/// use std::sync::Arc;
/// use saas_billing::quota::{Consumption, GrantedQuota, InMemoryQuotaStore, QuotaGrant, QuotaKey};
/// use saas_billing::TenantId;
/// use saas_core::SystemClock;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = Arc::new(InMemoryQuotaStore::new());
/// let quotas = GrantedQuota::over(store, Arc::new(SystemClock));
/// let tenant = TenantId::new();
/// let key = QuotaKey::new(tenant, "api_calls", "2026-12")?;
/// // The plan gives 2 calls; the tenant bought 1 more for December.
/// quotas.grant(&QuotaGrant::for_period(tenant, "api_calls", "2026-12", 1)?).await?;
/// assert!(quotas.try_consume(&key, 2, 2).await?.is_granted()); // the plan's 2
/// assert_eq!(quotas.try_consume(&key, 1, 2).await?, Consumption::Granted { remaining: 0 });
/// assert!(!quotas.try_consume(&key, 1, 2).await?.is_granted());
/// # Ok::<(), saas_billing::BillingError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct GrantedQuota {
    quota: Arc<dyn QuotaStore>,
    grants: Arc<dyn QuotaGrantStore>,
    clock: SharedClock,
}

impl fmt::Debug for GrantedQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantedQuota")
            .field("quota", &self.quota)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

impl GrantedQuota {
    /// Counts on `quota`, reads grants from `grants` (usually the same
    /// store), and tells expiry by `clock`.
    pub fn new(
        quota: Arc<dyn QuotaStore>,
        grants: Arc<dyn QuotaGrantStore>,
        clock: SharedClock,
    ) -> GrantedQuota {
        GrantedQuota {
            quota,
            grants,
            clock,
        }
    }

    /// Counts and reads grants on one `store` (any quota store: each
    /// keeps grants beside its counters).
    pub fn over<S>(store: Arc<S>, clock: SharedClock) -> GrantedQuota
    where
        S: QuotaStore + QuotaGrantStore + 'static,
    {
        GrantedQuota::new(store.clone(), store, clock)
    }

    /// Records a grant (idempotent by its id).
    ///
    /// # Errors
    /// `InvalidInput` if it has already expired (nothing is recorded); as
    /// [`QuotaGrantStore::add_grant`].
    pub async fn grant(&self, grant: &QuotaGrant) -> Result<(), BillingError> {
        if grant.expires_at.is_some_and(|at| at <= self.clock.now()) {
            return Err(BillingError::InvalidInput {
                field: "quota grant expiry",
                reason: "is not in the future; nothing would be granted".into(),
            });
        }
        self.grants.add_grant(grant).await
    }

    /// The grants that top up `key` now, in the order they are spent.
    ///
    /// # Errors
    /// As [`QuotaGrantStore::grants`].
    pub async fn live_grants(&self, key: &QuotaKey) -> Result<Vec<QuotaGrant>, BillingError> {
        let now = self.clock.now();
        let mut grants: Vec<QuotaGrant> = self
            .grants
            .grants(key.tenant(), key.name())
            .await?
            .into_iter()
            // The store is asked for this tenant's grants; checking the
            // tenant again keeps a faulty store from leaking another's.
            .filter(|g| g.applies_to(key, now))
            .collect();
        grants.sort_by(QuotaGrant::spend_order);
        Ok(grants)
    }

    /// Spends `amount` from the plan's quota of `key` (`plan_limit`) if it
    /// fits there, else from the first grant it fits in whole; otherwise
    /// changes nothing and denies. `remaining` counts the plan and every
    /// live grant.
    ///
    /// # Errors
    /// As [`QuotaStore::try_consume`] and [`QuotaGrantStore::grants`].
    pub async fn try_consume(
        &self,
        key: &QuotaKey,
        amount: u64,
        plan_limit: u64,
    ) -> Result<Consumption, BillingError> {
        check_amount("quota amount", amount)?;
        let grants = self.live_grants(key).await?;
        let counters = std::iter::once((key.clone(), plan_limit))
            .chain(grants.iter().map(|g| (g.counter(), g.amount)));
        let mut granted = false;
        let mut remaining: u64 = 0;
        for (counter, limit) in counters {
            let left = if granted {
                limit.saturating_sub(self.quota.used(&counter).await?)
            } else {
                match self.quota.try_consume(&counter, amount, limit).await? {
                    Consumption::Granted { remaining } => {
                        granted = true;
                        remaining
                    }
                    Consumption::Denied { remaining } => remaining,
                }
            };
            remaining = remaining.saturating_add(left);
        }
        Ok(if granted {
            Consumption::Granted { remaining }
        } else {
            Consumption::Denied { remaining }
        })
    }

    /// What is left of the plan's quota of `key` and its live grants.
    ///
    /// # Errors
    /// As [`QuotaStore::used`] and [`QuotaGrantStore::grants`].
    pub async fn remaining(&self, key: &QuotaKey, plan_limit: u64) -> Result<u64, BillingError> {
        let mut remaining = plan_limit.saturating_sub(self.quota.used(key).await?);
        for grant in self.live_grants(key).await? {
            let used = self.quota.used(&grant.counter()).await?;
            remaining = remaining.saturating_add(grant.amount.saturating_sub(used));
        }
        Ok(remaining)
    }

    /// A [`GrantedLease`] over `key`'s plan quota and its grants live
    /// now, taking `lease` units at a time from each.
    ///
    /// # Errors
    /// As [`LeasedQuota::new`] and [`QuotaGrantStore::grants`].
    pub async fn lease(
        &self,
        key: &QuotaKey,
        plan_limit: u64,
        lease: u64,
    ) -> Result<GrantedLease, BillingError> {
        let mut counters = vec![(
            None,
            LeasedQuota::new(self.quota.clone(), key.clone(), plan_limit, lease)?,
        )];
        for grant in self.live_grants(key).await? {
            let leased =
                LeasedQuota::new(self.quota.clone(), grant.counter(), grant.amount, lease)?;
            counters.push((grant.expires_at, leased));
        }
        Ok(GrantedLease {
            counters,
            clock: self.clock.clone(),
        })
    }
}

/// [`LeasedQuota`]s over a plan's quota and its grants, spent in the same
/// order as [`GrantedQuota::try_consume`]: never over the plan's limit
/// plus the grants; the under-grant is bounded by the lease per counter.
/// The grants are those live when it was made: a grant given later takes
/// effect with a new lease (release this one), as a plan change does. A
/// grant's block is not spent past the grant's expiry.
#[derive(Debug)]
pub struct GrantedLease {
    counters: Vec<(Option<DateTime<Utc>>, LeasedQuota)>,
    clock: SharedClock,
}

impl GrantedLease {
    /// Grants `amount` from the first counter that can serve it whole.
    ///
    /// # Errors
    /// As [`LeasedQuota::try_consume`].
    pub async fn try_consume(&self, amount: u64) -> Result<bool, BillingError> {
        let now = self.clock.now();
        for (expires_at, leased) in &self.counters {
            if expires_at.is_some_and(|at| at <= now) {
                continue;
            }
            if leased.try_consume(amount).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Gives every unspent block back; the units given back.
    ///
    /// # Errors
    /// As [`LeasedQuota::release`] (the first failure; the others are
    /// still released).
    pub async fn release(&self) -> Result<u64, BillingError> {
        let mut total: u64 = 0;
        let mut first_error = None;
        for (_, leased) in &self.counters {
            match leased.release().await {
                Ok(units) => total = total.saturating_add(units),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(total), Err)
    }
}
