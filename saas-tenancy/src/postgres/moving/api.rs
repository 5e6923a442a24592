//! The move operations' entry points: checks, the ledger row, and the
//! resumption of an unfinished move.

use saas_core::TenantId;
use sqlx::{PgConnection, PgPool};

use super::ledger::{self, MoveRow};
use super::plan::{self, Table};
use super::{MoveMethod, MoveOptions, MovePhase, MoveReport};
use crate::error::TenancyError;
use crate::placement::Placement;
use crate::postgres::PgTenancy;
use crate::record::TenantRecord;

impl PgTenancy {
    /// Moves a tenant to placement `to` — another strategy (row, schema,
    /// database), another cluster, or both — while it keeps being served.
    /// Phases: prepare the target → copy and catch up (PostgreSQL logical
    /// replication: a publication, with a row filter for a row tenant, a
    /// slot whose exported snapshot the mover `COPY`s the rows under, and a
    /// subscription streaming every later change) → fence → wait for the last
    /// changes and verify row counts per table → carry sequences over →
    /// cut over in the catalog → clean up. Each phase is recorded in the
    /// move ledger (`saas_tenant_moves`, next to `saas_tenants`), so a move
    /// that stops anywhere is finished by [`resume_move`](Self::resume_move)
    /// or undone, before its cut-over, by [`abort_move`](Self::abort_move).
    ///
    /// **The fence.** The tenant is marked `moving` in the catalog and every
    /// listening tenancy is told (see [`PgTenancyBuilder::follow_moves`](crate::postgres::PgTenancyBuilder::follow_moves)):
    /// new handles wait, up to [`PgTenancyBuilder::move_wait`](crate::postgres::PgTenancyBuilder::move_wait),
    /// and then run on the new placement. Open handles get
    /// [`MoveOptions::fence_grace`] to end and are then cut (their
    /// sessions terminated: nothing they had not committed is kept). The
    /// source is then locked out for the tenant durably — row: a
    /// restrictive policy per shared table; schema: its role revoked from
    /// the runtime role; database: `CONNECT` revoked — so even a process
    /// serving it from a stale cached record cannot write there (the row
    /// policies stay after the cut-over; moving the tenant back removes
    /// them). The fence lasts for the last changes' replication, the count
    /// checks and the cut-over: about 0.1 s in the tests, with 8 writers.
    ///
    /// **Keeping the source, and moving back.** By default the source's
    /// data is removed once the move is done. With
    /// [`MoveOptions::keep_source_for()`] it is kept, locked out, for a
    /// retention counted from the cut-over on the tenancy's clock, then
    /// removed by [`purge_expired_sources`](Self::purge_expired_sources)
    /// ([`MoveOptions::keep_source()`] keeps it until
    /// [`purge_moved_source`](Self::purge_moved_source)). Moving the
    /// tenant back to a kept placement is an ordinary move whose target
    /// happens to exist: when the move starts, the ledger stops counting
    /// the source as kept (no purge can remove it from under the move);
    /// the target is emptied of the tenant's rows — the kept copy is stale
    /// — and filled from where the tenant is now; its lock-out (and any
    /// new target's: a schema's role or a database's `CONNECT`) is lifted
    /// only under the fence, just before the cut-over, and only for this
    /// tenant. A move to another placement leaves kept sources as they are.
    /// Aborting a move back removes its target like any other: the kept
    /// copy is gone, the tenant stays where it was.
    ///
    /// **Which moves replicate.** A subscription applies each change to
    /// the table of the same schema-qualified name. Row tenants' tables
    /// are shared (`public.notes`), a schema tenant's are in its schema, a
    /// database tenant's in its database's `public`. Moves between
    /// databases whose names match (row → row on another cluster, row or
    /// database → database, database → row, schema → schema on another
    /// cluster) replicate directly; a schema or database target whose
    /// database has no schema of the source's name is *staged*: its schema
    /// carries the source's name while it replicates and gets its own back
    /// under the fence (schema → database). The other moves — row ↔ schema
    /// (on one cluster both live in one database, where no subscription
    /// can tell the two tables apart; across clusters a schema target's
    /// database has a `public` already, and a row target's shared tables
    /// cannot be renamed) and database → schema — copy the tenant's rows
    /// with `COPY` while it keeps writing, and catch up from triggers
    /// ([`MoveMethod::CapturedCopy`]):
    /// two triggers per source table record the key of every row the
    /// tenant writes from before the copy on (in schema
    /// `saas_tenancy_capture` of the source database, out of the tenant
    /// roles' reach), and rounds of recorded keys are replayed — the
    /// target's row replaced by the source's current one — until few are
    /// left; under the fence only the last round runs. Creating and
    /// dropping the triggers takes each shared table's lock for a moment
    /// (waiting at most half a second at a time, so a long transaction on
    /// it does not queue other tenants' writes behind the mover). A
    /// replay inserts rows in key order within a round: a unique
    /// constraint besides the key that two of the tenant's rows swap
    /// values of between rounds can stop the move (resume it).
    ///
    /// Requirements: the catalog is a [`PgCatalog`](crate::PgCatalog);
    /// `wal_level = logical` on the source server; the clusters' admin
    /// role is a superuser (it creates slots, subscriptions and bypasses
    /// row-level security to copy); the target server reaches the source
    /// as the source cluster's
    /// [`replication_conninfo`](crate::postgres::PgClusterConfig::replication_conninfo)
    /// says (by default the admin options' host, port and user); both sides at the
    /// same tenant migration version. Creating the replication slot waits
    /// for every transaction open on the source server at that moment
    /// (PostgreSQL's consistent starting point) — a long one stops the move
    /// after [`MoveOptions::catch_up_timeout`], naming it. A table with neither primary key
    /// nor replica identity is refused before anything starts
    /// ([`TenancyError::NoReplicaIdentity`]) — for a captured copy, one
    /// without a primary key or replica identity *index* (its replay
    /// finds rows by key).
    ///
    /// ```no_run
    /// # async fn run(tenancy: saas_tenancy::postgres::PgTenancy, id: saas_core::TenantId)
    /// #     -> Result<(), saas_tenancy::TenancyError> {
    /// use saas_tenancy::{ClusterName, Placement, Strategy};
    /// use saas_tenancy::postgres::MoveOptions;
    ///
    /// let to = Placement::derive(Strategy::Database, ClusterName::new("big")?, id);
    /// let report = tenancy.move_tenant(id, to, MoveOptions::default()).await?;
    /// println!("fenced for {:?}, rows {:?}", report.fence, report.rows);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`TenancyError::Unsupported`] without a PostgreSQL catalog,
    /// [`TenancyError::InvalidInput`] for a target that is the tenant's
    /// placement already, names storage not derived from its id, or a
    /// tenant that is not active or has an unfinished move,
    /// [`TenancyError::NoReplicaIdentity`], and
    /// [`TenancyError::MoveStopped`] once the ledger row exists.
    #[tracing::instrument(name = "tenancy.move", skip_all, fields(tenant_id = %tenant))]
    pub async fn move_tenant(
        &self,
        tenant: TenantId,
        to: Placement,
        options: MoveOptions,
    ) -> Result<MoveReport, TenancyError> {
        let pool = self.ledger_pool()?;
        ledger::migrate(pool).await?;
        let (lock, record) = self.lock_tenant(tenant).await?;
        let result = match self.start(pool, &record, to, &options).await {
            Ok(row) => self.drive(pool, row, &options).await,
            Err(e) => Err(e),
        };
        lock.release().await;
        result
    }

