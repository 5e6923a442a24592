//! Kept sources: listing them, purging them by hand or once their
//! retention has passed.
//!
//! A kept source is safe to purge while its tenant is served elsewhere:
//! the catalog does not name it, and its lock-out keeps stale processes
//! out. Each purge takes the tenant's lock and reads the ledger row again
//! under it, so purgers on several servers (and a move back starting
//! meanwhile, which takes the source over in the ledger when it starts)
//! never purge one source twice nor a source that is in use again.

use chrono::{DateTime, Utc};
use saas_core::TenantId;
use sqlx::PgPool;

use super::ledger::{self, MoveRow};
use super::plan;
use crate::error::TenancyError;
use crate::placement::Placement;
use crate::postgres::PgTenancy;

/// Expired sources looked at per call of
/// [`PgTenancy::purge_expired_sources`].
const BATCH: i64 = 100;

/// A source a finished move kept (see
/// [`MoveOptions::keep_source`](super::MoveOptions::keep_source)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeptSource {
    /// The move that left it (its ledger row in `saas_tenant_moves`).
    pub move_id: uuid::Uuid,
    /// The tenant.
    pub tenant: TenantId,
    /// Where the tenant was before that move: the kept data.
    pub placement: Placement,
    /// When its retention ends (read from the tenancy's clock at the
    /// cut-over, plus [`MoveOptions::keep_source_for`](super::MoveOptions::keep_source_for));
    /// `None` when it is kept until purged by hand.
    pub kept_until: Option<DateTime<Utc>>,
}

impl KeptSource {
    fn of(row: &MoveRow) -> Self {
        Self {
            move_id: row.id,
            tenant: row.tenant,
            placement: row.from.clone(),
            kept_until: row.keep_until,
        }
    }
}

/// What [`PgTenancy::purge_expired_sources`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct SourcePurge {
    /// Sources removed by this call.
    pub purged: Vec<KeptSource>,
    /// Expired sources left for a later call: their tenant was locked by
    /// another operation (a move, a purge on another server…).
    pub deferred: Vec<KeptSource>,
    /// Expired sources whose purge failed, with the error; they stay
    /// kept and are tried again by the next call.
    pub failed: Vec<(KeptSource, TenancyError)>,
}

impl PgTenancy {
    /// The tenant's kept move sources, oldest first.
    ///
    /// # Errors
    /// [`TenancyError::Unsupported`] without a PostgreSQL catalog, or a
    /// database error.
    pub async fn kept_sources(&self, tenant: TenantId) -> Result<Vec<KeptSource>, TenancyError> {
        let pool = self.ledger_pool()?;
        ledger::migrate(pool).await?;
        Ok(ledger::kept(pool, tenant)
            .await?
            .iter()
            .map(KeptSource::of)
            .collect())
    }

