//! The PostgreSQL inbox: an idempotent consumer recorded in the handler's
//! own transaction.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::SharedClock;
use sqlx::{AssertSqlSafe, Executor, PgConnection, PgPool, Postgres, Transaction};

use super::error::pg_error;
use crate::envelope::Event;
use crate::error::EventError;
use crate::inbox_core::{InboxHandler, InboxSettings, InboxStore, claim_outcome};
use crate::middleware::{InboxClaim, TxHandler};

/// The inbox table's default name.
pub const DEFAULT_INBOX_TABLE: &str = "saas_events_inbox";

/// Records which events each consumer has processed, keyed by consumer,
/// tenant (the nil UUID for tenant-less events, which no tenant id can
/// be) and event id.
///
/// [`PgInbox::claim`] inserts the record in the caller's transaction with
/// `ON CONFLICT DO NOTHING`: the record commits with the handler's writes
/// or not at all, and a concurrent duplicate waits on the key until the
/// first commits (then it is a duplicate) or rolls back (then it runs).
///
/// ```no_run
/// use saas_events::middleware::InboxClaim;
/// use saas_events::postgres::PgInbox;
/// use saas_events::router::ReceivedEvent;
///
/// # async fn handle(pool: sqlx::PgPool, event: ReceivedEvent) -> Result<(), Box<dyn std::error::Error>> {
/// let inbox = PgInbox::new();
/// let mut tx = pool.begin().await?; // or `tenancy.begin(&ctx)` from saas-tenancy
/// if inbox.claim(&mut tx, "audit-log", event.event()).await? == InboxClaim::Duplicate {
///     return Ok(()); // processed before: acknowledge
/// }
/// sqlx::query("INSERT INTO audit_log (event_id) VALUES ($1)")
///     .bind(event.event().id())
///     .execute(&mut *tx)
///     .await?;
/// tx.commit().await?; // the record and the effect, together
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgInbox {
    settings: InboxSettings,
}

impl Default for PgInbox {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PgInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings.debug(f, "PgInbox")
    }
}

impl PgInbox {
    /// An inbox in [`DEFAULT_INBOX_TABLE`] on the system clock.
    pub fn new() -> Self {
        Self {
            settings: InboxSettings::new(DEFAULT_INBOX_TABLE),
        }
    }

    /// Uses another table (unqualified: it resolves through the
    /// connection's `search_path`).
    ///
    /// # Errors
    /// [`EventError::InvalidName`] unless it is a lowercase SQL identifier.
    pub fn with_table(mut self, table: &str) -> Result<Self, EventError> {
        self.settings.set_table(table)?;
        Ok(self)
    }

    /// Sets the clock stamping `processed_at`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.settings.clock = clock;
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.settings.table
    }

    /// The table and its `processed_at` index, for the host's migrations
    /// (two statements).
    pub fn create_table_sql(&self) -> String {
        let t = &self.settings.table;
        format!(
            "CREATE TABLE IF NOT EXISTS \"{t}\" (\
             consumer text NOT NULL, \
             tenant_id uuid NOT NULL, \
             event_id text NOT NULL, \
             processed_at timestamptz NOT NULL, \
             PRIMARY KEY (consumer, tenant_id, event_id)); \
             CREATE INDEX IF NOT EXISTS \"{t}_processed_at\" ON \"{t}\" (processed_at)"
        )
    }

    /// Runs [`PgInbox::create_table_sql`] on `conn`.
    ///
    /// # Errors
    /// A database error.
    pub async fn create_table(&self, conn: &mut PgConnection) -> Result<(), EventError> {
        conn.execute(AssertSqlSafe(self.create_table_sql()))
            .await
            .map(|_| ())
            .map_err(pg_error)
    }

    /// Records that `consumer` processes `event`, in `conn`'s current
    /// transaction: [`InboxClaim::First`] if it had not, else
    /// [`InboxClaim::Duplicate`] (nothing written).
    ///
    /// # Errors
    /// [`EventError::InvalidName`] for a bad consumer name, or a database
    /// error.
    pub async fn claim(
        &self,
        conn: &mut PgConnection,
        consumer: &str,
        event: &Event,
    ) -> Result<InboxClaim, EventError> {
        let row = self.settings.claim_row(consumer, event)?;
        let inserted = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO \"{}\" (consumer, tenant_id, event_id, processed_at) \
             VALUES ($1, $2, $3, to_timestamp($4::float8 / 1000)) ON CONFLICT DO NOTHING",
            self.settings.table
        )))
        .bind(consumer)
        .bind(row.tenant)
        .bind(event.id())
        .bind(row.processed_at)
        .execute(conn)
        .await
        .map_err(pg_error)?
        .rows_affected();
        Ok(claim_outcome(inserted))
    }

    /// Deletes records processed before `cutoff`; returns how many.
    ///
    /// # Errors
    /// A database error.
    pub async fn purge_before(
        &self,
        conn: &mut PgConnection,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, EventError> {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM \"{}\" WHERE processed_at < to_timestamp($1::float8 / 1000)",
            self.settings.table
        )))
        .bind(cutoff.timestamp_millis())
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
        .map_err(pg_error)
    }

    /// A router [`Handler`](crate::router::Handler) running `handler` at most once per event for
    /// `consumer`: each delivery opens a transaction on `pool`, claims the
    /// event, runs `handler` in the transaction and commits; a duplicate
    /// is acknowledged without running it, a failure rolls back.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] for a bad consumer name.
    pub fn handler(
        &self,
        consumer: &str,
        pool: PgPool,
        handler: impl TxHandler<PgConnection> + 'static,
    ) -> Result<PgInboxHandler, EventError> {
        InboxHandler::new(self.clone(), consumer, pool, Arc::new(handler))
    }
}

/// See [`PgInbox::handler`].
pub type PgInboxHandler = InboxHandler<PgInbox, Postgres>;

#[async_trait]
impl InboxStore for PgInbox {
    type Db = Postgres;

    async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, EventError> {
        pool.begin().await.map_err(pg_error)
    }

    async fn claim_in(
        &self,
        conn: &mut PgConnection,
        consumer: &str,
        event: &Event,
    ) -> Result<InboxClaim, EventError> {
        self.claim(conn, consumer, event).await
    }

    fn db_error(error: sqlx::Error) -> EventError {
        pg_error(error)
    }
}
