//! The mover: each phase idempotent, the ledger written as each ends, so
//! a run that stops anywhere is finished by `resume_move` from the phase
//! it recorded last — and the undoing of a move before its cut-over.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use saas_core::TenantStatus;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{Connection, SqliteConnection};

use super::copy::{self, Pair};
use super::ledger::{self, MoveRow};
use super::{SqliteMoveOptions, lockout};
use crate::error::TenancyError;
use crate::moving::{MoveMethod, MovePhase, MoveProgress, MoveReport};
use crate::record::TenantRecord;
use crate::sqlite::SqliteTenancy;
use crate::sqlite::transfer::FileTable;

/// Opens a connection on an existing file, waiting `busy` for its locks.
pub(super) async fn connect(file: &Path, busy: Duration) -> Result<SqliteConnection, TenancyError> {
    let options = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(false)
        .busy_timeout(busy);
    Ok(SqliteConnection::connect_with(&options).await?)
}

pub(super) const BUSY: Duration = Duration::from_secs(5);

/// Removes a tenant file and its WAL and shared-memory files.
pub(super) fn remove_file(file: &Path) -> Result<(), TenancyError> {
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", file.display()));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(TenancyError::InvalidInput(format!(
                    "cannot remove {}: {e}",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// Where a move's rows go. The phases are the same for both; preparing
/// the target, copying into it and announcing the cut-over differ.
#[derive(Clone)]
pub(super) enum Destination {
    /// Another placement of this tenancy: the shared file or a tenant
    /// file, on this cluster or another.
    Sqlite,
    /// A placement (row, schema or database) served by a PostgreSQL
    /// tenancy on the same catalog (see `move_tenant_to_postgres`).
    #[cfg(feature = "postgres")]
    Postgres(crate::postgres::PgTenancy),
}

/// A move's progress callback, as the phases call it: phase, tables
/// done, tables.
pub(super) type Progress<'a> = &'a (dyn Fn(MovePhase, usize, usize) + Sync);

impl SqliteTenancy {
    /// Runs the phases after the one `row` recorded; an error becomes
    /// [`TenancyError::MoveStopped`] naming the phase reached.
    pub(super) async fn drive_move(
        &self,
        mut row: MoveRow,
        to: &Destination,
        options: &SqliteMoveOptions,
    ) -> Result<MoveReport, TenancyError> {
        let mut report = MoveReport::started(
            row.id,
            row.tenant,
            row.from.clone(),
            row.to.clone(),
            MoveMethod::CopyUnderFence,
        );
        match self.move_phases(&mut row, to, options, &mut report).await {
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

    async fn move_phases(
        &self,
        row: &mut MoveRow,
        to: &Destination,
        options: &SqliteMoveOptions,
        report: &mut MoveReport,
    ) -> Result<(), TenancyError> {
        let (tenant, move_id) = (row.tenant, row.id);
        let (source_file, source_shared) = self.placement_file(&row.from)?;
        let progress = |phase: MovePhase, ready: usize, tables: usize| {
            if let Some(f) = &options.progress {
                f(&MoveProgress {
                    move_id,
                    tenant,
                    phase,
                    tables_ready: ready,
                    tables,
                    lag_bytes: None,
                });
            }
        };
        let mut step = Step::new(row.phase);
        if step.due(MovePhase::Prepared) {
            progress(MovePhase::Prepared, 0, 0);
            match to {
                Destination::Sqlite => {
                    let (target_file, target_shared) = self.placement_file(&row.to)?;
                    self.prepare_target(row, &target_file, target_shared)
                        .await?;
                }
                #[cfg(feature = "postgres")]
                Destination::Postgres(pg) => {
                    pg.prepare_incoming(row.tenant, &row.to).await?;
                }
            }
            self.move_done(row, MovePhase::Prepared, options, &mut step, report)
                .await?;
        }
        let fenced_at = Instant::now();
        // This process's open handles: `fence_grace` to end; new ones wait
        // on the gate until the cut-over (other processes: on the status).
        let mut gate = None;
        if step.due(MovePhase::Fenced) {
            progress(MovePhase::Fenced, 0, 0);
            gate = self
                .raise_fence(row, &source_file, source_shared, options)
                .await?;
            self.move_done(row, MovePhase::Fenced, options, &mut step, report)
                .await?;
        }
        if step.due(MovePhase::Synced) {
            let mut src = connect(&source_file, BUSY).await?;
            let copied = match to {
                Destination::Sqlite => {
                    self.copy_to_file(&mut src, row, source_shared, &progress)
                        .await
                }
                #[cfg(feature = "postgres")]
                Destination::Postgres(pg) => {
                    self.copy_to_postgres(&mut src, pg, row, options, &progress)
                        .await
                }
            };
            src.close().await?;
            report.rows = copied?;
            self.move_done(row, MovePhase::Synced, options, &mut step, report)
                .await?;
        }
        if step.due(MovePhase::CutOver) {
            progress(MovePhase::CutOver, report.rows.len(), report.rows.len());
            // A PostgreSQL target opens to the runtime role just before
            // the catalog names it (sealed since it was prepared).
            #[cfg(feature = "postgres")]
            if let Destination::Postgres(pg) = to {
                pg.open_incoming(tenant, &row.to).await?;
            }
            self.inner
                .catalog
                .cut_over(tenant, &row.from, &row.to)
                .await?;
            #[cfg(feature = "postgres")]
            if let Destination::Postgres(pg) = to {
                self.announce_cut_over(pg, tenant).await?;
            }
            report.fence = fenced_at.elapsed();
            drop(gate.take());
            // This process's pool on the source hands out nothing more.
            self.inner
                .registry
                .close_within(tenant, Duration::ZERO)
                .await;
            self.move_done(row, MovePhase::CutOver, options, &mut step, report)
                .await?;
        }
        drop(gate);
        if step.due(MovePhase::Done) {
            progress(MovePhase::Done, report.rows.len(), report.rows.len());
            if !row.keep_source {
                self.purge_source(row, &source_file, source_shared).await?;
            }
            self.move_done(row, MovePhase::Done, options, &mut step, report)
                .await?;
        }
        Ok(())
    }

    /// Copies the tenant's tables from `src` into the target file (shared
    /// or the tenant's), attached to `src`, and counts them.
    async fn copy_to_file(
        &self,
        src: &mut SqliteConnection,
        row: &MoveRow,
        source_shared: bool,
        progress: Progress<'_>,
    ) -> Result<BTreeMap<String, u64>, TenancyError> {
        let columns = self.inner.tenant_columns();
        let (target_file, target_shared) = self.placement_file(&row.to)?;
        copy::attach(src, &target_file).await?;
        let source = copy::schema_tables(src, "main", &columns).await?;
        let target = copy::target_tables(src, &columns).await?;
        let pairs = self.pairs(&source, source_shared, &target, target_shared)?;
        progress(MovePhase::Synced, 0, pairs.len());
        copy::copy(src, &pairs, row.tenant).await
    }

    /// The fence: the tenant `moving` in the catalog, this process's open
    /// handles given the grace (the gate, returned, held until the
    /// cut-over), then the source locked out.
    pub(super) async fn raise_fence(
        &self,
        row: &MoveRow,
        source_file: &Path,
        source_shared: bool,
        options: &SqliteMoveOptions,
    ) -> Result<Option<tokio::sync::OwnedRwLockWriteGuard<()>>, TenancyError> {
        let tenant = row.tenant;
        let columns = self.inner.tenant_columns();
        self.inner
            .catalog
            .set_status(tenant, TenantStatus::Moving)
            .await?;
        let gate = self
            .inner
            .backend
            .gates
            .close(tenant, options.fence_grace)
            .await;
        if gate.is_none() {
            tracing::warn!(
                tenant_id = %tenant,
                grace = ?options.fence_grace,
                "scoped handles still open after the fence grace; their writes are refused \
                 from the lock-out on"
            );
        }
        let mut src = connect(source_file, BUSY + options.fence_grace).await?;
        let tables = copy::schema_tables(&mut src, "main", &columns).await?;
        let locked = if source_shared {
            lockout::lock_out_shared(&mut src, &tables, tenant, row.id).await
        } else {
            lockout::lock_out_file(&mut src, &tables).await
        };
        src.close().await?;
        locked?;
        Ok(gate)
    }

    /// A tenant file created and migrated, or the tenant's fence lifted
    /// from a target shared file (a move back).
    async fn prepare_target(
        &self,
        row: &MoveRow,
        file: &Path,
        shared: bool,
    ) -> Result<(), TenancyError> {
        if shared {
            let mut dst = connect(file, BUSY).await?;
            let lifted = lockout::lift_shared(&mut dst, row.tenant).await;
            dst.close().await?;
            return lifted;
        }
        if file.exists() {
            let mut dst = connect(file, BUSY).await?;
            let kept = lockout::file_locked_out(&mut dst).await;
            dst.close().await?;
            if kept? {
                return Err(TenancyError::InvalidInput(format!(
                    "{} is the kept source of an earlier move of tenant {}; remove it (and its \
                     -wal and -shm files) before moving the tenant back there",
                    file.display(),
                    row.tenant
                )));
            }
        }
        let Some(migrator) = &self.inner.tenant_migrator else {
            return Err(TenancyError::InvalidInput(
                "moving a tenant into a file of its own needs the tenant migrations \
                 (SqliteTenancyBuilder::tenant_migrations) to create its tables"
                    .to_owned(),
            ));
        };
        let options = SqliteConnectOptions::new()
            .filename(file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY);
        let mut conn = SqliteConnection::connect_with(&options).await?;
        let migrated = migrator.run_direct(None, &mut conn, false).await;
        conn.close().await?;
        migrated.map_err(|e| TenancyError::InvalidInput(format!("tenant migration failed: {e}")))
    }

    /// Which source table goes to which target table, by name: a declared
    /// table is `notes` in a tenant file and its physical table
    /// (`notes_rows`) in a shared file; other tables keep their name.
    fn pairs<'a>(
        &self,
        source: &'a [FileTable],
        source_shared: bool,
        target: &'a [FileTable],
        target_shared: bool,
    ) -> Result<Vec<Pair<'a>>, TenancyError> {
        let logical_of = |name: &str| {
            self.inner
                .tables
                .iter()
                .find(|t| t.physical().is_ok_and(|p| p.as_str() == name))
                .map_or_else(|| name.to_owned(), |t| t.table.as_str().to_owned())
        };
        let physical_of = |name: &str| {
            self.inner
                .tables
                .iter()
                .find(|t| t.table.as_str() == name)
                .and_then(|t| t.physical().ok())
                .map_or_else(|| name.to_owned(), |p| p.as_str().to_owned())
        };
        let mut pairs = Vec::new();
        for table in source {
            if source_shared && table.tenant_column.is_none() {
                continue;
            }
            let logical = if source_shared {
                logical_of(&table.name)
            } else {
                table.name.clone()
            };
            let name = if target_shared {
                physical_of(&logical)
            } else {
                logical.clone()
            };
            let Some(found) = target.iter().find(|t| t.name == name) else {
                return Err(TenancyError::InvalidInput(format!(
                    "the target has no table {name} for the source's {}: migrate both sides \
                     to the same version; nothing was moved",
                    table.name
                )));
            };
            if target_shared && found.tenant_column.is_none() {
                return Err(TenancyError::InvalidInput(format!(
                    "the target shared file's table {name} has no tenant column: every tenant \
                     would see the rows; nothing was moved"
                )));
            }
            pairs.push(Pair {
                source: table,
                target: found,
                logical,
            });
        }
        Ok(pairs)
    }

    /// Removes the source's data after the cut-over: the tenant's rows of
    /// a shared file (its fence row stays), or its tenant file.
    pub(super) async fn purge_source(
        &self,
        row: &MoveRow,
        file: &Path,
        shared: bool,
    ) -> Result<(), TenancyError> {
        if !shared {
            return remove_file(file);
        }
        let mut src = connect(file, BUSY).await?;
        let columns = self.inner.tenant_columns();
        let purged = async {
            let tables = copy::schema_tables(&mut src, "main", &columns).await?;
            lockout::purge_shared(&mut src, &tables, row.tenant).await
        }
        .await;
        src.close().await?;
        purged
    }

    /// Records `phase` as done, times it, and stops if the options ask.
    pub(super) async fn move_done(
        &self,
        row: &mut MoveRow,
        phase: MovePhase,
        options: &SqliteMoveOptions,
        step: &mut Step,
        report: &mut MoveReport,
    ) -> Result<(), TenancyError> {
        row.phase = phase;
        ledger::record(row, self.inner.clock.now()).await?;
        step.finish(phase, report);
        if options.stop_after == Some(phase) {
            return Err(TenancyError::MoveStopped {
                move_id: row.id,
                tenant: row.tenant,
                phase: phase.to_string(),
                detail: "stopped as SqliteMoveOptions::stop_after asked".to_owned(),
            });
        }
        Ok(())
    }

    /// Undoes `row` (see `abort_move`).
    pub(super) async fn abort_row(
        &self,
        mut row: MoveRow,
        record: &TenantRecord,
    ) -> Result<(), TenancyError> {
        if row.phase >= MovePhase::CutOver || record.placement == row.to {
            return Err(TenancyError::InvalidInput(format!(
                "the move {} of tenant {} has cut over: the tenant is served from its target; \
                 finish it with resume_move, then move the tenant back",
                row.id, row.tenant
            )));
        }
        let tenant = row.tenant;
        let (source_file, source_shared) = self.placement_file(&row.from)?;
        let (target_file, target_shared) = self.placement_file(&row.to)?;
        let columns = self.inner.tenant_columns();
        // The target: its copy of the tenant.
        if target_shared {
            let mut src = connect(&source_file, BUSY).await?;
            let cleared = async {
                copy::attach(&mut src, &target_file).await?;
                let tables = copy::target_tables(&mut src, &columns).await?;
                copy::clear_target(&mut src, &tables, tenant).await
            }
            .await;
            src.close().await?;
            cleared?;
        } else if target_file.exists() {
            let mut dst = connect(&target_file, BUSY).await?;
            let kept = lockout::file_locked_out(&mut dst).await;
            dst.close().await?;
            // Not ours: the kept source of an earlier move (prepare refused).
            if !kept? {
                remove_file(&target_file)?;
            }
        }
        // The source serves again.
        let mut src = connect(&source_file, BUSY).await?;
        let lifted = async {
            if source_shared {
                lockout::lift_shared(&mut src, tenant).await
            } else {
                let tables = copy::schema_tables(&mut src, "main", &columns).await?;
                lockout::lift_file(&mut src, &tables).await
            }
        }
        .await;
        src.close().await?;
        lifted?;
        if record.status == TenantStatus::Moving {
            self.inner
                .catalog
                .set_status(tenant, TenantStatus::Active)
                .await?;
        }
        row.phase = MovePhase::Aborted;
        ledger::record(&row, self.inner.clock.now()).await
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