    /// Removes every source the tenant's finished moves kept
    /// ([`MoveOptions::keep_source`](super::MoveOptions::keep_source)),
    /// whatever their retention: the tenant's rows from the shared tables
    /// (the row lock-out policies stay until the tenant moves back there),
    /// its schema and role, or its database. Returns what was removed.
    ///
    /// # Errors
    /// [`TenancyError::InvalidInput`] when the tenant has no kept source.
    pub async fn purge_moved_source(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<KeptSource>, TenancyError> {
        let pool = self.ledger_pool()?;
        ledger::migrate(pool).await?;
        let (lock, placed) = match self.lock_tenant(tenant).await {
            Ok((lock, record)) => (lock, record.placement),
            // Served by another backend since (`move_tenant_to_sqlite`):
            // the lock its move held, on the kept source's cluster.
            Err(TenancyError::PlacementNotServedHere { placement, .. }) => {
                match ledger::kept(pool, tenant).await?.first() {
                    Some(row) => (self.lock_on(row.from.cluster(), tenant).await?, placement),
                    None => return Err(no_kept_source(tenant)),
                }
            }
            Err(e) => return Err(e),
        };
        let result = async {
            let kept = ledger::kept(pool, tenant).await?;
            if kept.is_empty() {
                return Err(no_kept_source(tenant));
            }
            let mut purged = Vec::new();
            for row in &kept {
                if self.purge_kept(pool, row, Some(&placed)).await? {
                    purged.push(KeptSource::of(row));
                }
            }
            Ok(purged)
        }
        .await;
        lock.release().await;
        result
    }

    /// Purges the kept move sources whose retention
    /// ([`MoveOptions::keep_source_for`](super::MoveOptions::keep_source_for))
    /// has passed by the tenancy's clock, up to 100 per call (oldest
    /// first). Meant for every server's maintenance loop: it is idempotent
    /// and safe to run concurrently — each source is purged under its
    /// tenant's lock after its ledger row is read again, a tenant locked
    /// by another operation is deferred to a later call, and a source the
    /// tenant was moved back into is never touched (the move took it over).
    /// Sources kept without a retention are left for
    /// [`purge_moved_source`](Self::purge_moved_source).
    ///
    /// ```no_run
    /// # async fn run(tenancy: saas_tenancy::postgres::PgTenancy) {
    /// let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    /// loop {
    ///     tick.tick().await;
    ///     match tenancy.purge_expired_sources().await {
    ///         Ok(done) => {
    ///             for (source, error) in &done.failed {
    ///                 tracing::warn!(tenant = %source.tenant, %error, "kept source not purged");
    ///             }
    ///         }
    ///         Err(error) => tracing::warn!(%error, "purging kept sources"),
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`TenancyError::Unsupported`] without a PostgreSQL catalog, or a
    /// database error reading the ledger; a source that fails is reported
    /// in [`SourcePurge::failed`] and the others are still purged.
    pub async fn purge_expired_sources(&self) -> Result<SourcePurge, TenancyError> {
        let pool = self.ledger_pool()?;
        ledger::migrate(pool).await?;
        let now = self.inner.clock.now();
        let mut done = SourcePurge::default();
        for row in ledger::expired(pool, now, BATCH).await? {
            let source = KeptSource::of(&row);
            match self.purge_expired(pool, &row, now).await {
                Ok(Some(true)) => done.purged.push(source),
                Ok(Some(false)) => {}
                Ok(None) => done.deferred.push(source),
                Err(e) => done.failed.push((source, e)),
            }
        }
        Ok(done)
    }

    /// One expired source: `None` when its tenant is locked, `Some(true)`
    /// when this call purged it.
    async fn purge_expired(
        &self,
        pool: &PgPool,
        row: &MoveRow,
        now: DateTime<Utc>,
    ) -> Result<Option<bool>, TenancyError> {
        let (lock, placed) = match self.try_lock_tenant(row.tenant).await {
            Ok(Some((lock, record))) => (lock, Some(record.placement)),
            Ok(None) => return Ok(None),
            // The tenant's record is gone, or names a cluster this
            // tenancy does not have (moved to SQLite): nobody is served
            // from the source.
            Err(TenancyError::TenantNotFound(_) | TenancyError::UnknownCluster(_)) => {
                match self.try_lock_on(row.from.cluster(), row.tenant).await? {
                    Some(lock) => (lock, None),
                    None => return Ok(None),
                }
            }
            Err(e) => return Err(e),
        };
        let result = async {
            // Read again under the lock: another purger or a move back may
            // have taken it meanwhile.
            match ledger::kept_by_id(pool, row.id).await? {
                Some(row) if row.keep_until.is_some_and(|t| t <= now) => {
                    self.purge_kept(pool, &row, placed.as_ref()).await
                }
                _ => Ok(false),
            }
        }
        .await;
        lock.release().await;
        result.map(Some)
    }

    /// Purges one kept source (the tenant's lock held) and records it;
    /// false, and the source released without a purge, when the tenant is
    /// served from it (a ledger written before moves back took their
    /// target over).
    async fn purge_kept(
        &self,
        pool: &PgPool,
        row: &MoveRow,
        placed: Option<&Placement>,
    ) -> Result<bool, TenancyError> {
        let now = self.inner.clock.now();
        if placed == Some(&row.from) {
            ledger::source_released(pool, row.id, "reused", now).await?;
            return Ok(false);
        }
        match &row.from {
            Placement::Shared { .. } => {
                let mut src = plan::connect(self, &row.from).await?;
                let source = self.source_tables(&mut src, &row.from).await?;
                self.purge_source(&mut src, row, &source).await?;
            }
            placement => self.remove_storage(placement).await?,
        }
        ledger::source_released(pool, row.id, "purged", now).await?;
        Ok(true)
    }
}

fn no_kept_source(tenant: TenantId) -> TenancyError {
    TenancyError::InvalidInput(format!("tenant {tenant} has no kept move source"))
}
