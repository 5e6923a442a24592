//! The move operations' entry points: checks, the ledger row, and the
//! resumption or undoing of an unfinished move.

use std::path::{Path, PathBuf};

use saas_core::TenantId;

use super::SqliteMoveOptions;
use super::ledger::{self, MoveRow};
use super::run::Destination;
use crate::error::TenancyError;
use crate::moving::{MovePhase, MoveReport};
use crate::placement::Placement;
use crate::record::TenantRecord;
use crate::sqlite::SqliteTenancy;
use crate::sqlite::lock::TenantGuard;

impl SqliteTenancy {
    /// Moves a tenant between a shared file (row placement) and a tenant
    /// file of its own (database placement), on its cluster or onto
    /// another configured SQLite cluster, while it keeps being served.
    ///
    /// Phases, each recorded in the move ledger
    /// (`saas_tenant_moves.sqlite` in the source cluster's tenant
    /// directory) as it ends: prepare the target (a tenant file created
    /// and migrated with the tenant migrations, or nothing of the tenant
    /// left in the target shared file) → fence → copy and verify → cut
    /// over in the catalog → purge the source (unless
    /// [`keep_source`](SqliteMoveOptions::keep_source)). A move that stops
    /// anywhere — an error, a crash, [`SqliteMoveOptions::stop_after`] —
    /// is finished by [`resume_move`](Self::resume_move) or, before its
    /// cut-over, undone by [`abort_move`](Self::abort_move), which leaves
    /// the source serving with its data untouched.
    ///
    /// **The fence.** SQLite has no logical replication, so the rows are
    /// copied while the tenant is fenced
    /// ([`MoveMethod::CopyUnderFence`](crate::MoveMethod::CopyUnderFence)):
    /// the write window is the copy's duration, proportional to the
    /// tenant's size, plus the catalog and ledger writes around it. In the
    /// tests, with eight writers and about 3,000 rows on a busy two-core
    /// machine, it lasted 50–250 ms (this run's figure is
    /// [`MoveReport::fence`]; it includes the wait for this process's open
    /// handles, up to [`fence_grace`](SqliteMoveOptions::fence_grace)).
    /// - The tenant is marked `moving` in the catalog. New scoped handles
    ///   (`acquire`, `begin`, `begin_immediate`), in every process sharing
    ///   the catalog, wait — up to
    ///   [`SqliteTenancyBuilder::move_wait`](crate::sqlite::SqliteTenancyBuilder::move_wait),
    ///   then [`TenancyError::TenantMoving`] — and run on the new placement
    ///   once the catalog names it (other processes poll the catalog
    ///   every 10 ms while they wait).
    /// - This process's open handles get
    ///   [`fence_grace`](SqliteMoveOptions::fence_grace) to end. Then the
    ///   source is locked out durably, for every connection of every
    ///   process, at its next statement (see below): a handle still open
    ///   is *cut* — its later writes fail, what it committed before is
    ///   moved. A transaction holding the source file's write lock is
    ///   waited for (busy timeout: 5 s + the grace); if it is still open
    ///   the move stops, resumable.
    /// - **Lock-out**: in a shared file, a row in `saas_tenant_fences` and
    ///   `BEFORE INSERT/UPDATE/DELETE` triggers on each table with a
    ///   tenant column refuse the tenant's rows — through the views and
    ///   through the physical tables; a tenant file gets triggers refusing
    ///   every write. Triggers and the fence row are part of the file, so
    ///   a process with a pool or a connection opened before the move
    ///   (whose record it read before the cut-over) cannot write to the
    ///   old placement after it. The fence row stays after the cut-over;
    ///   moving the tenant back lifts it.
    /// - A pool opened on the old placement is never used after the
    ///   cut-over: each lease compares the placement the pool was opened
    ///   on with the record read for the handle.
    ///
    /// The copy attaches the target to a connection on the source and
    /// runs one `INSERT … SELECT` per table (streamed by SQLite; memory
    /// does not grow with the tenant), columns matched by name, the tenant
    /// column filled in when the target has one the source lacks; then the
    /// row counts of both sides are compared per table.
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use saas_core::{TenantContext, TenantSlug};
    /// use saas_tenancy::sqlite::{SqliteClusterConfig, SqliteMoveOptions, SqliteTenancy};
    /// use saas_tenancy::{ClusterName, NewTenant, Placement, SqliteCatalog, Strategy};
    /// use sqlx::migrate::{Migration, MigrationType, Migrator};
    /// use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
    /// use sqlx::SqlSafeStr;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let dir = std::env::temp_dir().join(uuid::Uuid::new_v4().to_string());
    /// std::fs::create_dir_all(&dir)?;
    /// let file = |name: &str| {
    ///     SqliteConnectOptions::new().filename(dir.join(name)).create_if_missing(true)
    /// };
    /// let shared = SqlitePool::connect_with(file("shared.sqlite")).await?;
    /// sqlx::raw_sql(
    ///     "CREATE TABLE notes_rows (tenant_id BLOB NOT NULL, id INTEGER NOT NULL, \
    ///      body TEXT NOT NULL, PRIMARY KEY (tenant_id, id))",
    /// )
    /// .execute(&shared)
    /// .await?;
    /// shared.close().await;
    /// // A tenant file gets `notes` from the tenant migrations.
    /// let notes = Migration::new(
    ///     1,
    ///     "notes".into(),
    ///     MigrationType::Simple,
    ///     "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)".into_sql_str(),
    ///     false,
    /// );
    /// let catalog = SqliteCatalog::new(SqlitePool::connect_with(file("catalog.sqlite")).await?);
    /// catalog.migrate().await?;
    /// let local = ClusterName::new("local")?;
    /// let tenancy = SqliteTenancy::builder(Arc::new(catalog))
    ///     .cluster(SqliteClusterConfig::new(local.clone(), dir.join("shared.sqlite"), &dir))
    ///     .tenant_tables(["notes"])
    ///     .tenant_migrations(Migrator::with_migrations(vec![notes]))
    ///     .build()?;
    /// tenancy.setup().await?;
    ///
    /// let new = NewTenant::new(TenantSlug::parse("acme")?, "Acme", Strategy::Shared, local.clone())?;
    /// let record = tenancy.provision(new).await?;
    /// let acme = TenantContext::new(record.id, record.slug);
    /// let mut conn = tenancy.acquire(&acme).await?;
    /// sqlx::query("INSERT INTO notes (id, body) VALUES (1, 'kept')").execute(&mut *conn).await?;
    /// drop(conn);
    ///
    /// // Shared file → a file of its own.
    /// let to = Placement::derive(Strategy::Database, local, acme.tenant_id());
    /// let report = tenancy.move_tenant(acme.tenant_id(), to.clone(), SqliteMoveOptions::default()).await?;
    /// assert_eq!(report.rows["notes"], 1);
    /// println!("fenced for {:?}", report.fence);
    ///
    /// let mut conn = tenancy.acquire(&acme).await?;
    /// assert_eq!(conn.record().placement, to);
    /// let body: String = sqlx::query_scalar("SELECT body FROM notes").fetch_one(&mut *conn).await?;
    /// assert_eq!(body, "kept");
    /// drop((conn, tenancy));
    /// std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// Requirements: both sides at the same tenant migration version (a
    /// source column the target lacks stops the move before its cut-over);
    /// the target cluster's shared file has the tenant tables (shared
    /// migrations); the catalog implements
    /// [`Catalog::cut_over`](crate::Catalog::cut_over) (the library's
    /// catalogs do).
    ///
    /// # Errors
    /// [`TenancyError::InvalidInput`] for a target that is the tenant's
    /// placement already, names storage not derived from its id, or a
    /// tenant that is not active or has an unfinished move;
    /// [`TenancyError::Unsupported`] for a schema target;
    /// [`TenancyError::UnknownCluster`]; and
    /// [`TenancyError::MoveStopped`] once the ledger row exists.
    #[tracing::instrument(name = "tenancy.move", skip_all, fields(tenant_id = %tenant, backend = "sqlite"))]
    pub async fn move_tenant(
        &self,
        tenant: TenantId,
        to: Placement,
        options: SqliteMoveOptions,
    ) -> Result<MoveReport, TenancyError> {
        crate::catalog::check_deletion_grace(options.fence_grace)?;
        let (_guard, record) = self.lock_tenant(tenant).await?;
        let row = self.start_move(&record, to, &options, false).await?;
        stop_if_started(&row, &options)?;
        self.drive_move(row, &Destination::Sqlite, &options).await
    }

