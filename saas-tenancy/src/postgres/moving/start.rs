//! The start of a replicated move: the slot, the initial copy and the
//! subscription. The mover creates the slot over a replication connection
//! (`walsender.rs`), copies the tenant's rows with `COPY` under the
//! snapshot the slot exported, and subscribes without a copy: the rows
//! committed before the slot's starting point are in the copy, every
//! later change arrives through the slot. Where its replication
//! connection cannot be made or cannot create the slot, the
//! subscription's table sync copies instead
//! (the same result, a few hundred milliseconds of PostgreSQL's workers
//! and a second consistent point later).

use std::time::Instant;

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use super::ledger::MoveRow;
use super::plan::{self, Table};
use super::walsender::{Endpoint, ReplicationConnection, SlotError};
use super::{MoveOptions, MovePhase, copy, replicate};
use crate::error::TenancyError;
use crate::postgres::PgTenancy;

/// Who copied a replicated move's rows.
pub(super) enum InitialCopy {
    /// The mover, under the slot's snapshot; its `COPY` ended then.
    ByMover(Instant),
    /// PostgreSQL's table sync, because the mover's replication
    /// connection could not be made or could not create the slot (why).
    ByTableSync(String),
}

impl PgTenancy {
    /// Creates the move's slot, copies the tenant's rows and subscribes
    /// the target; called while the subscription does not exist. A run
    /// stopped before subscribing left a slot whose snapshot is gone and
    /// part of a copy: both are redone. Returns who copied.
    pub(super) async fn start_replication(
        &self,
        src: &mut PgConnection,
        dst: &mut PgConnection,
        row: &MoveRow,
        source: &[Table],
        options: &MoveOptions,
    ) -> Result<InitialCopy, TenancyError> {
        let name = replicate::name(row.id);
        replicate::drop_slots(src, &name, None).await?;
        let own = row
            .staging
            .clone()
            .or_else(|| plan::private_schema(&row.to));
        let target = self.target_tables(dst, own.as_deref()).await?;
        // What the copy reads is what the publication publishes, into the
        // tables the subscription applies to: checked before any slot.
        let published = replicate::published(source, plan::private_schema(&row.to).is_none());
        let pairs = copy::pair_same_schema(&published, &target)?;
        for (s, t) in &pairs {
            copy::shared_columns(src, dst, s, t).await?;
        }
        copy::clear(dst, &target, row.tenant).await?;
        let (database, system): (String, String) = sqlx::query_as(
            "SELECT current_database()::text, \
                    (SELECT system_identifier::text FROM pg_control_system())",
        )
        .fetch_one(&mut *src)
        .await?;
        let config = &self.cluster(row.from.cluster())?.config;
        let conninfo = replicate::conninfo(config, &database);
        let wait = options.catch_up_timeout;
        let mut reader = plan::connect(self, &row.from).await?;
        let opened = match Endpoint::of(config, &database) {
            Ok(endpoint) => ReplicationConnection::connect(&endpoint, wait).await,
            Err(why) => Err(why),
        };
        let slot = match opened {
            Ok(mut repl) => match repl.identify().await {
                Ok(found) if found != (system.clone(), Some(database.clone())) => Err(format!(
                    "the replication connection reaches database {:?} of server {} instead of \
                     {database:?} of server {system} (check replication_conninfo's host and port)",
                    found.1, found.0
                )),
                Err(why) => Err(why),
                Ok(_) => match repl.create_slot(&name).await {
                    Ok(slot) => Ok((repl, slot)),
                    Err(SlotError::LockTimeout) => {
                        return Err(replicate::slot_wait_timeout(src, wait).await?);
                    }
                    // Refused (privilege, slots in use…): the path below
                    // meets the same refusal and reports it as sqlx does.
                    Err(SlotError::Failed(why)) => Err(format!("creating the slot failed: {why}")),
                },
            },
            Err(why) => Err(why),
        };
        let (repl, slot) = match slot {
            Ok(created) => created,
            Err(why) => {
                tracing::warn!(
                    move_id = %row.id,
                    tenant = %row.tenant,
                    reason = %why,
                    "no replication connection to the move's source: PostgreSQL's table sync \
                     copies the rows (slower to start)"
                );
                replicate::create_slot(src, &name, wait).await?;
                replicate::subscribe(dst, &name, &conninfo, true).await?;
                return Ok(InitialCopy::ByTableSync(why));
            }
        };
        // Snapshot names are hex digits and hyphens (`00000003-0000001B-1`).
        if slot.snapshot.is_empty()
            || !slot
                .snapshot
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '-')
        {
            return Err(TenancyError::Corrupt(format!(
                "the source server exported a snapshot named {:?}",
                slot.snapshot
            )));
        }
        let mut snapshot = reader
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let imported = snapshot
            .execute(AssertSqlSafe(format!(
                "SET TRANSACTION SNAPSHOT '{}'",
                slot.snapshot
            )))
            .await;
        // Imported, the snapshot is the reader's own: the replication
        // connection (a WAL sender slot on the source) can go.
        repl.close().await;
        if let Err(e) = imported {
            return Err(TenancyError::Unsupported(format!(
                "the copy could not take the snapshot the move's slot exported ({e}); the \
                 replication connection and the admin connection must reach the same server — \
                 resume the move, or abort it"
            )));
        }
        // The slot holds WAL from here on; the copy starts.
        let tables = (0, source.len());
        options.report(row.id, row.tenant, MovePhase::Copying, tables, None);
        copy::copy(&mut snapshot, dst, &pairs, row.tenant).await?;
        snapshot.commit().await?;
        let copied = Instant::now();
        replicate::subscribe(dst, &name, &conninfo, false).await?;
        Ok(InitialCopy::ByMover(copied))
    }
}
