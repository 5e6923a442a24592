//! The backend-neutral vocabulary of tenant moves: phases, methods,
//! progress and the report. PostgreSQL's mover is in
//! `postgres/moving/`, SQLite's in `sqlite/moving/`; both record these
//! phases in their move ledgers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use saas_core::TenantId;

#[cfg(feature = "_sql")]
use crate::error::TenancyError;
use crate::placement::Placement;

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

    #[cfg(feature = "_sql")]
    pub(crate) fn parse(s: &str) -> Result<Self, TenancyError> {
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
    /// for a row tenant, a slot, the rows copied under the slot's
    /// snapshot, and a subscription) while
    /// the tenant keeps writing; the fence lasts only for the last
    /// changes. Used by PostgreSQL moves whose target's tables can carry
    /// the source's schema-qualified names (see `PgTenancy::move_tenant`).
    LogicalReplication,
    /// A copy of the tenant's rows while the tenant is fenced (PostgreSQL
    /// `COPY` server to server; SQLite `INSERT … SELECT` through `ATTACH`,
    /// or bounded chunks into PostgreSQL): the write window lasts as long
    /// as the copy. Every move from or to SQLite uses it.
    CopyUnderFence,
    /// PostgreSQL moves that replication cannot carry (row ↔ schema, both
    /// in one database; database → schema): triggers on the source record
    /// the key of every row the tenant writes, its rows are copied while
    /// it keeps writing, and the recorded keys are replayed — the target's
    /// row replaced by the source's current one — until few are left;
    /// under the fence only the last ones are. The write window does not
    /// grow with the tenant's size.
    CapturedCopy,
}

impl MoveMethod {
    #[cfg(feature = "postgres")]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MoveMethod::LogicalReplication => "replication",
            MoveMethod::CopyUnderFence => "fence_copy",
            MoveMethod::CapturedCopy => "captured_copy",
        }
    }

    #[cfg(feature = "postgres")]
    pub(crate) fn parse(s: &str) -> Result<Self, TenancyError> {
        match s {
            "replication" => Ok(MoveMethod::LogicalReplication),
            "fence_copy" => Ok(MoveMethod::CopyUnderFence),
            "captured_copy" => Ok(MoveMethod::CapturedCopy),
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
    /// Tables copied and caught up (replication), of `tables`.
    pub tables_ready: usize,
    /// The tenant's tables.
    pub tables: usize,
    /// Bytes of WAL the target still has to receive, when known.
    pub lag_bytes: Option<u64>,
}

/// A progress callback: called at each phase and while replication
/// catches up. Keep it quick; it runs on the mover's task.
pub type MoveProgressFn = Arc<dyn Fn(&MoveProgress) + Send + Sync>;

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
    /// Rows of queue tables (PostgreSQL's `MoveOptions::queue_tables`)
    /// moved under the fence, per table.
    pub queued: BTreeMap<String, u64>,
    /// The replication lag (bytes of WAL) when the fence went up.
    pub lag_at_fence_bytes: Option<u64>,
    /// How long the tenant was fenced (new handles waited), as this run
    /// of the mover saw it.
    pub fence: Duration,
    /// Online copies only (replication, captured copy): how long the
    /// initial copy took, from the start of the copy phase (replication:
    /// publication, slot and the mover's `COPY` under its snapshot — or
    /// subscription and PostgreSQL's table sync; captured copy: the
    /// triggers and the `COPY`) until every table's rows were copied. The rest of the copy phase
    /// ([`MovePhase::Copying`] in [`phases`](Self::phases)) is the catch-up
    /// with what the tenant wrote meanwhile. `None` for a copy under the
    /// fence, or when this run resumed past the copy.
    pub initial_copy: Option<Duration>,
    /// Logical replication only: why PostgreSQL's table sync copied the
    /// rows rather than the mover under the replication slot's exported
    /// snapshot — the mover's replication connection to the source could
    /// not be made or could not create the slot (it speaks plain text
    /// and needs the password from
    /// `PgClusterConfig::with_replication_conninfo` where the server asks
    /// for one). `None` when the mover copied them, for other methods, or
    /// when this run resumed past the copy's start.
    pub copied_by_table_sync: Option<String>,
    /// How long each phase took in this run of the mover.
    pub phases: Vec<(MovePhase, Duration)>,
}

#[cfg(feature = "_sql")]
impl MoveReport {
    /// The report of a run of the mover that has done nothing yet.
    pub(crate) fn started(
        move_id: uuid::Uuid,
        tenant: TenantId,
        from: Placement,
        to: Placement,
        method: MoveMethod,
    ) -> Self {
        MoveReport {
            move_id,
            tenant,
            from,
            to,
            method,
            rows: BTreeMap::new(),
            queued: BTreeMap::new(),
            lag_at_fence_bytes: None,
            fence: Duration::ZERO,
            initial_copy: None,
            copied_by_table_sync: None,
            phases: Vec::new(),
        }
    }
}

#[cfg(feature = "_sql")]
/// The checks every backend makes before a move starts: no unfinished
/// move (`open`: its id and phase), an active tenant, a target whose
/// storage name is derived from the tenant's id, and not where the tenant
/// is already.
pub(crate) fn check_request(
    record: &crate::record::TenantRecord,
    to: &Placement,
    open: Option<(uuid::Uuid, MovePhase)>,
) -> Result<(), TenancyError> {
    let tenant = record.id;
    if let Some((id, phase)) = open {
        return Err(TenancyError::InvalidInput(format!(
            "tenant {tenant} has an unfinished move {id} (phase {phase}); resume_move or \
             abort_move it first"
        )));
    }
    if record.status != saas_core::TenantStatus::Active {
        return Err(TenancyError::InvalidInput(format!(
            "tenant {tenant} is {}; only an active tenant can be moved",
            record.status
        )));
    }
    if to
        .object_name()
        .is_some_and(|n| *n != crate::placement::TenantObjectName::for_tenant(tenant))
    {
        return Err(TenancyError::InvalidInput(format!(
            "the target placement's name is not derived from tenant {tenant}; build it \
             with Placement::derive"
        )));
    }
    if *to == record.placement {
        return Err(TenancyError::InvalidInput(format!(
            "tenant {tenant} is already placed there"
        )));
    }
    Ok(())
}