    /// Finishes the tenant's unfinished move from the phase its ledger
    /// recorded last (after a crash, an error or a
    /// [`SqliteMoveOptions::stop_after`]).
    ///
    /// # Errors
    /// [`TenancyError::InvalidInput`] when the tenant has no unfinished
    /// move; otherwise as [`move_tenant`](Self::move_tenant).
    pub async fn resume_move(
        &self,
        tenant: TenantId,
        options: SqliteMoveOptions,
    ) -> Result<MoveReport, TenancyError> {
        let (_guard, _, open) = self.lock_move(tenant).await?;
        match open {
            Some(row) if row.to_postgres => Err(to_postgres(&row)),
            Some(row) => self.drive_move(row, &Destination::Sqlite, &options).await,
            None => Err(no_open_move(tenant)),
        }
    }

    /// Undoes the tenant's unfinished move, if it has not cut over: the
    /// target's storage is removed (its tenant file, or its rows in the
    /// target shared file), the source's lock-out lifted and the tenant
    /// marked active again — served from its source, whose data the move
    /// never changed.
    ///
    /// # Errors
    /// [`TenancyError::InvalidInput`] when the tenant has no unfinished
    /// move, or its move has cut over already (finish it with
    /// [`resume_move`](Self::resume_move), then move the tenant back).
    pub async fn abort_move(&self, tenant: TenantId) -> Result<(), TenancyError> {
        let (_guard, record, open) = self.lock_move(tenant).await?;
        match open {
            Some(row) if row.to_postgres => Err(to_postgres(&row)),
            Some(row) => self.abort_row(row, &record).await,
            None => Err(no_open_move(tenant)),
        }
    }

