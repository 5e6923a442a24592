//! The mover: each phase idempotent, the ledger written as each ends, so
//! a run that stops anywhere is finished by `resume_move` from the phase
//! it recorded last.

use std::time::{Duration, Instant};

use saas_core::TenantId;
use sqlx::PgPool;

use super::ledger::{self, MoveRow};
use super::plan;
use super::start::InitialCopy;
use super::{MoveMethod, MoveOptions, MovePhase, MoveReport, capture, copy, lockout, replicate};
use crate::error::TenancyError;
use crate::postgres::PgTenancy;

impl PgTenancy {
    /// Runs the phases after the one `row` recorded; an error becomes
    /// [`TenancyError::MoveStopped`] naming the phase reached.
    pub(super) async fn drive(
        &self,
        pool: &PgPool,
        mut row: MoveRow,
        options: &MoveOptions,
    ) -> Result<MoveReport, TenancyError> {
        let mut report = MoveReport::started(
            row.id,
            row.tenant,
            row.from.clone(),
            row.to.clone(),
            row.method,
        );
        match self.phases(pool, &mut row, options, &mut report).await {
            Ok(()) => Ok(report),
            Err(e @ TenancyError::MoveStopped { .. }) => Err(e),
            Err(e) => Err(TenancyError::MoveStopped {
                move_id: row.id,
                tenant: row.tenant,
                phase: row.phase.to_string(),
                detail: e.to_string(),
            }),
        }
    }

