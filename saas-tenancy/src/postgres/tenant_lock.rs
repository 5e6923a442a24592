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
//! held on a connection of its own, never a pooled one: closing that
//! connection releases it, and so does the end of the connection when the
//! holder's future is dropped, the holder panics or its process dies — a
//! crash never leaves a tenant locked.
//!
//! Not re-entrant: a second session cannot take a lock the first holds, so
//! code running under it must not take it again (it would wait for itself).
//! Public operations lock; the internals they call assume the lock is held.

use std::future::Future;

use saas_core::TenantId;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::PgTenancy;
use crate::error::TenancyError;
use crate::record::TenantRecord;
use crate::tenancy_core::HeldLock;

/// Prefix of the lock key: hashed with the tenant id into the 64-bit
/// advisory-lock space shared with the host's own advisory locks.
const KEY_PREFIX: &str = "saas_tenancy.tenant.";

/// A held tenant lock; [`TenantLock::release`] it when done (dropping it
/// releases it too, when the server notices the closed connection).
pub(super) struct TenantLock {
    conn: PgConnection,
}

impl TenantLock {
    /// Waits until no other session holds `tenant`'s lock on the database
    /// `admin` connects to, then holds it.
    async fn acquire(admin: &PgConnectOptions, tenant: TenantId) -> Result<Self, TenancyError> {
        let mut conn = PgConnection::connect_with(admin).await?;
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(format!("{KEY_PREFIX}{tenant}"))
            .execute(&mut conn)
            .await?;
        Ok(Self { conn })
    }

    /// Releases the lock by ending its session (if the polite close fails,
    /// the dropped socket ends the session all the same).
    pub(super) async fn release(self) {
        let _ = self.conn.close().await;
    }
}

impl HeldLock for TenantLock {
    fn release(self) -> impl Future<Output = ()> + Send {
        TenantLock::release(self)
    }
}

impl PgTenancy {
    /// Takes `id`'s lock on its cluster's admin database, then reads its
    /// record again (see `Core::lock_tenant`).
    pub(super) async fn lock_tenant(
        &self,
        id: TenantId,
    ) -> Result<(TenantLock, TenantRecord), TenancyError> {
        self.inner
            .lock_tenant(id, |cluster| TenantLock::acquire(&cluster.config.admin, id))
            .await
    }
}
