//! Durable, exact quota consumption shared by every process
//! (issue 15 §2).
//!
//! [`EntitlementChecker`](crate::EntitlementChecker) counts in process
//! memory: N API servers grant about N× a quota, and a restart starts
//! from the stored usage only if the host restores it. A [`QuotaStore`]
//! keeps the count where every server sees it and decides each grant
//! with one atomic step, so N servers together grant exactly the limit.
//!
//! Two patterns:
//! - **Per-period quotas** (10,000 `api_calls` a month):
//!   [`QuotaStore::try_consume`] with a [`QuotaKey`] naming the period
//!   (`QuotaKey::new(tenant, "api_calls", "2026-12")`). A new period is a
//!   new key, so it starts from zero exactly once, however many processes
//!   roll over at the same time.
//! - **Count limits** ("3 projects") of rows you store: count them in the
//!   transaction that creates one (see the crate README); no store needed.
//!   For other things, a standing key ([`QuotaKey::standing`]) consumed in
//!   the same transaction as the change where the quota tables are
//!   reachable from it, or else [`QuotaStore::reserve`] a unit before
//!   creating the thing, [`QuotaStore::commit`] once it exists,
//!   [`QuotaStore::release`] if creating it failed, and
//!   [`QuotaStore::give_back`] when it is deleted. A reservation neither
//!   committed nor released (the process died) is released when its time
//!   to live has passed — also when the thing was created just before the
//!   crash, so reconcile such counts from the source of truth.
//!
//! Backends: [`InMemoryQuotaStore`] (one process), `PgQuotaStore`
//! (feature `postgres`), `SqliteQuotaStore` (feature `sqlite`) and
//! `RedisQuotaStore` (feature `redis`), all passing the same conformance
//! suite. For hot paths, [`LeasedQuota`] spends blocks of a quota locally
//! over any of them: never over the limit, under-grant bounded by the
//! lease.
//!
//! One-off top-ups on top of a plan's quota are [`QuotaGrant`]s, which
//! every store also records ([`QuotaGrantStore`]); [`GrantedQuota`]
//! spends the plan's quota first, then the grants.
//!
//! ```
//! use saas_billing::quota::{Consumption, InMemoryQuotaStore, QuotaKey, QuotaStore};
//! use saas_billing::TenantId;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = InMemoryQuotaStore::new();
//! let key = QuotaKey::new(TenantId::new(), "api_calls", "2026-12")?;
//! assert_eq!(store.try_consume(&key, 2, 3).await?, Consumption::Granted { remaining: 1 });
//! assert_eq!(store.try_consume(&key, 2, 3).await?, Consumption::Denied { remaining: 1 });
//! assert_eq!(store.used(&key).await?, 2);
//! # Ok::<(), saas_billing::BillingError>(())
//! # }).unwrap();
//! ```

mod grants;
mod lease;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "_sql")]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{MAX_REDIS_PREFIX_LEN, RedisQuotaConfig, RedisQuotaStore};
pub use grants::{
    GRANT_PERIOD_PREFIX, GrantedLease, GrantedQuota, GrantingQuotaStore, QuotaGrant,
    QuotaGrantStore,
};
pub use lease::LeasedQuota;
pub use memory::InMemoryQuotaStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PgQuotaStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteQuotaStore;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::TenantId;
use uuid::Uuid;

use crate::error::BillingError;

/// The longest quota name or period label, in bytes.
pub const MAX_QUOTA_NAME_LEN: usize = 200;

/// The largest amount or limit a store accepts (`i64::MAX`, what
/// PostgreSQL's `bigint` holds).
pub const MAX_QUOTA_AMOUNT: u64 = i64::MAX as u64;

/// What a quota counts: a tenant, a feature or meter key, and a period.
///
/// The period is part of the key: a new period is a new counter starting
/// from zero. Count limits that never reset use [`QuotaKey::standing`]
/// (an empty period label).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuotaKey {
    tenant: TenantId,
    name: String,
    period: String,
}

impl QuotaKey {
    /// The counter of `name` (a feature or meter key) for `tenant` in the
    /// period labelled `period` (`"2026-12"`, a period index…; any stable
    /// label the processes agree on).
    ///
    /// # Errors
    /// `InvalidInput` if `name` is empty, or `name` or `period` is longer
    /// than [`MAX_QUOTA_NAME_LEN`] bytes.
    pub fn new(
        tenant: TenantId,
        name: impl Into<String>,
        period: impl Into<String>,
    ) -> Result<QuotaKey, BillingError> {
        let name = name.into();
        let period = period.into();
        if name.is_empty() {
            return Err(BillingError::InvalidInput {
                field: "quota name",
                reason: "is empty; pass the feature or meter key".into(),
            });
        }
        for (field, value) in [("quota name", &name), ("quota period", &period)] {
            if value.len() > MAX_QUOTA_NAME_LEN {
                return Err(BillingError::InvalidInput {
                    field,
                    reason: format!("is {} bytes; use at most {MAX_QUOTA_NAME_LEN}", value.len()),
                });
            }
        }
        Ok(QuotaKey {
            tenant,
            name,
            period,
        })
    }

