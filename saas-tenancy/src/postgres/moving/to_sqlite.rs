//! Moving a PostgreSQL tenant to a SQLite placement served by a
//! [`SqliteTenancy`] on the same catalog: the mirror of
//! `SqliteTenancy::move_tenant_to_postgres`. The PostgreSQL mover's
//! ledger, fence, notification, lock-out, undo and source purge are used
//! as they are; only the target side (a SQLite file, `sqlite/moving/
//! from_postgres.rs`) and the copy (`to_sqlite_copy.rs`) are new.

use std::time::{Duration, Instant};

use saas_core::TenantId;
use sqlx::{PgConnection, PgPool};

use super::ledger::{self, MoveRow};
use super::plan::{self, Table};
use super::run::{LocalFence, Step};
use super::to_sqlite_copy::{self as copy, Job};
use super::{MoveMethod, MoveOptions, MovePhase, MoveReport, lockout};
use crate::error::TenancyError;
use crate::placement::Placement;
use crate::postgres::PgTenancy;
use crate::postgres::tenant_lock::TenantLock;
use crate::record::TenantRecord;
use crate::sqlite::SqliteTenancy;

/// How long the copy waits for the target file's write lock beyond the
/// fence grace (other tenants of a shared file keep writing).
const SQLITE_BUSY: Duration = Duration::from_secs(5);