    /// The tenant's unfinished move, if any: its id and the last phase
    /// its ledger recorded.
    pub async fn open_move(
        &self,
        tenant: TenantId,
    ) -> Result<Option<(uuid::Uuid, MovePhase)>, TenancyError> {
        Ok(
            ledger::open_for(self.ledger_dirs().iter().map(PathBuf::as_path), tenant)
                .await?
                .map(|r| (r.id, r.phase)),
        )
    }

    /// Removes what a finished move kept of its source
    /// ([`SqliteMoveOptions::keep_source`]): the tenant's rows of the
    /// source shared file (its fence row stays, so a stale connection
    /// still cannot write there), or the source tenant file. Returns
    /// whether there was one; `Ok(false)` when no finished move of the
    /// tenant kept its source (or it was purged already).
    pub async fn purge_moved_source(&self, tenant: TenantId) -> Result<bool, TenancyError> {
        let (_guard, record, _) = self.lock_move(tenant).await?;
        let dirs = self.ledger_dirs();
        let Some(row) = ledger::kept_for(dirs.iter().map(PathBuf::as_path), tenant).await? else {
            return Ok(false);
        };
        if record.placement == row.from {
            // Moved back since: the source is the tenant's home again.
            ledger::source_purged(&row).await?;
            return Ok(false);
        }
        let (file, shared) = self.placement_file(&row.from)?;
        if shared || file.exists() {
            self.purge_source(&row, &file, shared).await?;
        }
        ledger::source_purged(&row).await?;
        Ok(true)
    }