    /// Finishes the tenant's unfinished move from the phase its ledger
    /// recorded last (after a crash, an error or a
    /// [`MoveOptions::stop_after`]).
    ///
    /// # Errors
    /// [`TenancyError::InvalidInput`] when the tenant has no unfinished
    /// move; otherwise as [`move_tenant`](Self::move_tenant).
    pub async fn resume_move(
        &self,
        tenant: TenantId,
        options: MoveOptions,
    ) -> Result<MoveReport, TenancyError> {
        let pool = self.ledger_pool()?;
        ledger::migrate(pool).await?;
        // After its cut-over the tenant's record names no cluster of
        // this tenancy: say which entry point finishes it.
        if let Some(row) = ledger::open_for(pool, tenant)
            .await?
            .filter(|r| r.to_sqlite)
        {
            return Err(to_sqlite(&row));
        }
        let (lock, _) = self.lock_tenant(tenant).await?;
        let result = match ledger::open_for(pool, tenant).await {
            Ok(Some(row)) if row.to_sqlite => Err(to_sqlite(&row)),
            Ok(Some(row)) => self.drive(pool, row, &options).await,
            Ok(None) => Err(no_open_move(tenant)),
            Err(e) => Err(e),
        };
        lock.release().await;
        result
    }

    /// The tenant's unfinished move, if any: its id and last phase.
    pub async fn open_move(
        &self,
        tenant: TenantId,
    ) -> Result<Option<(uuid::Uuid, MovePhase)>, TenancyError> {
        let pool = self.ledger_pool()?;
        ledger::migrate(pool).await?;
        Ok(ledger::open_for(pool, tenant)
            .await?
            .map(|r| (r.id, r.phase)))
    }