impl PgTenancy {
    /// Moves a PostgreSQL tenant (row, schema or database placement) to a
    /// SQLite placement — the shared file of one of `sqlite`'s clusters
    /// ([`Placement::Shared`]) or a tenant file
    /// ([`Placement::Database`], built with [`Placement::derive`]) —
    /// served from then on by `sqlite`, while it keeps being served here
    /// until the fence.
    ///
    /// **Why here.** The move is driven by the source's tenancy, as
    /// [`SqliteTenancy::move_tenant_to_postgres`] is: the source is what
    /// must be fenced, locked out and, afterwards, purged, and all of that
    /// — the move ledger `saas_tenant_moves` with its phases, the fence
    /// announced by `NOTIFY` to every following `PgTenancy`, the lock-out
    /// in the database (row policy, revoked role or revoked `CONNECT`),
    /// the abort and the source purge — is this tenancy's machinery,
    /// used here unchanged. The SQLite side only prepares and fills a
    /// placement the catalog does not name until the cut-over.
    ///
    /// Both tenancies must **share one catalog** (a [`PgCatalog`](crate::PgCatalog)
    /// given to both builders): the tenant's one record is cut over to
    /// `to`, whose cluster must be one of `sqlite`'s and none of this
    /// tenancy's. The target's tables come from `sqlite`'s migrations: a
    /// tenant file is created with the tenant migrations; the shared file
    /// gets the shared migrations, if `sqlite` has them, and must hold
    /// the tenant tables. Tables and columns are matched by name; a
    /// source column the target lacks (other than the tenant column,
    /// which a tenant file need not have), or a column of a type with no
    /// faithful SQLite form, stops the move before the fence
    /// ([`TenancyError::UnsupportedColumnType`] names table, column and
    /// type). The type mapping: booleans as 0/1, integers and floats as
    /// they are, uuids as the 16-byte blobs the SQLite backend binds,
    /// `timestamptz`/`timestamp`/`date`/`time` as the text sqlx's SQLite
    /// chrono types read back, `numeric` and `json` as their text,
    /// `bytea` as blobs.
    ///
    /// **Phases** are those of [`move_tenant`](Self::move_tenant) with
    /// [`MoveMethod::CopyUnderFence`]: prepare the target → fence (the
    /// tenant `moving`, every following process told, new handles wait,
    /// open ones get [`MoveOptions::fence_grace`] and are then cut, the
    /// source locked out) → copy: each table read through a cursor in
    /// chunks of 1,000 rows and written to SQLite in batches, one SQLite
    /// transaction per table whose row count is checked before it
    /// commits (memory holds one chunk; the write window is the copy's
    /// duration; in a shared file, other tenants' writes wait for each
    /// table's transaction, up to their busy timeout) → cut over in the catalog (`NOTIFY`) → purge the source
    /// unless kept. Each phase is recorded; a move that stops is finished
    /// by [`resume_move_to_sqlite`](Self::resume_move_to_sqlite) or, before
    /// its cut-over, undone by [`abort_move_to_sqlite`](Self::abort_move_to_sqlite).
    /// Nothing is replicated: PostgreSQL cannot subscribe a SQLite file.
    ///
    /// **Routing afterwards.** Every `PgTenancy` on the catalog refuses
    /// the tenant with [`TenancyError::PlacementNotServedHere`] (carrying
    /// the placement) — one that follows moves at once, one that does not
    /// once its cached record expires; until then its writes are refused
    /// by the source's lock-out, so none lands on the old placement.
    ///
    /// **The source.** Purged once the move is done, unless kept
    /// ([`MoveOptions::keep_source`], [`MoveOptions::keep_source_for`]):
    /// kept, it stays locked out, is listed by
    /// [`kept_sources`](Self::kept_sources) and removed by
    /// [`purge_expired_sources`](Self::purge_expired_sources) (or
    /// [`purge_moved_source`](Self::purge_moved_source)). Moving the tenant
    /// back from SQLite is [`SqliteTenancy::move_tenant_to_postgres`] (a
    /// schema target), which does not take a kept source over as
    /// [`move_tenant`](Self::move_tenant) does: purge a kept source before
    /// moving the tenant back into that placement. Queue tables
    /// ([`MoveOptions::queue_tables`], the events outbox) are not carried:
    /// a tenant with rows in one is refused until its relay has drained
    /// them. No sequence is carried either: a SQLite `INTEGER PRIMARY KEY`
    /// continues past the largest key copied (and an `AUTOINCREMENT`
    /// table's counter follows explicit keys).
    ///
    /// ```no_run
    /// # async fn run(
    /// #     pg: saas_tenancy::postgres::PgTenancy,
    /// #     sqlite: saas_tenancy::sqlite::SqliteTenancy,
    /// #     id: saas_core::TenantId,
    /// # ) -> Result<(), saas_tenancy::TenancyError> {
    /// use saas_tenancy::postgres::MoveOptions;
    /// use saas_tenancy::{ClusterName, Placement, Strategy, TenancyError};
    ///
    /// // A file of its own on the SQLite cluster "edge".
    /// let to = Placement::derive(Strategy::Database, ClusterName::new("edge")?, id);
    /// let report = pg.move_tenant_to_sqlite(id, &sqlite, to, MoveOptions::default()).await?;
    /// println!("fenced for {:?}, rows {:?}", report.fence, report.rows);
    ///
    /// // Afterwards PostgreSQL says where the tenant went.
    /// # let ctx = saas_core::TenantContext::new(id, saas_core::TenantSlug::parse("acme").unwrap());
    /// match pg.begin(&ctx).await {
    ///     Err(TenancyError::PlacementNotServedHere { placement, .. }) => {
    ///         assert_eq!(placement.strategy(), Strategy::Database); // serve it with `sqlite`
    ///     }
    ///     _ => unreachable!(),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`move_tenant`](Self::move_tenant); [`TenancyError::InvalidInput`]
    /// when the catalogs are not shared, `to`'s cluster is one of this
    /// tenancy's, or tables or columns do not match;
    /// [`TenancyError::Unsupported`] for a schema target;
    /// [`TenancyError::UnknownCluster`] when `sqlite` has no such cluster;
    /// [`TenancyError::UnsupportedColumnType`].
    #[tracing::instrument(name = "tenancy.move", skip_all, fields(tenant_id = %tenant, backend = "postgres", target = "sqlite"))]
    pub async fn move_tenant_to_sqlite(
        &self,
        tenant: TenantId,
        sqlite: &SqliteTenancy,
        to: Placement,
        options: MoveOptions,
    ) -> Result<MoveReport, TenancyError> {
        let pool = self.ledger_pool()?;
        ledger::migrate(pool).await?;
        let (lock, record) = self.lock_tenant(tenant).await?;
        let result = match self
            .start_to_sqlite(pool, &record, sqlite, to, &options)
            .await
        {
            Ok(row) => self.drive_to_sqlite(pool, row, sqlite, &options).await,
            Err(e) => Err(e),
        };
        lock.release().await;
        result
    }

