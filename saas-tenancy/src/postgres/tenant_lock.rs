//! The one per-tenant lock of PostgreSQL tenant operations.
//!
//! Provisioning (and its retry), status changes, deletion, export, import
//! and the per-tenant step of a fleet migration each hold it while they
//! run, so two operations on one tenant never interleave — across tasks,
//! instances and processes. Each takes it, then reads the tenant's record
//! again, so it acts on what the operation before it left.
//!
//! It is a session advisory lock in the tenant's cluster **admin
//! database**, whatever the placement: advisory locks are per database, so
//! a lock taken inside a tenant database would exclude nothing running on
//! the admin database (and vice versa). It is keyed by the tenant id and
//! held on a connection that does nothing else while it is held, taken
//! from the cluster's lock pool (opening a connection per operation cost
//! more than the rest of provisioning a schema tenant: ~20 ms on a busy
//! two-core machine). Released, it is unlocked and the connection goes
//! back to that pool only if the unlock confirms the lock was held;
//! otherwise — and whenever the holder's future is dropped or panics —
//! the connection is closed, which ends the session and its locks; a
//! process that dies ends them too. So a crash never leaves a tenant
//! locked. When the lock pool is at its size for [`POOL_WAIT`], a
//! connection of its own is opened as before: operations are never
//! limited by the pool, only slower past it.
//!
//! Not re-entrant: a second session cannot take a lock the first holds, so
//! code running under it must not take it again (it would wait for itself).
//! Public operations lock; the internals they call assume the lock is held.

use std::future::Future;
use std::time::Duration;

use saas_core::TenantId;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres};

use super::PgTenancy;
use crate::error::TenancyError;
use crate::record::TenantRecord;
use crate::tenancy_core::HeldLock;

/// Prefix of the lock key: hashed with the tenant id into the 64-bit
/// advisory-lock space shared with the host's own advisory locks.
const KEY_PREFIX: &str = "saas_tenancy.tenant.";

/// Connections of a cluster's lock pool: concurrent tenant operations
/// past it open their own.
const POOL_SIZE: u32 = 16;

/// How long a tenant operation waits for a lock-pool connection before it
/// opens one of its own.
pub(super) const POOL_WAIT: Duration = Duration::from_millis(200);

/// The lock pool of a cluster whose admin connection is `admin` (lazy; an
/// idle connection is closed after a minute).
pub(super) fn lock_pool(admin: &PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .min_connections(0)
        .idle_timeout(Duration::from_secs(60))
        .acquire_timeout(POOL_WAIT)
        .connect_lazy_with(admin.clone())
}

/// Where a held lock lives.
enum Holder {
    Pooled(PoolConnection<Postgres>),
    Own(PgConnection),
}

/// A held tenant lock; [`TenantLock::release`] it when done (dropping it
/// closes its connection, which releases it when the server notices).
pub(super) struct TenantLock {
    holder: Option<Holder>,
    key: String,
}

impl TenantLock {
    /// Waits until no other session holds `tenant`'s lock on the database
    /// `admin` connects to, then holds it.
    async fn acquire(
        pool: &PgPool,
        admin: &PgConnectOptions,
        tenant: TenantId,
    ) -> Result<Self, TenancyError> {
        let holder = match pool.acquire().await {
            Ok(conn) => Holder::Pooled(conn),
            // The pool is busy (or cannot connect): a connection of its own.
            Err(_) => Holder::Own(PgConnection::connect_with(admin).await?),
        };
        let mut lock = Self {
            holder: Some(holder),
            key: format!("{KEY_PREFIX}{tenant}"),
        };
        // Dropped on error or cancellation: the connection is closed.
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(lock.key.clone())
            .execute(lock.conn())
            .await?;
        Ok(lock)
    }

    /// Holds `tenant`'s lock if no other session holds it; `None` (and
    /// nothing held) otherwise.
    async fn try_acquire(
        pool: &PgPool,
        admin: &PgConnectOptions,
        tenant: TenantId,
    ) -> Result<Option<Self>, TenancyError> {
        let holder = match pool.acquire().await {
            Ok(conn) => Holder::Pooled(conn),
            Err(_) => Holder::Own(PgConnection::connect_with(admin).await?),
        };
        let mut lock = Self {
            holder: Some(holder),
            key: format!("{KEY_PREFIX}{tenant}"),
        };
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(lock.key.clone())
            .fetch_one(lock.conn())
            .await?;
        if held {
            return Ok(Some(lock));
        }
        // Nothing held: the connection goes back as it came.
        match lock.holder.take() {
            Some(Holder::Own(conn)) => {
                let _ = conn.close().await;
            }
            Some(Holder::Pooled(conn)) => drop(conn),
            None => {}
        }
        Ok(None)
    }

