//! Deletion is final: how a PostgreSQL deletion finds, waits for and cuts
//! the scoped handles still open on its tenant, so that nothing written
//! through one survives the deletion.
//!
//! **Finding handles, on any process.** A handle served by a cluster's
//! shared runtime pool ([`ScopeMode::Shared`](super::ScopeMode::Shared),
//! row and schema tenants) holds the tenant's *handle lock* shared: an
//! advisory lock keyed by the tenant id ([`handle_lock_key`]), taken in
//! the round trip that already sets the scope — transaction-level in a
//! `PgTenantTx`'s `BEGIN`, session-level in a `PgTenantConn`'s scope statement
//! (released by the reset every connection gets on its way back to the
//! pool, or with the session). A tenant-pool connection
//! ([`ScopeMode::TenantPools`](super::ScopeMode::TenantPools), database
//! tenants) carries its scope from its startup packet and has no round trip
//! to spare at checkout; it carries its tenant in its `application_name`
//! too ([`application_name`]), so `pg_stat_activity` shows it.
//!
//! **Waiting, then cutting.** Within the deletion grace period the
//! deletion waits for this process's tenant pool to get its connections
//! back (it is closed first), for the handle lock exclusively, and for
//! tenant-pool connections of every process that are inside a transaction
//! or running a statement. What is left then is terminated
//! (`pg_terminate_backend`): holders of the handle lock, and every
//! connection with the tenant's application name — an idle tenant-pool
//! connection of another process cannot be told from one parked in its
//! pool, so it is not waited for. The data is deleted holding the handle
//! lock exclusively, and sessions queued for it meanwhile (a request of a
//! process whose cached record was still `active`) are terminated before
//! it is released.
//!
//! The lock lives in the tenant's cluster admin database — the database
//! the shared runtime pool connects to. Its two `int4` keys put it in a
//! space of its own (`objsubid` 2 in `pg_locks`): the library's other
//! advisory locks use one `bigint` key.

use std::time::{Duration, Instant};

use saas_core::TenantId;
use sqlx::{PgConnection, PgPool};

use crate::error::TenancyError;

/// How long a deletion waits, after terminating the holders of the
/// handle lock, for their sessions to end and release it — per attempt.
const CUT_WAIT: Duration = Duration::from_secs(5);

/// How many times the holders of the handle lock are terminated before a
/// deletion gives up (a holder can only appear again from a process whose
/// cached record still says `active`).
const CUT_ATTEMPTS: usize = 3;

/// How often the deletion looks for busy tenant-pool connections.
const POLL: Duration = Duration::from_millis(25);

/// The advisory lock key of `tenant`'s handles: the two `int4` keys of
/// `pg_advisory_lock_shared(key1, key2)`, the id's 128 bits folded to 64.
///
/// Every scoped handle a shared runtime pool serves holds this lock shared
/// while it is open; a deletion takes it exclusively. `pg_locks` shows it
/// with `locktype = 'advisory'`, `objsubid = 2`, `classid` = key 1 and
/// `objid` = key 2 (as unsigned `oid`s). A host's own two-key advisory
/// locks would meet it only if they chose these very keys.
pub fn handle_lock_key(tenant: TenantId) -> (i32, i32) {
    let (high, low) = tenant.as_uuid().as_u64_pair();
    let folded = (high ^ low).to_be_bytes();
    let [a, b, c, d, e, f, g, h] = folded;
    (
        i32::from_be_bytes([a, b, c, d]),
        i32::from_be_bytes([e, f, g, h]),
    )
}

/// The `application_name` of `tenant`'s tenant-pool connections:
/// `saas_tenant_` and the id's 32 hex digits (44 bytes; PostgreSQL keeps
/// 63).
pub(super) fn application_name(tenant: TenantId) -> String {
    format!("saas_tenant_{}", tenant.simple())
}

/// The `pg_locks` columns of a key: `int4` keys read as unsigned `oid`s.
fn oid_keys(tenant: TenantId) -> (i64, i64) {
    let (k1, k2) = handle_lock_key(tenant);
    (i64::from(k1.cast_unsigned()), i64::from(k2.cast_unsigned()))
}

/// One deletion's view of its tenant's handles.
#[derive(Debug)]
pub(super) struct Cutter {
    tenant: TenantId,
    deadline: Instant,
    admin_role: String,
}

impl Cutter {
    /// Starts the grace period of `tenant`'s deletion now.
    pub(super) fn new(tenant: TenantId, grace: Duration, admin_role: &str) -> Self {
        Self {
            tenant,
            deadline: Instant::now() + grace,
            admin_role: admin_role.to_owned(),
        }
    }

