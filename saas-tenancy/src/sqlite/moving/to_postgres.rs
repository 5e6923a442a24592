//! Moving a SQLite tenant (shared file or tenant file) to PostgreSQL (the
//! shared tables of row tenants, a schema, or a database): the SQLite
//! side fenced and locked out as for a SQLite move, the target prepared,
//! opened and undone by the PostgreSQL mover's own code, the rows
//! streamed into it with `COPY … FROM STDIN` (text
//! format, sent in bounded chunks, so memory does not grow with the
//! tenant), row counts compared, sequences advanced past the copied
//! keys, and the shared catalog's record cut over to the target.

use std::collections::BTreeMap;

use saas_core::{TenantId, TenantStatus};
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};

use super::SqliteMoveOptions;
use super::copy::schema_tables;
use super::ledger::{self, MoveRow};
use super::pg_copy::{TableCopy, advance_sequences, copy_table, pg_columns};
use super::run::{BUSY, Destination, Progress, connect};
use crate::error::TenancyError;
use crate::moving::{MovePhase, MoveReport};
use crate::placement::{Placement, TenantObjectName};
use crate::postgres::{IncomingTable, PgTenancy};
use crate::sqlite::SqliteTenancy;
use crate::sqlite::transfer::FileTable;

impl SqliteTenancy {
    /// Moves a SQLite tenant (row or database placement) to PostgreSQL —
    /// into the shared tables of row tenants, a schema of its own or a
    /// database of its own — served from then on by `pg`, while it keeps
    /// being served until the fence.
    ///
    /// Both tenancies must **share one catalog** (a [`PgCatalog`](crate::PgCatalog)
    /// given to both builders, or the same [`Catalog`](crate::Catalog)
    /// object): the tenant's one record is cut over from its SQLite
    /// placement to `to`, a placement on one of `pg`'s clusters (build it
    /// with [`Placement::derive`]; PostgreSQL cluster names must differ
    /// from this tenancy's SQLite ones). Columns are matched by name (a
    /// source column the target lacks stops the move before its cut-over).
    /// The target, by strategy:
    ///
    /// - [`Strategy::Shared`](crate::Strategy::Shared): the cluster's
    ///   shared tables (as `pg` lays out row tenants: each table with a
    ///   tenant column, under RLS). The rows go in with the tenant column
    ///   set to the tenant; every statement of the move there — the
    ///   clearing of an earlier attempt, the count, an abort's delete —
    ///   is filtered by the tenant, so other tenants' rows are never
    ///   touched. A target table without a tenant column, or without
    ///   forced row-level security, stops the move before its fence. The
    ///   cluster's admin connection writes the rows past RLS, as the
    ///   PostgreSQL mover's copies do: it must be a superuser (the
    ///   clearing runs in `session_replication_role = replica`).
    /// - [`Strategy::Schema`](crate::Strategy::Schema) /
    ///   [`Strategy::Database`](crate::Strategy::Database): the schema or
    ///   database is provisioned as `pg` provisions tenants (its tenant
    ///   migrations, its grants) and kept closed to the runtime role until
    ///   the cut-over, as a move between PostgreSQL placements does.
    ///
    /// Phases and the fence are those of
    /// [`move_tenant`](Self::move_tenant) — the ledger is in the source
    /// cluster's tenant directory, new SQLite handles wait for the
    /// cut-over, the source is locked out in the file — with the copy
    /// streamed into PostgreSQL: per table, `COPY … FROM STDIN` in text
    /// format, sent in chunks of 256 KiB, in one PostgreSQL transaction
    /// that also compares the row counts and advances every sequence owned
    /// by a column (`serial`, `bigserial`, identity) past the copied
    /// maximum, never backwards (a shared table's sequence serves other
    /// tenants: their inserts into that table wait, for at most
    /// [`fence_grace`](SqliteMoveOptions::fence_grace), while it is set,
    /// until the copy commits). SQLite values go as their text: integers,
    /// reals, text; a 16-byte blob into a `uuid` column as a UUID, other
    /// blobs as `bytea`.
    ///
    /// **Routing afterwards.** The record names the PostgreSQL placement:
    /// every [`SqliteTenancy`] refuses the tenant with
    /// [`TenancyError::PlacementNotServedHere`] (which carries the
    /// placement) instead of serving stale data, and `pg` serves it. A
    /// host running both backends picks the tenancy by the record's
    /// placement — its cluster is a PostgreSQL or a SQLite cluster of its
    /// configuration — and treats `PlacementNotServedHere` as "read the
    /// record again and route there".
    ///
    /// ```no_run
    /// # async fn run(
    /// #     sqlite: saas_tenancy::sqlite::SqliteTenancy,
    /// #     pg: saas_tenancy::postgres::PgTenancy,
    /// #     id: saas_core::TenantId,
    /// # ) -> Result<(), saas_tenancy::TenancyError> {
    /// use saas_tenancy::sqlite::SqliteMoveOptions;
    /// use saas_tenancy::{ClusterName, Placement, Strategy, TenancyError};
    ///
    /// // Into the PostgreSQL cluster's shared tables (Strategy::Schema or
    /// // Strategy::Database: a schema or database of the tenant's own).
    /// let to = Placement::derive(Strategy::Shared, ClusterName::new("pg-main")?, id);
    /// let report = sqlite
    ///     .move_tenant_to_postgres(id, &pg, to, SqliteMoveOptions::default())
    ///     .await?;
    /// println!("fenced for {:?}, rows {:?}", report.fence, report.rows);
    ///
    /// // Afterwards the SQLite side says where the tenant went.
    /// # let ctx = saas_core::TenantContext::new(id, saas_core::TenantSlug::parse("acme").unwrap());
    /// match sqlite.acquire(&ctx).await {
    ///     Err(TenancyError::PlacementNotServedHere { placement, .. }) => {
    ///         assert_eq!(placement.strategy(), Strategy::Shared); // serve it with `pg`
    ///     }
    ///     _ => unreachable!(),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`move_tenant`](Self::move_tenant) (where a schema target is
    /// valid here: every PostgreSQL strategy is), and
    /// [`TenancyError::InvalidInput`] when the catalogs are not shared, or
    /// `to`'s cluster is also a SQLite cluster of this tenancy;
    /// [`TenancyError::UnknownCluster`] when `pg` has no cluster of that
    /// name. Errors in a phase (a target table missing, a shared one
    /// without a tenant column or forced RLS, counts that differ) come as [`TenancyError::MoveStopped`]:
    /// the source still serves; [`abort_move_to_postgres`](Self::abort_move_to_postgres)
    /// or [`resume_move_to_postgres`](Self::resume_move_to_postgres).
    #[tracing::instrument(name = "tenancy.move", skip_all, fields(tenant_id = %tenant, backend = "sqlite", target = "postgres"))]
    pub async fn move_tenant_to_postgres(
        &self,
        tenant: TenantId,
        pg: &PgTenancy,
        to: Placement,
        options: SqliteMoveOptions,
    ) -> Result<MoveReport, TenancyError> {
        crate::catalog::check_deletion_grace(options.fence_grace)?;
        let (_guard, record) = self.lock_tenant(tenant).await?;
        if to
            .object_name()
            .is_some_and(|n| *n != TenantObjectName::for_tenant(tenant))
        {
            return Err(TenancyError::InvalidInput(format!(
                "the target placement's name is not derived from tenant {tenant}; build it \
                 with Placement::derive"
            )));
        }
        if self.inner.clusters.contains_key(to.cluster()) {
            // Fails closed: after the cut-over this tenancy would serve the
            // tenant from its own shared file or tenant file of that name
            // instead of refusing it.
            return Err(TenancyError::InvalidInput(format!(
                "cluster {} is a SQLite cluster of this tenancy too: name the PostgreSQL \
                 clusters differently from the SQLite ones, so each placement has one \
                 tenancy serving it; nothing was moved",
                to.cluster()
            )));
        }
        pg.check_incoming_cluster(&to)?;
        let seen = pg.catalog().get(tenant).await?;
        if seen.as_ref().map(|r| (&r.placement, r.status))
            != Some((&record.placement, record.status))
        {
            return Err(TenancyError::InvalidInput(format!(
                "tenant {tenant}'s record is not the same in both tenancies' catalogs: a move \
                 from SQLite to PostgreSQL cuts over one record, so give both builders the \
                 same catalog"
            )));
        }
        let row = self.start_move(&record, to, &options, true).await?;
        super::api::stop_if_started(&row, &options)?;
        self.drive_move(row, &Destination::Postgres(pg.clone()), &options)
            .await
    }