    fn conn(&mut self) -> &mut PgConnection {
        match &mut self.holder {
            Some(Holder::Pooled(c)) => c,
            Some(Holder::Own(c)) => c,
            None => unreachable!("TenantLock used after release"),
        }
    }

    /// Releases the lock: unlocked on a pooled connection that then goes
    /// back to the lock pool — closed instead unless the unlock confirms
    /// the session held it (and held nothing else: raw SQL never runs on
    /// it) — or by ending its own connection's session.
    pub(super) async fn release(mut self) {
        let key = std::mem::take(&mut self.key);
        let unlocked: Result<bool, _> =
            sqlx::query_scalar("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                .bind(key)
                .fetch_one(self.conn())
                .await;
        match (self.holder.take(), unlocked) {
            // Back to the pool, without the lock.
            (Some(Holder::Pooled(conn)), Ok(true)) => drop(conn),
            (Some(Holder::Pooled(mut conn)), _) => conn.close_on_drop(),
            (Some(Holder::Own(conn)), _) => {
                let _ = conn.close().await;
            }
            (None, _) => {}
        }
    }
}

impl Drop for TenantLock {
    fn drop(&mut self) {
        // Not released (an error, a cancellation, a panic): the session
        // must end so that its lock does.
        if let Some(Holder::Pooled(mut conn)) = self.holder.take() {
            conn.close_on_drop();
        }
    }
}

impl HeldLock for TenantLock {
    fn release(self) -> impl Future<Output = ()> + Send {
        TenantLock::release(self)
    }
}

impl PgTenancy {
    /// As [`lock_tenant`](Self::lock_tenant), but `None` at once when
    /// another operation holds the lock (for maintenance that can wait for
    /// its next round).
    pub(super) async fn try_lock_tenant(
        &self,
        id: TenantId,
    ) -> Result<Option<(TenantLock, TenantRecord)>, TenancyError> {
        let listed = self.inner.record(id).await?;
        let cluster = self.cluster(listed.placement.cluster())?;
        let Some(held) = TenantLock::try_acquire(&cluster.locks, &cluster.config.admin, id).await?
        else {
            return Ok(None);
        };
        match self.inner.record(id).await {
            Ok(record) => Ok(Some((held, record))),
            Err(e) => {
                held.release().await;
                Err(e)
            }
        }
    }

    /// `id`'s lock on cluster `cluster`, without reading its record (a
    /// tenant whose record is gone); `None` when another session holds it.
    pub(super) async fn try_lock_on(
        &self,
        cluster: &crate::ClusterName,
        id: TenantId,
    ) -> Result<Option<TenantLock>, TenancyError> {
        let cluster = self.cluster(cluster)?;
        TenantLock::try_acquire(&cluster.locks, &cluster.config.admin, id).await
    }

    /// Takes `id`'s lock on its cluster's admin database, then reads its
    /// record again (see `Core::lock_tenant`).
    pub(super) async fn lock_tenant(
        &self,
        id: TenantId,
    ) -> Result<(TenantLock, TenantRecord), TenancyError> {
        let locked = self
            .inner
            .lock_tenant(id, |cluster| {
                TenantLock::acquire(&cluster.locks, &cluster.config.admin, id)
            })
            .await;
        match locked {
            // Moved to a placement this tenancy does not serve (a SQLite
            // placement): say where, rather than naming a missing cluster.
            Err(TenancyError::UnknownCluster(_)) => match self.inner.record(id).await {
                Ok(record) => Err(TenancyError::PlacementNotServedHere {
                    tenant: id,
                    placement: record.placement,
                }),
                Err(e) => Err(e),
            },
            other => other,
        }
    }

    /// `id`'s lock on cluster `cluster`, waited for, without reading its
    /// record: the lock of a move whose tenant the catalog may place on
    /// another backend by now (`moving/to_sqlite.rs`).
    pub(super) async fn lock_on(
        &self,
        cluster: &crate::ClusterName,
        id: TenantId,
    ) -> Result<TenantLock, TenancyError> {
        let cluster = self.cluster(cluster)?;
        TenantLock::acquire(&cluster.locks, &cluster.config.admin, id).await
    }
}