    /// Takes the tenant's lock for resuming, undoing or purging its move:
    /// on the source cluster of its open move (or of its last move that
    /// kept its source) — after a cut-over to PostgreSQL the record names
    /// no SQLite cluster — then reads the record and the open move again
    /// under it.
    pub(super) async fn lock_move(
        &self,
        tenant: TenantId,
    ) -> Result<(TenantGuard<'_>, TenantRecord, Option<MoveRow>), TenancyError> {
        let dirs = self.ledger_dirs();
        let anchor = match ledger::open_for(dirs.iter().map(PathBuf::as_path), tenant).await? {
            Some(open) => Some(open),
            None => ledger::kept_for(dirs.iter().map(PathBuf::as_path), tenant).await?,
        };
        let Some(open) = anchor else {
            let (guard, record) = self.lock_tenant(tenant).await?;
            let open = ledger::open_for(dirs.iter().map(PathBuf::as_path), tenant).await?;
            return Ok((guard, record, open));
        };
        let dir = &self.cluster(open.from.cluster())?.tenant_dir;
        let guard = self.inner.backend.locks.lock(tenant, dir).await?;
        let record = self.inner.record(tenant).await?;
        let open = ledger::open_for(dirs.iter().map(PathBuf::as_path), tenant).await?;
        Ok((guard, record, open))
    }

    /// Every configured cluster's tenant directory, in name order.
    pub(super) fn ledger_dirs(&self) -> Vec<PathBuf> {
        self.inner
            .cluster_names()
            .iter()
            .filter_map(|name| self.inner.clusters.get(name))
            .map(|c| c.tenant_dir.clone())
            .collect()
    }

    /// The file a placement lives in, and whether it is a shared file.
    pub(super) fn placement_file(
        &self,
        placement: &Placement,
    ) -> Result<(PathBuf, bool), TenancyError> {
        let cluster = self.cluster(placement.cluster())?;
        match placement {
            Placement::Shared { .. } => Ok((cluster.shared_file.clone(), true)),
            Placement::Database { database, .. } => {
                Ok((cluster.tenant_dir.join(format!("{database}.sqlite")), false))
            }
            Placement::Schema { .. } => Err(TenancyError::Unsupported(
                "SQLite has no schemas; move the tenant to a Shared or Database placement"
                    .to_owned(),
            )),
        }
    }

    /// Checks the request and writes the ledger row.
    pub(super) async fn start_move(
        &self,
        record: &TenantRecord,
        to: Placement,
        options: &SqliteMoveOptions,
        to_postgres: bool,
    ) -> Result<MoveRow, TenancyError> {
        let tenant = record.id;
        let dirs = self.ledger_dirs();
        let open = ledger::open_for(dirs.iter().map(PathBuf::as_path), tenant).await?;
        crate::moving::check_request(record, &to, open.map(|o| (o.id, o.phase)))?;
        if !to_postgres {
            self.placement_file(&to)?;
        }
        self.placement_file(&record.placement)?;
        let dir: &Path = &self.cluster(record.placement.cluster())?.tenant_dir;
        let row = MoveRow {
            id: uuid::Uuid::new_v4(),
            tenant,
            from: record.placement.clone(),
            to,
            phase: MovePhase::Started,
            keep_source: options.keep_source,
            to_postgres,
            dir: dir.to_path_buf(),
        };
        ledger::insert(&row, self.inner.clock.now()).await?;
        Ok(row)
    }
}

/// [`SqliteMoveOptions::stop_after`] with [`MovePhase::Started`]: the
/// ledger row exists, nothing else was done.
pub(super) fn stop_if_started(
    row: &MoveRow,
    options: &SqliteMoveOptions,
) -> Result<(), TenancyError> {
    if options.stop_after == Some(MovePhase::Started) {
        return Err(TenancyError::MoveStopped {
            move_id: row.id,
            tenant: row.tenant,
            phase: MovePhase::Started.to_string(),
            detail: "stopped as SqliteMoveOptions::stop_after asked".to_owned(),
        });
    }
    Ok(())
}

fn to_postgres(row: &MoveRow) -> TenancyError {
    TenancyError::InvalidInput(format!(
        "the move {} of tenant {} goes to PostgreSQL: finish or undo it with \
         resume_move_to_postgres or abort_move_to_postgres, given the PgTenancy",
        row.id, row.tenant
    ))
}

pub(super) fn no_open_move(tenant: TenantId) -> TenancyError {
    TenancyError::InvalidInput(format!("tenant {tenant} has no unfinished move"))
}
