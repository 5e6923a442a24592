//! Moving a tenant between placements and clusters while it keeps
//! writing: see [`PgTenancy::move_tenant`](super::PgTenancy::move_tenant).
//!
//! Files: `run.rs` drives the phases, `undo.rs` aborts and cleans up,
//! `ledger.rs` records them next to the tenant records, `plan.rs` finds
//! both sides' tables and picks the method, `replicate.rs` runs logical
//! replication, `copy.rs` copies under the fence, `lockout.rs` makes the
//! source unwritable for the tenant, `follow.rs` tells other processes.

mod api;
mod copy;
mod follow;
mod ledger;
mod lockout;
mod plan;
mod replicate;
mod run;
mod target;
mod undo;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use saas_core::TenantId;

use crate::error::TenancyError;
use crate::placement::Placement;

pub use follow::CHANNEL as MOVE_CHANNEL;
pub(super) use follow::Follower;

/// A phase of a tenant move, as its ledger records it once done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum MovePhase {
    /// The ledger row exists; nothing else is done yet.
    Started,
    /// The target is prepared (schema or
    /// database provisioned and empty, or no rows of the tenant left in
    /// shared tables).
    Prepared,
    /// Logical replication copied the tenant's tables and caught up
    /// (skipped when the move copies under the fence).
    Copying,
    /// The tenant is `moving` in the catalog and its source placement is
    /// locked out: no write lands there any more.
    Fenced,
    /// The target holds every row the source held at the fence (counts
    /// checked per table), sequences carried over, replication removed.
    Synced,
    /// The catalog names the target: the tenant is served there.
    CutOver,
    /// The source was purged (unless kept) and the move is finished.
    Done,
    /// The move was undone before its cut-over.
    Aborted,
}

impl MovePhase {
    /// The ledger's name of the phase.
    pub fn as_str(self) -> &'static str {
        match self {
            MovePhase::Started => "started",
            MovePhase::Prepared => "prepared",
            MovePhase::Copying => "copying",
            MovePhase::Fenced => "fenced",
            MovePhase::Synced => "synced",
            MovePhase::CutOver => "cut_over",
            MovePhase::Done => "done",
            MovePhase::Aborted => "aborted",
        }
    }

    fn parse(s: &str) -> Result<Self, TenancyError> {
        Ok(match s {
            "started" => MovePhase::Started,
            "prepared" => MovePhase::Prepared,
            "copying" => MovePhase::Copying,
            "fenced" => MovePhase::Fenced,
            "synced" => MovePhase::Synced,
            "cut_over" => MovePhase::CutOver,
            "done" => MovePhase::Done,
            "aborted" => MovePhase::Aborted,
            other => {
                return Err(TenancyError::Corrupt(format!(
                    "unknown move phase {other:?} in saas_tenant_moves"
                )));
            }
        })
    }
}

impl fmt::Display for MovePhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a move brings the tenant's rows to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MoveMethod {
    /// PostgreSQL logical replication (a publication, with a row filter
    /// for a row tenant, and a subscription with its initial copy) while
    /// the tenant keeps writing; the fence lasts only for the last
    /// changes. Used when the target's tables can carry the source's
    /// schema-qualified names (see [`PgTenancy::move_tenant`](super::PgTenancy::move_tenant)).
    LogicalReplication,
    /// A `COPY` of the tenant's rows while the tenant is fenced: the write
    /// window lasts as long as the copy.
    CopyUnderFence,
}

impl MoveMethod {
    fn as_str(self) -> &'static str {
        match self {
            MoveMethod::LogicalReplication => "replication",
            MoveMethod::CopyUnderFence => "fence_copy",
        }
    }

    fn parse(s: &str) -> Result<Self, TenancyError> {
        match s {
            "replication" => Ok(MoveMethod::LogicalReplication),
            "fence_copy" => Ok(MoveMethod::CopyUnderFence),
            other => Err(TenancyError::Corrupt(format!(
                "unknown move method {other:?} in saas_tenant_moves"
            ))),
        }
    }
}

/// Where a move is, for a progress callback.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MoveProgress {
    /// The move.
    pub move_id: uuid::Uuid,
    /// The tenant.
    pub tenant: TenantId,
    /// The phase the move is working on (the next one to be recorded).
    pub phase: MovePhase,
    /// Tables whose initial copy is done (replication), of `tables`.
    pub tables_ready: usize,
    /// The tenant's tables.
    pub tables: usize,
    /// Bytes of WAL the target still has to receive, when known.
    pub lag_bytes: Option<u64>,
}

/// A progress callback: called at each phase and while replication
/// catches up. Keep it quick; it runs on the mover's task.
pub type MoveProgressFn = Arc<dyn Fn(&MoveProgress) + Send + Sync>;

