//! Moving a tenant between placements and clusters while it keeps
//! writing: see [`PgTenancy::move_tenant`](super::PgTenancy::move_tenant).
//!
//! Files: `run.rs` drives the phases, `undo.rs` aborts and cleans up,
//! `ledger.rs` records them next to the tenant records, `plan.rs` finds
//! both sides' tables and picks the method, `replicate.rs` runs logical
//! replication, `capture.rs` copies online where replication cannot
//! (triggers record the keys written meanwhile), `copy.rs` copies, `lockout.rs` makes the
//! source unwritable for the tenant, `follow.rs` tells other processes,
//! `retention.rs` purges kept sources, `incoming.rs` lends the target
//! side of this machinery to moves from SQLite; `to_sqlite.rs` moves a
//! tenant to a SQLite placement with the same machinery,
//! `to_sqlite_copy.rs` maps and copies its rows.

mod api;
mod capture;
mod copy;
mod follow;
#[cfg(feature = "sqlite")]
mod incoming;
mod ledger;
mod lockout;
mod plan;
mod replicate;
mod retention;
mod run;
mod start;
mod target;
#[cfg(feature = "sqlite")]
mod to_sqlite;
#[cfg(feature = "sqlite")]
mod to_sqlite_copy;
mod undo;
mod walsender;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use crate::moving::{MoveMethod, MovePhase, MoveProgress, MoveProgressFn, MoveReport};
pub use follow::CHANNEL as MOVE_CHANNEL;
pub(super) use follow::Follower;
#[cfg(feature = "sqlite")]
pub(crate) use incoming::IncomingTable;
pub use retention::{KeptSource, SourcePurge};

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
    /// move stops with [`TenancyError::MoveStopped`](crate::TenancyError::MoveStopped) (resumable; default
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
    /// [`PgTenancy::purge_moved_source`](super::PgTenancy::purge_moved_source),
    /// or give it a retention with [`keep_source_for`](Self::keep_source_for).
    /// Moving the tenant back to the kept placement reuses it: see
    /// [`PgTenancy::move_tenant`](super::PgTenancy::move_tenant).
    pub keep_source: bool,
    /// How long a kept source is kept after the cut-over (default `None`:
    /// until purged by hand). Its end is recorded in the move ledger, read
    /// from the tenancy's clock
    /// ([`PgTenancyBuilder::clock`](crate::postgres::PgTenancyBuilder::clock)),
    /// and [`PgTenancy::purge_expired_sources`](super::PgTenancy::purge_expired_sources)
    /// purges the source once it has passed.
    pub keep_source_for: Option<Duration>,
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
    /// The notification channel on which the moved queue rows are
    /// announced, with the target table's schema as payload, when the copy
    /// commits (default `saas_events_outbox`, the `saas-events` relays'
    /// wake-up channel `saas_events::postgres::WAKE_CHANNEL`): a relay
    /// that wakes on commit visits only announced or recently busy
    /// outboxes, and nothing else announces rows copied into an outbox
    /// that was quiet — they would wait for its next full sweep. `None`
    /// announces nothing.
    pub queue_wake_channel: Option<String>,
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
            keep_source_for: None,
            queue_tables: vec!["saas_events_outbox".to_owned()],
            queue_wake_channel: Some("saas_events_outbox".to_owned()),
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
            .field("keep_source_for", &self.keep_source_for)
            .field("queue_tables", &self.queue_tables)
            .field("queue_wake_channel", &self.queue_wake_channel)
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

    /// Sets [`keep_source`](Self::keep_source) (kept until purged by hand
    /// unless [`keep_source_for`](Self::keep_source_for) gives a retention).
    pub fn keep_source(mut self, keep: bool) -> Self {
        self.keep_source = keep;
        self
    }

    /// Keeps the source for `retention` after the cut-over: sets
    /// [`keep_source`](Self::keep_source) and
    /// [`keep_source_for`](Self::keep_source_for). Within it the tenant can
    /// be moved back into the kept placement; after it,
    /// [`PgTenancy::purge_expired_sources`](super::PgTenancy::purge_expired_sources)
    /// removes it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use saas_tenancy::postgres::MoveOptions;
    ///
    /// let options = MoveOptions::default().keep_source_for(Duration::from_secs(7 * 86_400));
    /// assert!(options.keep_source);
    /// assert_eq!(options.keep_source_for, Some(Duration::from_secs(7 * 86_400)));
    /// ```
    pub fn keep_source_for(mut self, retention: Duration) -> Self {
        self.keep_source = true;
        self.keep_source_for = Some(retention);
        self
    }

    /// Sets [`queue_tables`](Self::queue_tables) (bare table names).
    pub fn queue_tables<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.queue_tables = names.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`queue_wake_channel`](Self::queue_wake_channel).
    pub fn queue_wake_channel(mut self, channel: Option<impl Into<String>>) -> Self {
        self.queue_wake_channel = channel.map(Into::into);
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
    /// [`TenancyError::MoveStopped`](crate::TenancyError::MoveStopped). Finish with
    /// [`PgTenancy::resume_move`](super::PgTenancy::resume_move) or undo
    /// with [`PgTenancy::abort_move`](super::PgTenancy::abort_move).
    pub fn stop_after(mut self, phase: MovePhase) -> Self {
        self.stop_after = Some(phase);
        self
    }
}

/// `now + wait`, or a year from now for a wait past what an `Instant`
/// holds (the options' durations are public fields: any value arrives).
pub(super) fn deadline(wait: Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(wait)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

impl MoveOptions {
    /// Tells the progress callback, if there is one, where `move_id` is.
    pub(super) fn report(
        &self,
        move_id: uuid::Uuid,
        tenant: saas_core::TenantId,
        phase: MovePhase,
        (tables_ready, tables): (usize, usize),
        lag_bytes: Option<u64>,
    ) {
        if let Some(f) = &self.progress {
            f(&MoveProgress {
                move_id,
                tenant,
                phase,
                tables_ready,
                tables,
                lag_bytes,
            });
        }
    }
}
