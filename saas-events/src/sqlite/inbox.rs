//! The SQLite inbox: an idempotent consumer recorded in the handler's
//! own transaction.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::SharedClock;
use sqlx::{AssertSqlSafe, Executor, Sqlite, SqliteConnection, SqlitePool, Transaction};

use super::error::sqlite_error;
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
/// [`SqliteInbox::claim`] inserts the record in the caller's transaction with
/// `ON CONFLICT DO NOTHING`: the record commits with the handler's writes
/// or not at all. SQLite has one writer per file, so a concurrent
/// duplicate waits (busy timeout) until the first transaction ends.
///
/// Keep the inbox a plain table, also in a saas-tenancy shared file (not
/// a tenant table): a tenant view's triggers hide whether the insert
/// happened, and the tenant is part of the key anyway.
///
/// ```no_run
/// use saas_events::middleware::InboxClaim;
/// use saas_events::sqlite::SqliteInbox;
/// use saas_events::router::ReceivedEvent;
///
/// # async fn handle(pool: sqlx::SqlitePool, event: ReceivedEvent) -> Result<(), Box<dyn std::error::Error>> {
/// let inbox = SqliteInbox::new();
/// let mut tx = pool.begin().await?; // or `tenancy.begin(&ctx)` from saas-tenancy
/// if inbox.claim(&mut tx, "audit-log", event.event()).await? == InboxClaim::Duplicate {
///     return Ok(()); // processed before: acknowledge
/// }
/// sqlx::query("INSERT INTO audit_log (event_id) VALUES (?)")
///     .bind(event.event().id())
///     .execute(&mut *tx)
///     .await?;
/// tx.commit().await?; // the record and the effect, together
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteInbox {
    settings: InboxSettings,
}

impl Default for SqliteInbox {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SqliteInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings.debug(f, "SqliteInbox")
    }
}

impl SqliteInbox {
    /// An inbox in [`DEFAULT_INBOX_TABLE`] on the system clock.
    pub fn new() -> Self {
        Self {
            settings: InboxSettings::new(DEFAULT_INBOX_TABLE),
        }
    }

    /// Uses another table.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] unless it is a lowercase SQL identifier.
    pub fn with_table(mut self, table: &str) -> Result<Self, EventError> {
        self.settings.set_table(table)?;
        Ok(self)
    }

    /// Sets the clock stamping `processed_at` (Unix milliseconds).
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
             consumer TEXT NOT NULL, \
             tenant_id BLOB NOT NULL, \
             event_id TEXT NOT NULL, \
             processed_at INTEGER NOT NULL, \
             PRIMARY KEY (consumer, tenant_id, event_id)); \
             CREATE INDEX IF NOT EXISTS \"{t}_processed_at\" ON \"{t}\" (processed_at)"
        )
    }

    /// Runs [`SqliteInbox::create_table_sql`] on `conn`.
    ///
    /// # Errors
    /// A database error.
    pub async fn create_table(&self, conn: &mut SqliteConnection) -> Result<(), EventError> {
        conn.execute(AssertSqlSafe(self.create_table_sql()))
            .await
            .map(|_| ())
            .map_err(sqlite_error)
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
        conn: &mut SqliteConnection,
        consumer: &str,
        event: &Event,
    ) -> Result<InboxClaim, EventError> {
        let row = self.settings.claim_row(consumer, event)?;
        let inserted = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO \"{}\" (consumer, tenant_id, event_id, processed_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            self.settings.table
        )))
        .bind(consumer)
        .bind(row.tenant)
        .bind(event.id())
        .bind(row.processed_at)
        .execute(conn)
        .await
        .map_err(sqlite_error)?
        .rows_affected();
        Ok(claim_outcome(inserted))
    }

    /// Deletes records processed before `cutoff`; returns how many.
    ///
    /// # Errors
    /// A database error.
    pub async fn purge_before(
        &self,
        conn: &mut SqliteConnection,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, EventError> {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM \"{}\" WHERE processed_at < ?",
            self.settings.table
        )))
        .bind(cutoff.timestamp_millis())
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
        .map_err(sqlite_error)
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
        pool: SqlitePool,
        handler: impl TxHandler<SqliteConnection> + 'static,
    ) -> Result<SqliteInboxHandler, EventError> {
        InboxHandler::new(self.clone(), consumer, pool, Arc::new(handler))
    }
}

/// See [`SqliteInbox::handler`].
pub type SqliteInboxHandler = InboxHandler<SqliteInbox, Sqlite>;

#[async_trait]
impl InboxStore for SqliteInbox {
    type Db = Sqlite;

    async fn begin(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, EventError> {
        // The write lock up front: the claim is a write, and a deferred
        // transaction upgrading later can fail with SQLITE_BUSY.
        pool.begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sqlite_error)
    }

    async fn claim_in(
        &self,
        conn: &mut SqliteConnection,
        consumer: &str,
        event: &Event,
    ) -> Result<InboxClaim, EventError> {
        self.claim(conn, consumer, event).await
    }

    fn db_error(error: sqlx::Error) -> EventError {
        sqlite_error(error)
    }
}