    /// The counter of `name` for `tenant` that never resets (count limits
    /// such as "3 projects").
    ///
    /// # Errors
    /// As [`QuotaKey::new`].
    pub fn standing(tenant: TenantId, name: impl Into<String>) -> Result<QuotaKey, BillingError> {
        QuotaKey::new(tenant, name, "")
    }

    /// The tenant.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The feature or meter key.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The period label (empty for a standing counter).
    pub fn period(&self) -> &str {
        &self.period
    }
}

impl fmt::Display for QuotaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.name, self.period)
    }
}

/// The outcome of [`QuotaStore::try_consume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Consumption {
    /// The amount was added to the used amount.
    Granted {
        /// What is left under the limit after this grant.
        remaining: u64,
    },
    /// Nothing was consumed: the amount would go over the limit.
    Denied {
        /// What is left under the limit (read just after the refusal).
        remaining: u64,
    },
}

impl Consumption {
    /// Whether the amount was granted.
    pub fn is_granted(self) -> bool {
        matches!(self, Consumption::Granted { .. })
    }
}

/// Units held by [`QuotaStore::reserve`] until committed, released or
/// expired.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reservation {
    id: Uuid,
    key: QuotaKey,
    amount: u64,
    expires_at: DateTime<Utc>,
}

impl Reservation {
    /// Its id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The counter it holds units of.
    pub fn key(&self) -> &QuotaKey {
        &self.key
    }

    /// The units held.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// When, if not committed or released, its units go back.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }
}

/// The outcome of [`QuotaStore::reserve`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReserveOutcome {
    /// The units are held; commit or release the reservation.
    Reserved(Reservation),
    /// Nothing was held: the amount would go over the limit.
    Denied {
        /// What is left under the limit (read just after the refusal).
        remaining: u64,
    },
}

/// Exact quota consumption per (tenant, feature or meter key, period),
/// shared by every process using the same backend.
///
/// Behaviour contract (checked by the conformance suite in
/// [`crate::testing::quota`], feature `testing`):
/// - **Exact**: the used amount of a key never goes over the `limit` given
///   with the grant, however many callers, stores or processes race:
///   each grant is one atomic check-and-add. Of racing callers asking for
///   more than is left, exactly enough are granted to reach the limit.
/// - **Durable**: a new store on the same backend (a restart) sees the
///   used amount.
/// - **Per key**: tenants, names and periods are separate counters; an
///   unseen key has used 0, so a new period starts from zero, once.
/// - A denied call changes nothing. The limit is the caller's (from the
///   plan); lowering it below the used amount denies every new grant.
/// - Amounts and limits are integers up to [`MAX_QUOTA_AMOUNT`]; more is
///   `InvalidInput`. An amount of 0 changes nothing (granted while the
///   used amount is within the limit).
/// - Reserved units count as used until released or expired; committed
///   units stay used until [`give_back`](QuotaStore::give_back).
#[async_trait]
pub trait QuotaStore: Send + Sync + fmt::Debug {
    /// Adds `amount` to the key's used amount if the sum stays at most
    /// `limit`; otherwise changes nothing and returns `Denied`.
    ///
    /// # Errors
    /// `InvalidInput` if `amount` or `limit` exceeds [`MAX_QUOTA_AMOUNT`];
    /// `Backend` if the backend fails (nothing is known to be consumed:
    /// deny, or retry).
    async fn try_consume(
        &self,
        key: &QuotaKey,
        amount: u64,
        limit: u64,
    ) -> Result<Consumption, BillingError>;

    /// Like [`try_consume`](QuotaStore::try_consume), but the units are
    /// held by a [`Reservation`] that goes back by itself after `ttl` unless
    /// committed.
    ///
    /// # Errors
    /// As `try_consume`; `InvalidInput` if `ttl` is zero or too large to
    /// add to the current time.
    async fn reserve(
        &self,
        key: &QuotaKey,
        amount: u64,
        limit: u64,
        ttl: Duration,
    ) -> Result<ReserveOutcome, BillingError>;

    /// Makes the reservation's units used for good (until
    /// [`give_back`](QuotaStore::give_back)).
    ///
    /// # Errors
    /// `NotFound` if the reservation is unknown, already committed,
    /// released, or expired (its units went back: reserve again).
    async fn commit(&self, reservation: &Reservation) -> Result<(), BillingError>;

