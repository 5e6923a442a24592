//! The target side of a move: preparing it, and bringing it in step with
//! the fenced source.

use std::collections::BTreeMap;
use std::time::Instant;

use sqlx::PgConnection;

use super::ledger::MoveRow;
use super::plan::{self, Table};
use super::{MoveMethod, MoveOptions, capture, copy, replicate};
use crate::error::TenancyError;
use crate::placement::Placement;
use crate::postgres::PgTenancy;

impl PgTenancy {
    /// Creates the target's storage (a schema or database provisioned
    /// with the tenant migrations) and empties it of the tenant's rows —
    /// the catalog says the tenant is not there, so anything found is a
    /// leftover, such as the data an earlier move kept there. The target
    /// stays closed to the runtime role until the cut-over (see
    /// `lockout::seal`): a row target keeps the lock-out policies of an
    /// earlier move away from it, a schema or database target is sealed.
    /// Every table of `source` must exist on the target (same tenant
    /// migrations): checked here, before the fence.
    pub(super) async fn prepare_target(
        &self,
        tenant: saas_core::TenantId,
        to: &Placement,
        source: &[Table],
    ) -> Result<(), TenancyError> {
        match to {
            Placement::Schema { cluster, schema } => {
                self.provision_schema(self.cluster(cluster)?, schema)
                    .await?;
            }
            Placement::Database { cluster, database } => {
                self.provision_database(self.cluster(cluster)?, database)
                    .await?;
            }
            Placement::Shared { .. } => {}
        }
        let mut dst = plan::connect(self, to).await?;
        let tables = self
            .target_tables(&mut dst, plan::private_schema(to).as_deref())
            .await?;
        copy::pair(source, &tables)?;
        super::lockout::seal(self, to).await?;
        copy::clear(&mut dst, &tables, tenant).await?;
        Ok(())
    }

    /// Brings the target in step with the fenced source: waits for the
    /// last replicated changes (or copies the rows), checks the row counts
    /// per table, removes the replication, renames a staged schema back
    /// and carries the sequences over. Returns the rows per table.
    pub(super) async fn sync(
        &self,
        src: &mut PgConnection,
        row: &MoveRow,
        source: &[Table],
        options: &MoveOptions,
    ) -> Result<BTreeMap<String, u64>, TenancyError> {
        let tenant = row.tenant;
        let own = plan::private_schema(&row.to);
        let mut dst = plan::connect(self, &row.to).await?;
        let rows = match row.method {
            MoveMethod::CopyUnderFence => {
                let target = self.target_tables(&mut dst, own.as_deref()).await?;
                let pairs = copy::pair(source, &target)?;
                copy::clear(&mut dst, &target, tenant).await?;
                copy::copy(src, &mut dst, &pairs, tenant).await?;
                checked(copy::verify(src, &mut dst, &pairs, tenant).await?)?
            }
            MoveMethod::CapturedCopy => {
                let target = self.target_tables(&mut dst, own.as_deref()).await?;
                let pairs = copy::pair(source, &target)?;
                let tables = capture::prepare(src, &mut dst, &pairs).await?;
                // The tenant's writes are locked out: the log only shrinks.
                let deadline = super::deadline(options.catch_up_timeout);
                capture::drain(src, &mut dst, row.id, &tables, tenant, 0, deadline).await?;
                checked(copy::verify(src, &mut dst, &pairs, tenant).await?)?
            }
            MoveMethod::LogicalReplication => {
                let name = replicate::name(row.id);
                let schema = row.staging.clone().or_else(|| own.clone());
                let target = self.target_tables(&mut dst, schema.as_deref()).await?;
                let pairs = copy::pair_same_schema(source, &target)?;
                let lsn = row.fence_lsn.clone().unwrap_or_default();
                let deadline = super::deadline(options.catch_up_timeout);
                let counts = if !replicate::exists(&mut dst, &name).await? {
                    // Dropped by an earlier run, after it had caught up.
                    checked(copy::verify(src, &mut dst, &pairs, tenant).await?)?
                } else {
                    loop {
                        let timeout = deadline.saturating_duration_since(Instant::now());
                        replicate::wait_for_lsn(src, &mut dst, &name, &lsn, timeout).await?;
                        match copy::verify(src, &mut dst, &pairs, tenant).await? {
                            Ok(counts) => break counts,
                            Err(diff) if Instant::now() >= deadline => return checked(Err(diff)),
                            Err(_) => {
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            }
                        }
                    }
                };
                let subscription = replicate::drop_subscription(&mut dst, &name).await?;
                replicate::drop_source_objects(src, &name, subscription).await?;
                if let (Some(staging), Some(own)) = (&row.staging, &own) {
                    replicate::rename_schema(&mut dst, staging, own).await?;
                }
                counts
            }
        };
        let target = self.target_tables(&mut dst, own.as_deref()).await?;
        let pairs = copy::pair(source, &target)?;
        copy::carry_sequences(src, &mut dst, &pairs, tenant).await?;
        Ok(rows)
    }
}

impl PgTenancy {
    /// Moves the tenant's rows of each queue table to the target, under
    /// the fence (see [`MoveOptions::queue_tables`]), announcing them on
    /// `wake` (see [`MoveOptions::queue_wake_channel`]); returns the rows
    /// moved per table.
    pub(super) async fn move_queues(
        &self,
        src: &mut PgConnection,
        row: &MoveRow,
        queues: &[Table],
        wake: Option<&str>,
    ) -> Result<BTreeMap<String, u64>, TenancyError> {
        if queues.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut dst = plan::connect(self, &row.to).await?;
        let own = plan::private_schema(&row.to);
        let target = self.target_tables(&mut dst, own.as_deref()).await?;
        let columns = self.inner.tenant_columns();
        let mut moved = BTreeMap::new();
        for (s, t) in copy::pair(queues, &target)? {
            let n = copy::move_queue(src, &mut dst, s, t, row.tenant, &columns, wake).await?;
            moved.insert(t.name.clone(), n);
        }
        Ok(moved)
    }
}

/// Turns a count mismatch into an error naming the table.
fn checked(
    result: Result<BTreeMap<String, u64>, (String, u64, u64)>,
) -> Result<BTreeMap<String, u64>, TenancyError> {
    result.map_err(|(table, source, target)| {
        TenancyError::InvalidInput(format!(
            "table {table} holds {source} rows of the tenant on the source but {target} on \
             the target under the fence; abort_move and move again"
        ))
    })
}