    /// Finishes an unfinished move to PostgreSQL (see
    /// [`move_tenant_to_postgres`](Self::move_tenant_to_postgres)) from
    /// the phase its ledger recorded last.
    ///
    /// # Errors
    /// [`TenancyError::InvalidInput`] when the tenant has no unfinished
    /// move to PostgreSQL.
    pub async fn resume_move_to_postgres(
        &self,
        tenant: TenantId,
        pg: &PgTenancy,
        options: SqliteMoveOptions,
    ) -> Result<MoveReport, TenancyError> {
        let (_guard, _, open) = self.lock_move(tenant).await?;
        match open {
            Some(row) if row.to_postgres => {
                self.drive_move(row, &Destination::Postgres(pg.clone()), &options)
                    .await
            }
            _ => Err(super::api::no_open_move(tenant)),
        }
    }

    /// Undoes an unfinished move to PostgreSQL that has not cut over, as
    /// [`PgTenancy::abort_move`] undoes its target: the target schema (and
    /// its role) or database dropped, or the tenant's rows deleted from the
    /// shared tables of a row target (other tenants' rows untouched); the
    /// SQLite source's lock-out lifted, the tenant active again on its
    /// source, untouched.
    ///
    /// # Errors
    /// As [`abort_move`](Self::abort_move).
    pub async fn abort_move_to_postgres(
        &self,
        tenant: TenantId,
        pg: &PgTenancy,
    ) -> Result<(), TenancyError> {
        let (_guard, record, open) = self.lock_move(tenant).await?;
        let Some(mut row) = open else {
            return Err(super::api::no_open_move(tenant));
        };
        if !row.to_postgres {
            return Err(super::api::no_open_move(tenant));
        }
        if row.phase >= MovePhase::CutOver || record.placement == row.to {
            return Err(TenancyError::InvalidInput(format!(
                "the move {} of tenant {tenant} has cut over: the tenant is served from \
                 PostgreSQL; finish it with resume_move_to_postgres",
                row.id
            )));
        }
        pg.undo_incoming(tenant, &row.to).await?;
        let (source_file, source_shared) = self.placement_file(&row.from)?;
        let mut src = connect(&source_file, BUSY).await?;
        let lifted = async {
            if source_shared {
                super::lockout::lift_shared(&mut src, tenant).await
            } else {
                let columns = self.inner.tenant_columns();
                let tables = schema_tables(&mut src, "main", &columns).await?;
                super::lockout::lift_file(&mut src, &tables).await
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

    /// The copy of a move to PostgreSQL: the tenant's tables streamed
    /// from `src` into the target (its schema, its database, or the
    /// shared tables).
    pub(super) async fn copy_to_postgres(
        &self,
        src: &mut SqliteConnection,
        pg: &PgTenancy,
        row: &MoveRow,
        options: &SqliteMoveOptions,
        progress: Progress<'_>,
    ) -> Result<BTreeMap<String, u64>, TenancyError> {
        let mut dst = pg.incoming_connection(&row.to).await?;
        let streamed = async {
            let target = pg.incoming_tables(&mut dst, &row.to, row.tenant).await?;
            self.stream_to_postgres(src, &mut dst, &target, row, options, progress)
                .await
        }
        .await;
        dst.close().await?;
        streamed
    }

    /// Tells PostgreSQL processes of the cut-over: `pg` forgets the
    /// tenant's record, and processes following moves drop a cached one
    /// now rather than at the cache's TTL.
    pub(super) async fn announce_cut_over(
        &self,
        pg: &PgTenancy,
        tenant: TenantId,
    ) -> Result<(), TenancyError> {
        pg.forget_record(tenant);
        if let Some(pool) = self.inner.catalog.postgres_pool() {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(crate::postgres::MOVE_CHANNEL)
                .bind(tenant.to_string())
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// Streams the tenant's tables from `src` into `target` on `dst`, in
    /// one PostgreSQL transaction (the tenant's rows there deleted first,
    /// so a repeat after a crash starts clean), comparing counts and
    /// advancing sequences.
    async fn stream_to_postgres(
        &self,
        src: &mut SqliteConnection,
        dst: &mut PgConnection,
        target: &[IncomingTable],
        row: &MoveRow,
        options: &SqliteMoveOptions,
        progress: Progress<'_>,
    ) -> Result<BTreeMap<String, u64>, TenancyError> {
        let tenant = row.tenant;
        let source_shared = matches!(row.from, Placement::Shared { .. });
        let tenant_columns = self.inner.tenant_columns();
        let source: Vec<FileTable> = schema_tables(src, "main", &tenant_columns)
            .await?
            .into_iter()
            .filter(|t| !source_shared || t.tenant_column.is_some())
            .collect();
        let mut rows = BTreeMap::new();
        let mut tx = dst.begin().await?;
        src.execute("BEGIN").await?;
        let result = async {
            let mut filled = Vec::with_capacity(source.len());
            for (i, table) in source.iter().enumerate() {
                progress(MovePhase::Synced, i, source.len());
                let logical = if source_shared {
                    self.inner
                        .tables
                        .iter()
                        .find(|t| t.physical().is_ok_and(|p| p.as_str() == table.name))
                        .map_or_else(|| table.name.clone(), |t| t.table.as_str().to_owned())
                } else {
                    table.name.clone()
                };
                let Some(into) = target.iter().find(|t| t.name == logical) else {
                    return Err(TenancyError::InvalidInput(format!(
                        "the PostgreSQL target has no tenant table {logical} for the SQLite \
                         table {} (a row target's table needs a tenant column): migrate both \
                         sides to the same version; nothing was moved",
                        table.name
                    )));
                };
                let columns = pg_columns(&mut tx, into).await?;
                let job = TableCopy {
                    target: into,
                    columns: &columns,
                    table,
                };
                let copied = copy_table(src, &mut tx, &job, tenant, &tenant_columns).await?;
                rows.insert(logical, copied);
                filled.push(into.clone());
            }
            advance_sequences(&mut tx, &filled, options.fence_grace).await?;
            Ok(())
        }
        .await;
        let _ = src.execute("COMMIT").await;
        result?;
        tx.commit().await?;
        Ok(rows)
    }
}