    async fn phases(
        &self,
        pool: &PgPool,
        row: &mut MoveRow,
        options: &MoveOptions,
        report: &mut MoveReport,
    ) -> Result<(), TenancyError> {
        let (tenant, move_id) = (row.tenant, row.id);
        let mut src = plan::connect(self, &row.from).await?;
        let all = self.source_tables(&mut src, &row.from).await?;
        let (source, queues) = options.split(all.clone());
        let progress = |phase: MovePhase, ready: usize, lag: Option<u64>| {
            options.report(move_id, tenant, phase, (ready, source.len()), lag);
        };
        let mut step = Step::new(row.phase);
        if step.due(MovePhase::Prepared) {
            progress(MovePhase::Prepared, 0, None);
            self.prepare_target(tenant, &row.to, &all).await?;
            self.done(pool, row, MovePhase::Prepared, options, &mut step, report)
                .await?;
        }
        let name = replicate::name(row.id);
        if row.method == MoveMethod::LogicalReplication && step.due(MovePhase::Copying) {
            let copy_started = Instant::now();
            let mut dst = plan::connect(self, &row.to).await?;
            let to_shared = plan::private_schema(&row.to).is_none();
            replicate::publish(&mut src, &name, &source, tenant, to_shared).await?;
            if let (Some(staging), Some(own)) = (&row.staging, plan::private_schema(&row.to)) {
                replicate::rename_schema(&mut dst, &own, staging).await?;
            }
            // The subscription is made once the rows are copied (or to
            // copy them): a run that finds it resumes the catch-up.
            if !replicate::exists(&mut dst, &name).await? {
                match self
                    .start_replication(&mut src, &mut dst, row, &source, options)
                    .await?
                {
                    InitialCopy::ByMover(at) => report.initial_copy = Some(at - copy_started),
                    InitialCopy::ByTableSync(why) => report.copied_by_table_sync = Some(why),
                }
            }
            let deadline = super::deadline(options.catch_up_timeout);
            loop {
                let tables = replicate::table_states(&mut dst, &name).await?;
                let (ready, all) = (tables.ready, tables.all);
                // The table sync's copy, when it ran in this run (a run
                // that resumed a subscription does not time it).
                let syncing = report.copied_by_table_sync.is_some();
                if syncing && report.initial_copy.is_none() && all > 0 && tables.copied == all {
                    report.initial_copy = Some(copy_started.elapsed());
                }
                let lag = replicate::lag(&mut src, &name).await?;
                progress(MovePhase::Copying, ready, lag);
                let caught_up = lag.is_some_and(|l| l <= options.max_lag_bytes);
                if all > 0 && ready == all && tables.streaming && caught_up {
                    break;
                }
                if Instant::now() >= deadline {
                    let worker = match tables.streaming {
                        true => "",
                        false => " (its apply worker has not started streaming)",
                    };
                    return Err(TenancyError::Timeout(format!(
                        "replication copied {ready} of {all} tables and lags {lag:?} bytes \
                         after {:?}{worker}",
                        options.catch_up_timeout
                    )));
                }
                // Often: the loop decides when the fence may start.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // What was written until now is applied before the fence, not
            // under it: the lag above can be megabytes of the copy's time.
            let now = replicate::current_lsn(&mut src).await?;
            let wait = options.catch_up_timeout;
            if !replicate::wait_for_lsn(&mut src, &mut dst, &name, &now, wait).await? {
                return Err(TenancyError::Timeout(format!(
                    "replication did not apply the source's changes up to {now} within {:?}",
                    options.catch_up_timeout
                )));
            }
            // Vacuumed now, outside the fence, the target's fresh rows are
            // counted under it from their index.
            let schema = row
                .staging
                .clone()
                .or_else(|| plan::private_schema(&row.to));
            let tables = self.target_tables(&mut dst, schema.as_deref()).await?;
            let copied = replicate::published(&source, plan::private_schema(&row.to).is_none());
            let pairs = copy::pair_same_schema(&copied, &tables)?;
            let targets: Vec<&plan::Table> = pairs.iter().map(|(_, t)| *t).collect();
            copy::vacuum(&mut dst, &targets).await;
            self.done(pool, row, MovePhase::Copying, options, &mut step, report)
                .await?;
        }
        if row.method == MoveMethod::CapturedCopy && step.due(MovePhase::Copying) {
            progress(MovePhase::Copying, 0, None);
            let copy_started = Instant::now();
            let mut dst = plan::connect(self, &row.to).await?;
            let own = plan::private_schema(&row.to);
            let target = self.target_tables(&mut dst, own.as_deref()).await?;
            let pairs = copy::pair(&source, &target)?;
            let tables = capture::prepare(&mut src, &mut dst, &pairs).await?;
            capture::install(&mut src, row.id, &tables, tenant, options.catch_up_timeout).await?;
            // A run stopped during the copy left part of it: start over
            // (the keys recorded since are replayed all the same).
            copy::clear(&mut dst, &target, tenant).await?;
            copy::copy(&mut src, &mut dst, &pairs, tenant).await?;
            report.initial_copy = Some(copy_started.elapsed());
            progress(MovePhase::Copying, source.len(), None);
            let deadline = super::deadline(options.catch_up_timeout);
            capture::drain(
                &mut src,
                &mut dst,
                row.id,
                &tables,
                tenant,
                capture::SETTLED,
                deadline,
            )
            .await?;
            let targets: Vec<&plan::Table> = pairs.iter().map(|(_, t)| *t).collect();
            copy::vacuum(&mut dst, &targets).await;
            self.done(pool, row, MovePhase::Copying, options, &mut step, report)
                .await?;
        }
        // From the fence to the cut-over, this process never caches the
        // tenant's record (and requests that read it before check again).
        let fenced_at = Instant::now();
        let _guard = (row.phase < MovePhase::CutOver).then(|| LocalFence::raise(self, tenant));
        if step.due(MovePhase::Fenced) {
            progress(MovePhase::Fenced, source.len(), None);
            if row.method == MoveMethod::LogicalReplication {
                report.lag_at_fence_bytes = replicate::lag(&mut src, &name).await?;
            }
            ledger::fence(pool, tenant, self.inner.clock.now()).await?;
            self.bump_fences();
            lockout::lock_out(self, &row.from, &all, tenant, options.fence_grace).await?;
            row.fence_lsn = Some(replicate::current_lsn(&mut src).await?);
            self.done(pool, row, MovePhase::Fenced, options, &mut step, report)
                .await?;
        }
        if step.due(MovePhase::Synced) {
            progress(MovePhase::Synced, source.len(), None);
            report.rows = self.sync(&mut src, row, &source, options).await?;
            report.queued = self
                .move_queues(
                    &mut src,
                    row,
                    &queues,
                    options.queue_wake_channel.as_deref(),
                )
                .await?;
            self.done(pool, row, MovePhase::Synced, options, &mut step, report)
                .await?;
        }
        if step.due(MovePhase::CutOver) {
            progress(MovePhase::CutOver, source.len(), None);
            // The target opens to the runtime role (a kept source the
            // tenant comes back to: its lock-out lifted) just before the
            // catalog names it; the tenant is fenced meanwhile.
            let mut dst = plan::connect(self, &row.to).await?;
            let own = plan::private_schema(&row.to);
            let target = self.target_tables(&mut dst, own.as_deref()).await?;
            drop(dst);
            lockout::restore(self, &row.to, &target, tenant).await?;
            self.cut_over(pool, row, fenced_at, options, &mut step, report)
                .await?;
        }
        drop(_guard);
        if step.due(MovePhase::Done) {
            progress(MovePhase::Done, source.len(), None);
            self.clean_up(&mut src, row, &all).await?;
            self.done(pool, row, MovePhase::Done, options, &mut step, report)
                .await?;
        }
        Ok(())
    }

    /// Flips the catalog to the target (every process hears it), forgets
    /// the cached record, and records the cut-over: the end of the fence
    /// that went up at `fenced_at`.
    pub(super) async fn cut_over(
        &self,
        pool: &PgPool,
        row: &mut MoveRow,
        fenced_at: Instant,
        options: &MoveOptions,
        step: &mut Step,
        report: &mut MoveReport,
    ) -> Result<(), TenancyError> {
        ledger::cut_over(pool, row, self.inner.clock.now()).await?;
        self.forget_record(row.tenant);
        self.bump_fences();
        report.fence = fenced_at.elapsed();
        row.phase = MovePhase::CutOver;
        step.finish(MovePhase::CutOver, report);
        self.stop_if_asked(row, options)
    }

    /// Records `phase` as done, times it, and stops if the options ask.
    pub(super) async fn done(
        &self,
        pool: &PgPool,
        row: &mut MoveRow,
        phase: MovePhase,
        options: &MoveOptions,
        step: &mut Step,
        report: &mut MoveReport,
    ) -> Result<(), TenancyError> {
        row.phase = phase;
        ledger::record(pool, row, self.inner.clock.now()).await?;
        step.finish(phase, report);
        self.stop_if_asked(row, options)
    }

    pub(super) fn stop_if_asked(
        &self,
        row: &MoveRow,
        options: &MoveOptions,
    ) -> Result<(), TenancyError> {
        if options.stop_after == Some(row.phase) {
            return Err(TenancyError::MoveStopped {
                move_id: row.id,
                tenant: row.tenant,
                phase: row.phase.to_string(),
                detail: "stopped as MoveOptions::stop_after asked".to_owned(),
            });
        }
        Ok(())
    }

    pub(super) fn bump_fences(&self) {
        self.inner
            .backend
            .fences
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Which phases are still to run, and how long each took.
pub(super) struct Step {
    last: MovePhase,
    started: Instant,
}

impl Step {
    pub(super) fn new(last: MovePhase) -> Self {
        Self {
            last,
            started: Instant::now(),
        }
    }

    pub(super) fn due(&self, phase: MovePhase) -> bool {
        self.last < phase
    }

    pub(super) fn finish(&mut self, phase: MovePhase, report: &mut MoveReport) {
        report.phases.push((phase, self.started.elapsed()));
        self.last = phase;
        self.started = Instant::now();
    }
}

/// The move's fence in this process: the tenant's record is not cached
/// until the cut-over (lowered on drop, also on error).
pub(super) struct LocalFence<'a> {
    tenancy: &'a PgTenancy,
    tenant: TenantId,
}

impl<'a> LocalFence<'a> {
    pub(super) fn raise(tenancy: &'a PgTenancy, tenant: TenantId) -> Self {
        tenancy.inner.backend.records.fence(tenant);
        tenancy.bump_fences();
        Self { tenancy, tenant }
    }
}

impl Drop for LocalFence<'_> {
    fn drop(&mut self) {
        self.tenancy.inner.backend.records.unfence(self.tenant);
    }
}