    pub(super) fn ledger_pool(&self) -> Result<&PgPool, TenancyError> {
        self.inner.catalog.postgres_pool().ok_or_else(|| {
            TenancyError::Unsupported(
                "moving a tenant keeps its ledger next to the tenant records: the catalog \
                 must be a PgCatalog"
                    .to_owned(),
            )
        })
    }

    /// The source's tenant tables.
    pub(super) async fn source_tables(
        &self,
        src: &mut PgConnection,
        from: &Placement,
    ) -> Result<Vec<Table>, TenancyError> {
        let columns = self.inner.tenant_columns();
        plan::tables(src, plan::private_schema(from).as_deref(), &columns).await
    }

    /// The target's tenant tables, in `schema` (its private schema, or the
    /// staging name) or shared.
    pub(super) async fn target_tables(
        &self,
        dst: &mut PgConnection,
        schema: Option<&str>,
    ) -> Result<Vec<Table>, TenancyError> {
        let columns = self.inner.tenant_columns();
        plan::tables(dst, schema, &columns).await
    }

    /// [`MoveOptions::keep_source_for`] as the ledger records it; a
    /// retention past any date is refused.
    pub(super) fn retention(
        &self,
        options: &MoveOptions,
    ) -> Result<Option<chrono::Duration>, TenancyError> {
        options
            .keep_source_for
            .map(|d| {
                chrono::Duration::from_std(d)
                    .ok()
                    .filter(|d| self.inner.clock.now().checked_add_signed(*d).is_some())
                    .ok_or_else(|| {
                        TenancyError::InvalidInput(format!(
                            "a source retention of {d:?} is past any date; keep it for days \
                             to months, or use keep_source(true) to keep it until purged"
                        ))
                    })
            })
            .transpose()
    }

    /// Checks the request and writes the ledger row.
    async fn start(
        &self,
        pool: &PgPool,
        record: &TenantRecord,
        to: Placement,
        options: &MoveOptions,
    ) -> Result<MoveRow, TenancyError> {
        let tenant = record.id;
        let open = ledger::open_for(pool, tenant).await?;
        crate::moving::check_request(record, &to, open.map(|o| (o.id, o.phase)))?;
        self.cluster(to.cluster())?;
        let from = record.placement.clone();
        let mut src = plan::connect(self, &from).await?;
        let source = self.source_tables(&mut src, &from).await?;
        plan::check_identity(&options.split(source.clone()).0)?;
        let mut dst = plan::connect(
            self,
            &Placement::Shared {
                cluster: to.cluster().clone(),
            },
        )
        .await?;
        let target_tables = match &to {
            Placement::Shared { .. } => self.target_tables(&mut dst, None).await?,
            _ => Vec::new(),
        };
        let source_schema = source.first().map(|t| t.schema.clone());
        let schema_taken = match (&to, source_schema) {
            (Placement::Schema { .. }, Some(s)) => {
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                    .bind(s)
                    .fetch_one(&mut dst)
                    .await?
            }
            _ => false,
        };
        let (method, staging) = plan::decide(&from, &to, &source, &target_tables, schema_taken);
        if method == MoveMethod::CapturedCopy {
            // Its replay finds rows by key: refused now, not mid-move.
            for table in &options.split(source.clone()).0 {
                super::capture::key_columns(&mut src, table).await?;
            }
        }
        let keep_for = self.retention(options)?;
        let row = MoveRow {
            id: uuid::Uuid::new_v4(),
            tenant,
            from,
            to,
            method,
            staging,
            phase: MovePhase::Started,
            fence_lsn: None,
            keep_source: options.keep_source,
            keep_for,
            keep_until: None,
            to_sqlite: false,
        };
        ledger::insert(pool, &row, self.inner.clock.now()).await?;
        Ok(row)
    }
}

/// A move to SQLite is driven with the SQLite tenancy in hand.
pub(super) fn to_sqlite(row: &MoveRow) -> TenancyError {
    TenancyError::InvalidInput(format!(
        "the move {} of tenant {} goes to SQLite: finish or undo it with \
         resume_move_to_sqlite or abort_move_to_sqlite, given the SqliteTenancy",
        row.id, row.tenant
    ))
}

pub(super) fn no_open_move(tenant: TenantId) -> TenancyError {
    TenancyError::InvalidInput(format!("tenant {tenant} has no unfinished move"))
}