    /// Finishes the tenant's unfinished move to SQLite (see
    /// [`move_tenant_to_sqlite`](Self::move_tenant_to_sqlite)) from the
    /// phase its ledger recorded last — also after its cut-over, when the
    /// catalog already places the tenant on SQLite.
    ///
    /// # Errors
    /// [`TenancyError::InvalidInput`] when the tenant has no unfinished
    /// move to SQLite; otherwise as
    /// [`move_tenant_to_sqlite`](Self::move_tenant_to_sqlite).
    pub async fn resume_move_to_sqlite(
        &self,
        tenant: TenantId,
        sqlite: &SqliteTenancy,
        options: MoveOptions,
    ) -> Result<MoveReport, TenancyError> {
        let pool = self.ledger_pool()?;
        ledger::migrate(pool).await?;
        let (lock, open) = self.lock_move(pool, tenant).await?;
        let result = match open {
            Some(row) if row.to_sqlite => self.drive_to_sqlite(pool, row, sqlite, &options).await,
            _ => Err(super::api::no_open_move(tenant)),
        };
        lock.release().await;
        result
    }

    /// Undoes the tenant's unfinished move to SQLite, if it has not cut
    /// over: the target's storage removed (its tenant file, or its rows in
    /// the shared file), the source's lock-out lifted and the tenant
    /// marked active again — served from its PostgreSQL source, whose
    /// data the move never changed.
    ///
    /// ```no_run
    /// # async fn run(
    /// #     pg: saas_tenancy::postgres::PgTenancy,
    /// #     sqlite: saas_tenancy::sqlite::SqliteTenancy,
    /// #     id: saas_core::TenantId,
    /// # ) -> Result<(), saas_tenancy::TenancyError> {
    /// use saas_tenancy::MovePhase;
    /// use saas_tenancy::postgres::MoveOptions;
    ///
    /// // After a crash: finish a move that cut over, undo one that did not.
    /// match pg.open_move(id).await? {
    ///     Some((_, phase)) if phase >= MovePhase::CutOver => {
    ///         pg.resume_move_to_sqlite(id, &sqlite, MoveOptions::default()).await?;
    ///     }
    ///     Some(_) => pg.abort_move_to_sqlite(id, &sqlite).await?,
    ///     None => {}
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`TenancyError::InvalidInput`] when the tenant has no unfinished
    /// move to SQLite, or it has cut over (finish it with
    /// [`resume_move_to_sqlite`](Self::resume_move_to_sqlite)).
    pub async fn abort_move_to_sqlite(
        &self,
        tenant: TenantId,
        sqlite: &SqliteTenancy,
    ) -> Result<(), TenancyError> {
        let pool = self.ledger_pool()?;
        ledger::migrate(pool).await?;
        let (lock, open) = self.lock_move(pool, tenant).await?;
        let result = match open {
            Some(row) if row.to_sqlite => self.abort_to_sqlite(pool, row, sqlite).await,
            _ => Err(super::api::no_open_move(tenant)),
        };
        lock.release().await;
        result
    }

    /// The tenant's lock, taken on its open move's source cluster (after
    /// the cut-over the catalog names a SQLite cluster), and the open move
    /// read again under it.
    async fn lock_move(
        &self,
        pool: &PgPool,
        tenant: TenantId,
    ) -> Result<(TenantLock, Option<MoveRow>), TenancyError> {
        let lock = match ledger::open_for(pool, tenant).await? {
            Some(open) => self.lock_on(open.from.cluster(), tenant).await?,
            None => self.lock_tenant(tenant).await?.0,
        };
        match ledger::open_for(pool, tenant).await {
            Ok(open) => Ok((lock, open)),
            Err(e) => {
                lock.release().await;
                Err(e)
            }
        }
    }

    /// Checks the request (before anything is changed: the target, the
    /// shared catalog, every column's type) and writes the ledger row.
    async fn start_to_sqlite(
        &self,
        pool: &PgPool,
        record: &TenantRecord,
        sqlite: &SqliteTenancy,
        to: Placement,
        options: &MoveOptions,
    ) -> Result<MoveRow, TenancyError> {
        let tenant = record.id;
        let open = ledger::open_for(pool, tenant).await?;
        crate::moving::check_request(record, &to, open.map(|o| (o.id, o.phase)))?;
        if self.cluster(to.cluster()).is_ok() {
            return Err(TenancyError::InvalidInput(format!(
                "cluster {} is a PostgreSQL cluster of this tenancy; a move to SQLite targets \
                 a cluster of the SQLite tenancy, named differently",
                to.cluster()
            )));
        }
        sqlite.incoming_file(&to)?;
        let seen = sqlite.catalog().get(tenant).await?;
        if seen.as_ref().map(|r| (&r.placement, r.status))
            != Some((&record.placement, record.status))
        {
            return Err(TenancyError::InvalidInput(format!(
                "tenant {tenant}'s record is not the same in both tenancies' catalogs: a move \
                 from PostgreSQL to SQLite cuts over one record, so give both builders the \
                 same catalog"
            )));
        }
        let mut src = plan::connect(self, &record.placement).await?;
        let all = self.source_tables(&mut src, &record.placement).await?;
        let (source, queues) = options.split(all);
        for table in &source {
            copy::columns(&mut src, table).await?;
        }
        check_queues(&mut src, &queues, tenant).await?;
        let row = MoveRow {
            id: uuid::Uuid::new_v4(),
            tenant,
            from: record.placement.clone(),
            to,
            method: MoveMethod::CopyUnderFence,
            staging: None,
            phase: MovePhase::Started,
            fence_lsn: None,
            keep_source: options.keep_source,
            keep_for: self.retention(options)?,
            keep_until: None,
            to_sqlite: true,
        };
        ledger::insert(pool, &row, self.inner.clock.now()).await?;
        self.stop_if_asked(&row, options)?;
        Ok(row)
    }

    /// Runs the phases after the one `row` recorded; an error becomes
    /// [`TenancyError::MoveStopped`] naming the phase reached.
    async fn drive_to_sqlite(
        &self,
        pool: &PgPool,
        mut row: MoveRow,
        sqlite: &SqliteTenancy,
        options: &MoveOptions,
    ) -> Result<MoveReport, TenancyError> {
        let mut report = MoveReport::started(
            row.id,
            row.tenant,
            row.from.clone(),
            row.to.clone(),
            row.method,
        );
        match self
            .phases_to_sqlite(pool, &mut row, sqlite, options, &mut report)
            .await
        {
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

    async fn phases_to_sqlite(
        &self,
        pool: &PgPool,
        row: &mut MoveRow,
        sqlite: &SqliteTenancy,
        options: &MoveOptions,
        report: &mut MoveReport,
    ) -> Result<(), TenancyError> {
        let (tenant, move_id) = (row.tenant, row.id);
        let mut src = plan::connect(self, &row.from).await?;
        let all = self.source_tables(&mut src, &row.from).await?;
        let (source, queues) = options.split(all.clone());
        let progress = |phase: MovePhase, ready: usize| {
            options.report(move_id, tenant, phase, (ready, source.len()), None);
        };
        let mut step = Step::new(row.phase);
        if step.due(MovePhase::Prepared) {
            progress(MovePhase::Prepared, 0);
            sqlite.prepare_incoming(tenant, &row.to).await?;
            self.plan_to_sqlite(&mut src, sqlite, &row.to, &source)
                .await?;
            check_queues(&mut src, &queues, tenant).await?;
            self.done(pool, row, MovePhase::Prepared, options, &mut step, report)
                .await?;
        }
        // From the fence to the cut-over, this process never caches the
        // tenant's record (and requests that read it before check again).
        let fenced_at = Instant::now();
        let guard = (row.phase < MovePhase::CutOver).then(|| LocalFence::raise(self, tenant));
        if step.due(MovePhase::Fenced) {
            progress(MovePhase::Fenced, 0);
            ledger::fence(pool, tenant, self.inner.clock.now()).await?;
            self.bump_fences();
            lockout::lock_out(self, &row.from, &all, tenant, options.fence_grace).await?;
            self.done(pool, row, MovePhase::Fenced, options, &mut step, report)
                .await?;
        }
        if step.due(MovePhase::Synced) {
            progress(MovePhase::Synced, 0);
            // Under the fence: nothing can be added to a queue any more.
            check_queues(&mut src, &queues, tenant).await?;
            let jobs = self
                .plan_to_sqlite(&mut src, sqlite, &row.to, &source)
                .await?;
            let mut dst = sqlite
                .open_incoming(tenant, &row.to, options.fence_grace + SQLITE_BUSY)
                .await?;
            let mut copied = Ok(());
            for (i, job) in jobs.iter().enumerate() {
                progress(MovePhase::Synced, i);
                match copy::copy_table(&mut src, &mut dst, job, tenant).await {
                    Ok(n) => {
                        report.rows.insert(job.source.name.clone(), n);
                    }
                    Err(e) => {
                        copied = Err(e);
                        break;
                    }
                }
            }
            dst.close().await?;
            copied?;
            self.done(pool, row, MovePhase::Synced, options, &mut step, report)
                .await?;
        }
        if step.due(MovePhase::CutOver) {
            progress(MovePhase::CutOver, source.len());
            self.cut_over(pool, row, fenced_at, options, &mut step, report)
                .await?;
        }
        drop(guard);
        if step.due(MovePhase::Done) {
            progress(MovePhase::Done, source.len());
            if !row.keep_source {
                self.purge_source(&mut src, row, &all).await?;
            }
            self.done(pool, row, MovePhase::Done, options, &mut step, report)
                .await?;
        }
        Ok(())
    }

    /// The copy's tables and columns, checked against the prepared target.
    async fn plan_to_sqlite(
        &self,
        src: &mut PgConnection,
        sqlite: &SqliteTenancy,
        to: &Placement,
        source: &[Table],
    ) -> Result<Vec<Job>, TenancyError> {
        let target = sqlite.incoming_tables(to).await?;
        copy::plan(src, source, &target, &self.inner.tenant_columns()).await
    }

    async fn abort_to_sqlite(
        &self,
        pool: &PgPool,
        mut row: MoveRow,
        sqlite: &SqliteTenancy,
    ) -> Result<(), TenancyError> {
        if row.phase >= MovePhase::CutOver {
            return Err(TenancyError::InvalidInput(format!(
                "the move {} of tenant {} has cut over: the tenant is served from SQLite; \
                 finish it with resume_move_to_sqlite",
                row.id, row.tenant
            )));
        }
        sqlite.drop_incoming(row.tenant, &row.to).await?;
        let mut src = plan::connect(self, &row.from).await?;
        let source = self.source_tables(&mut src, &row.from).await?;
        lockout::restore(self, &row.from, &source, row.tenant).await?;
        ledger::unfence(pool, row.tenant, self.inner.clock.now()).await?;
        self.forget_record(row.tenant);
        row.phase = MovePhase::Aborted;
        ledger::record(pool, &row, self.inner.clock.now()).await
    }
}

/// Refuses a tenant with rows in a queue table: its keys come from a
/// sequence shared by every tenant of the location, and SQLite has no
/// relay reading it — the relay drains it first.
async fn check_queues(
    src: &mut PgConnection,
    queues: &[Table],
    tenant: TenantId,
) -> Result<(), TenancyError> {
    for queue in queues {
        let n = super::copy::count(src, queue, tenant).await?;
        if n > 0 {
            return Err(TenancyError::InvalidInput(format!(
                "{} holds {n} rows of tenant {tenant} not yet relayed; a move to SQLite does \
                 not carry queue tables: let the relay drain them and move again",
                queue.qualified()
            )));
        }
    }
    Ok(())
}
