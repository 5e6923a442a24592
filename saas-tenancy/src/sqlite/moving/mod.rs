//! Moving a SQLite tenant between a shared file and a tenant file, on
//! one cluster or between clusters, while it keeps being served: see
//! [`SqliteTenancy::move_tenant`](super::SqliteTenancy::move_tenant).
//!
//! Files: `api.rs` holds the entry points, `run.rs` drives the phases
//! and undoes them, `ledger.rs` records them, `lockout.rs` makes the
//! source unwritable for the tenant in every process, `copy.rs` copies
//! under the fence; `from_postgres.rs` is the SQLite side of a move
//! from PostgreSQL (`PgTenancy::move_tenant_to_sqlite`).

mod api;
mod copy;
#[cfg(feature = "postgres")]
mod from_postgres;
mod ledger;
mod lockout;
#[cfg(feature = "postgres")]
mod pg_copy;
mod run;
#[cfg(feature = "postgres")]
mod to_postgres;

use std::fmt;
use std::time::Duration;

use crate::moving::{MovePhase, MoveProgress, MoveProgressFn};
#[cfg(feature = "postgres")]
pub(crate) use from_postgres::{Cell, Incoming, IncomingTable};

/// How long a new handle of a moving tenant waits, by default.
pub(super) const DEFAULT_MOVE_WAIT: Duration = Duration::from_secs(5);

/// How often a waiting handle reads the catalog again: other processes'
/// movers are seen there only (SQLite has no `NOTIFY`).
pub(super) const MOVE_POLL: Duration = Duration::from_millis(10);

/// Options of [`SqliteTenancy::move_tenant`](super::SqliteTenancy::move_tenant).
///
/// ```
/// use std::time::Duration;
/// use saas_tenancy::sqlite::SqliteMoveOptions;
///
/// let options = SqliteMoveOptions::default()
///     .fence_grace(Duration::from_secs(2))
///     .keep_source(true)
///     .on_progress(|p| println!("{} {}/{}", p.phase, p.tables_ready, p.tables));
/// # let _ = options;
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct SqliteMoveOptions {
    /// How long the fence waits for this process's open handles of the
    /// tenant to end before it locks the source out anyway (default 5 s);
    /// also added to the busy timeout with which the lock-out waits for a
    /// transaction holding the source file's write lock. A handle still
    /// open after it is cut: its writes are refused from then on (see
    /// [`SqliteTenancy::move_tenant`](super::SqliteTenancy::move_tenant)).
    /// A move into PostgreSQL shared tables also waits at most this long
    /// for the table lock under which it advances a shared sequence (see
    /// `SqliteTenancy::move_tenant_to_postgres`, feature `postgres`).
    pub fence_grace: Duration,
    /// Keeps the source's rows (or file) after the cut-over, locked out
    /// (default: purged).
    pub keep_source: bool,
    progress: Option<MoveProgressFn>,
    stop_after: Option<MovePhase>,
}

impl Default for SqliteMoveOptions {
    fn default() -> Self {
        Self {
            fence_grace: Duration::from_secs(5),
            keep_source: false,
            progress: None,
            stop_after: None,
        }
    }
}

impl fmt::Debug for SqliteMoveOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteMoveOptions")
            .field("fence_grace", &self.fence_grace)
            .field("keep_source", &self.keep_source)
            .field("stop_after", &self.stop_after)
            .finish_non_exhaustive()
    }
}

impl SqliteMoveOptions {
    /// Sets [`fence_grace`](Self::fence_grace) (at most an hour).
    pub fn fence_grace(mut self, grace: Duration) -> Self {
        self.fence_grace = grace;
        self
    }

    /// Sets [`keep_source`](Self::keep_source).
    pub fn keep_source(mut self, keep: bool) -> Self {
        self.keep_source = keep;
        self
    }

    /// Calls `progress` as each phase starts (and once per table copied).
    /// Keep it quick; it runs on the mover's task.
    pub fn on_progress(mut self, progress: impl Fn(&MoveProgress) + Send + Sync + 'static) -> Self {
        self.progress = Some(std::sync::Arc::new(progress));
        self
    }

    /// **For tests of recovery**: the mover stops right after recording
    /// `phase` in the ledger, as if its process died there, and returns
    /// [`TenancyError::MoveStopped`](crate::TenancyError::MoveStopped).
    /// Finish with [`SqliteTenancy::resume_move`](super::SqliteTenancy::resume_move)
    /// or undo with [`SqliteTenancy::abort_move`](super::SqliteTenancy::abort_move).
    pub fn stop_after(mut self, phase: MovePhase) -> Self {
        self.stop_after = Some(phase);
        self
    }
}