    /// Gives the reservation's units back. Releasing a reservation that
    /// is unknown, committed, released or expired does nothing.
    ///
    /// # Errors
    /// `Backend` if the backend fails.
    async fn release(&self, reservation: &Reservation) -> Result<(), BillingError>;

    /// Subtracts `amount` committed or consumed units (a project deleted).
    ///
    /// # Errors
    /// `InvalidInput` (no change) if `amount` exceeds what is used outside
    /// live reservations — giving back more than was taken is a bug in the
    /// caller.
    async fn give_back(&self, key: &QuotaKey, amount: u64) -> Result<(), BillingError>;

    /// The used amount: consumed and committed units plus live
    /// reservations.
    ///
    /// # Errors
    /// `Backend` if the backend fails.
    async fn used(&self, key: &QuotaKey) -> Result<u64, BillingError>;
}

/// The [`QuotaStore`] of a SQL store whose every operation also exists on
/// a caller's connection (`try_consume_in`, …): each pool method checks
/// its input before taking a connection, then runs the `_in` method on
/// one. Written once for PostgreSQL and SQLite.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
macro_rules! quota_store_over_connections {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::quota::QuotaStore for $store {
            async fn try_consume(
                &self,
                key: &$crate::quota::QuotaKey,
                amount: u64,
                limit: u64,
            ) -> Result<$crate::quota::Consumption, $crate::BillingError> {
                $crate::quota::check_amount("quota amount", amount)?;
                $crate::quota::check_amount("quota limit", limit)?;
                let mut conn = self.acquire().await?;
                self.try_consume_in(&mut conn, key, amount, limit).await
            }

            async fn reserve(
                &self,
                key: &$crate::quota::QuotaKey,
                amount: u64,
                limit: u64,
                ttl: std::time::Duration,
            ) -> Result<$crate::quota::ReserveOutcome, $crate::BillingError> {
                $crate::quota::check_amount("quota amount", amount)?;
                $crate::quota::check_amount("quota limit", limit)?;
                $crate::quota::expiry(self.clock.now(), ttl)?;
                let mut conn = self.acquire().await?;
                self.reserve_in(&mut conn, key, amount, limit, ttl).await
            }

            async fn commit(
                &self,
                reservation: &$crate::quota::Reservation,
            ) -> Result<(), $crate::BillingError> {
                let mut conn = self.acquire().await?;
                self.commit_in(&mut conn, reservation).await
            }

            async fn release(
                &self,
                reservation: &$crate::quota::Reservation,
            ) -> Result<(), $crate::BillingError> {
                let mut conn = self.acquire().await?;
                self.release_in(&mut conn, reservation).await
            }

            async fn give_back(
                &self,
                key: &$crate::quota::QuotaKey,
                amount: u64,
            ) -> Result<(), $crate::BillingError> {
                $crate::quota::check_amount("give_back amount", amount)?;
                let mut conn = self.acquire().await?;
                self.give_back_in(&mut conn, key, amount).await
            }

            async fn used(
                &self,
                key: &$crate::quota::QuotaKey,
            ) -> Result<u64, $crate::BillingError> {
                let mut conn = self.acquire().await?;
                self.used_in(&mut conn, key).await
            }
        }
    };
}
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) use quota_store_over_connections;

pub(crate) fn check_amount(field: &'static str, value: u64) -> Result<i64, BillingError> {
    i64::try_from(value).map_err(|_| BillingError::InvalidInput {
        field,
        reason: format!("{value} is above the maximum {MAX_QUOTA_AMOUNT}"),
    })
}

pub(crate) fn expiry(now: DateTime<Utc>, ttl: Duration) -> Result<DateTime<Utc>, BillingError> {
    let invalid = || BillingError::InvalidInput {
        field: "reservation ttl",
        reason: format!("{ttl:?} must be above zero and at most a few years"),
    };
    if ttl.is_zero() {
        return Err(invalid());
    }
    let delta = chrono::TimeDelta::from_std(ttl).map_err(|_| invalid())?;
    now.checked_add_signed(delta).ok_or_else(invalid)
}

pub(crate) fn reservation_not_found(reservation: &Reservation) -> BillingError {
    BillingError::NotFound {
        what: "quota reservation (expired, released or already committed; reserve again)",
        id: reservation.id.to_string(),
    }
}

pub(crate) fn give_back_too_much(key: &QuotaKey, amount: u64) -> BillingError {
    BillingError::InvalidInput {
        field: "give_back amount",
        reason: format!(
            "{amount} is more than the committed units of {key}; give back only units taken"
        ),
    }
}