    /// What is left of the grace period.
    pub(super) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Waits, until the grace period ends, while tenant-pool connections
    /// of the tenant (any process) are inside a transaction or running a
    /// statement. A state the admin role may not see counts as busy.
    pub(super) async fn wait_for_pool_sessions(&self, admin: &PgPool) -> Result<(), TenancyError> {
        let name = application_name(self.tenant);
        loop {
            let busy: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_catalog.pg_stat_activity \
                 WHERE application_name = $1 AND state IS DISTINCT FROM 'idle' \
                 AND pid <> pg_catalog.pg_backend_pid()",
            )
            .bind(&name)
            .fetch_one(admin)
            .await?;
            let left = self.remaining();
            if busy == 0 || left.is_zero() {
                return Ok(());
            }
            tokio::time::sleep(left.min(POLL)).await;
        }
    }

    /// Terminates every tenant-pool connection of the tenant, in any
    /// process and any database of the cluster.
    pub(super) async fn cut_pool_sessions(&self, admin: &PgPool) -> Result<(), TenancyError> {
        let cut = sqlx::query_scalar::<_, bool>(
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_catalog.pg_backend_pid()",
        )
        .bind(application_name(self.tenant))
        .fetch_all(admin)
        .await;
        self.checked(cut).map(drop)
    }

    /// Takes the handle lock exclusively in `tx` (a transaction on the
    /// admin database; the lock ends with it): waits for its holders until
    /// the grace period ends — and for busy tenant-pool connections, see
    /// [`wait_for_pool_sessions`](Self::wait_for_pool_sessions) — then
    /// terminates the holders left and takes it.
    pub(super) async fn hold_handle_lock(
        &self,
        tx: &mut PgConnection,
        admin: &PgPool,
    ) -> Result<(), TenancyError> {
        let mut held = try_lock(tx, self.tenant, self.remaining()).await?;
        self.wait_for_pool_sessions(admin).await?;
        self.cut_pool_sessions(admin).await?;
        for _ in 0..CUT_ATTEMPTS {
            if held {
                break;
            }
            self.cut_lock_sessions(tx, true).await?;
            held = try_lock(tx, self.tenant, CUT_WAIT).await?;
        }
        // Later statements of the deletion wait as they would have.
        sqlx::raw_sql("SET LOCAL lock_timeout TO DEFAULT")
            .execute(&mut *tx)
            .await?;
        if held {
            Ok(())
        } else {
            Err(TenancyError::TenantInUse {
                tenant: self.tenant,
                detail: format!(
                    "sessions kept taking its handle lock after being terminated \
                     {CUT_ATTEMPTS} times (another process still serving it from a \
                     cached record?)"
                ),
            })
        }
    }

    /// Terminates the sessions that hold the handle lock (`granted`) or
    /// wait for it (not `granted`: requests queued behind the deletion's
    /// exclusive hold, from a process whose cached record was stale).
    pub(super) async fn cut_lock_sessions(
        &self,
        conn: &mut PgConnection,
        granted: bool,
    ) -> Result<(), TenancyError> {
        let (k1, k2) = oid_keys(self.tenant);
        let cut = sqlx::query_scalar::<_, bool>(
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_locks \
             WHERE locktype = 'advisory' AND objsubid = 2 \
             AND classid::int8 = $1 AND objid::int8 = $2 AND granted = $3 \
             AND database = (SELECT oid FROM pg_catalog.pg_database \
                             WHERE datname = pg_catalog.current_database()) \
             AND pid IS NOT NULL AND pid <> pg_catalog.pg_backend_pid()",
        )
        .bind(k1)
        .bind(k2)
        .bind(granted)
        .fetch_all(&mut *conn)
        .await;
        self.checked(cut).map(drop)
    }

    /// Turns a refused `pg_terminate_backend` into an error that says what
    /// to grant.
    fn checked<T>(&self, result: Result<T, sqlx::Error>) -> Result<T, TenancyError> {
        match result {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {
                Err(TenancyError::InsufficientPrivilege(format!(
                    "the admin role {role} may not end the sessions still using tenant {tenant} \
                     ({e}); grant it pg_signal_backend (GRANT pg_signal_backend TO {role}) or \
                     membership in the runtime role, then call delete_tenant again — the tenant \
                     stays deleting and refuses new handles meanwhile",
                    role = super::sql::quote_ident(&self.admin_role),
                    tenant = self.tenant,
                )))
            }
            other => other.map_err(Into::into),
        }
    }
}

/// Tries to take the handle lock exclusively within `wait`, in the
/// transaction open on `tx` (`false` when the wait ran out).
async fn try_lock(
    tx: &mut PgConnection,
    tenant: TenantId,
    wait: Duration,
) -> Result<bool, TenancyError> {
    let (k1, k2) = handle_lock_key(tenant);
    // `lock_timeout` 0 would mean no limit: wait at least a millisecond.
    let millis = wait.as_millis().clamp(1, u128::from(u32::MAX));
    sqlx::query("SELECT pg_catalog.set_config('lock_timeout', $1, true)")
        .bind(format!("{millis}ms"))
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql("SAVEPOINT saas_fence")
        .execute(&mut *tx)
        .await?;
    let locked = sqlx::query("SELECT pg_catalog.pg_advisory_xact_lock($1, $2)")
        .bind(k1)
        .bind(k2)
        .execute(&mut *tx)
        .await;
    match locked {
        Ok(_) => {
            sqlx::raw_sql("RELEASE SAVEPOINT saas_fence")
                .execute(&mut *tx)
                .await?;
            Ok(true)
        }
        // lock_not_available: the wait ran out.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT saas_fence")
                .execute(&mut *tx)
                .await?;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_names_fit_postgres_limit() {
        // NAMEDATALEN - 1: a longer name would be cut, and never match.
        assert!(application_name(TenantId::new()).len() <= 63);
    }

    #[test]
    fn keys_come_from_the_whole_id() {
        let a = uuid::Uuid::from_u128(1);
        let b = uuid::Uuid::from_u128(1 << 64);
        let key = |u: uuid::Uuid| match TenantId::from_uuid(u) {
            Ok(id) => handle_lock_key(id),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(key(a), (0, 1));
        assert_eq!(key(b), (0, 1), "both halves are folded in");
        assert_ne!(key(uuid::Uuid::from_u128(2)), key(a));
    }
}