/// Options of [`PgTenancy::move_tenant`](super::PgTenancy::move_tenant).
///
/// ```
/// use std::time::Duration;
/// use saas_tenancy::postgres::MoveOptions;
///
/// let options = MoveOptions::default()
///     .fence_grace(Duration::from_secs(2))
///     .keep_source(true)
///     .on_progress(|p| println!("{} {}/{}", p.phase, p.tables_ready, p.tables));
/// # let _ = options;
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct MoveOptions {
    /// How long the fence waits for the tenant's open handles to end
    /// before it cuts them (default 5 s).
    pub fence_grace: Duration,
    /// How long replication may take to copy and catch up before the
    /// move stops with [`TenancyError::MoveStopped`] (resumable; default
    /// 10 minutes); also bounds the wait for the last changes under the
    /// fence.
    pub catch_up_timeout: Duration,
    /// The replication lag (bytes of WAL not yet confirmed by the target)
    /// under which the move fences (default 8 MiB: on a busy server the
    /// slot's position trails the WAL by what other databases write; what
    /// is left is decoded under the fence, in well under a second).
    pub max_lag_bytes: u64,
    /// Keeps the source's data after the cut-over (default: purged). It
    /// stays locked out for the tenant; remove it with
    /// [`PgTenancy::purge_moved_source`](super::PgTenancy::purge_moved_source).
    pub keep_source: bool,
    /// Tables whose rows are a queue keyed by a sequence that is not the
    /// tenant's — by default `saas_events_outbox`, the `saas-events`
    /// outbox (its `seq` is shared by every tenant of a location, so
    /// replicating it would collide with the target's own rows). They are
    /// not replicated: under the fence the tenant's rows are copied into
    /// the target's table with new keys from its sequence, in order, the
    /// tenant column set to the tenant, then deleted from the source — so
    /// pending events are relayed from the target, with their event ids
    /// (inside the payload) kept for the consumers' inbox deduplication.
    /// Pass the same list to `resume_move`.
    pub queue_tables: Vec<String>,
    progress: Option<MoveProgressFn>,
    stop_after: Option<MovePhase>,
}

impl Default for MoveOptions {
    fn default() -> Self {
        Self {
            fence_grace: Duration::from_secs(5),
            catch_up_timeout: Duration::from_secs(600),
            max_lag_bytes: 8 << 20,
            keep_source: false,
            queue_tables: vec!["saas_events_outbox".to_owned()],
            progress: None,
            stop_after: None,
        }
    }
}

impl fmt::Debug for MoveOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MoveOptions")
            .field("fence_grace", &self.fence_grace)
            .field("catch_up_timeout", &self.catch_up_timeout)
            .field("max_lag_bytes", &self.max_lag_bytes)
            .field("keep_source", &self.keep_source)
            .field("queue_tables", &self.queue_tables)
            .field("stop_after", &self.stop_after)
            .finish_non_exhaustive()
    }
}

impl MoveOptions {
    /// Sets [`fence_grace`](Self::fence_grace).
    pub fn fence_grace(mut self, grace: Duration) -> Self {
        self.fence_grace = grace;
        self
    }

    /// Sets [`catch_up_timeout`](Self::catch_up_timeout).
    pub fn catch_up_timeout(mut self, timeout: Duration) -> Self {
        self.catch_up_timeout = timeout;
        self
    }

    /// Sets [`max_lag_bytes`](Self::max_lag_bytes).
    pub fn max_lag_bytes(mut self, bytes: u64) -> Self {
        self.max_lag_bytes = bytes;
        self
    }

    /// Sets [`keep_source`](Self::keep_source).
    pub fn keep_source(mut self, keep: bool) -> Self {
        self.keep_source = keep;
        self
    }

    /// Sets [`queue_tables`](Self::queue_tables) (bare table names).
    pub fn queue_tables<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.queue_tables = names.into_iter().map(Into::into).collect();
        self
    }

    /// Splits `tables` into those moved as rows and the queue tables.
    fn split(&self, tables: Vec<plan::Table>) -> (Vec<plan::Table>, Vec<plan::Table>) {
        tables
            .into_iter()
            .partition(|t| !self.queue_tables.contains(&t.name))
    }

    /// Calls `progress` at each phase and while replication catches up.
    pub fn on_progress(mut self, progress: impl Fn(&MoveProgress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }

    /// **For tests of recovery**: the mover stops right after recording
    /// `phase` in the ledger, as if its process died there, and returns
    /// [`TenancyError::MoveStopped`]. Finish with
    /// [`PgTenancy::resume_move`](super::PgTenancy::resume_move) or undo
    /// with [`PgTenancy::abort_move`](super::PgTenancy::abort_move).
    pub fn stop_after(mut self, phase: MovePhase) -> Self {
        self.stop_after = Some(phase);
        self
    }
}

/// What a finished move did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MoveReport {
    /// The move (its ledger row in `saas_tenant_moves`).
    pub move_id: uuid::Uuid,
    /// The tenant.
    pub tenant: TenantId,
    /// Where it was.
    pub from: Placement,
    /// Where it is now.
    pub to: Placement,
    /// How its rows were brought over.
    pub method: MoveMethod,
    /// Rows on the target per table (bare name), counted under the fence
    /// (empty when this run resumed a move past that point).
    pub rows: BTreeMap<String, u64>,
    /// Rows of queue tables ([`MoveOptions::queue_tables`]) moved under
    /// the fence, per table.
    pub queued: BTreeMap<String, u64>,
    /// The replication lag (bytes of WAL) when the fence went up.
    pub lag_at_fence_bytes: Option<u64>,
    /// How long the tenant was fenced (new handles waited), as this run
    /// of the mover saw it.
    pub fence: Duration,
    /// How long each phase took in this run of the mover.
    pub phases: Vec<(MovePhase, Duration)>,
}
