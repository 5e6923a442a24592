//! Writing events into the outbox inside the caller's transaction.

use std::fmt;

use async_trait::async_trait;
use saas_core::SharedClock;
use sqlx::{AssertSqlSafe, Connection, SqliteConnection, SqlitePool};

use super::error::sqlite_error;
use crate::envelope::Event;
use crate::error::EventError;
use crate::outbox_core::OutboxSettings;
use crate::sql_ident::check_ident;
use crate::traits::{Capabilities, Publisher};

/// The outbox table's default name.
pub const DEFAULT_OUTBOX_TABLE: &str = "saas_events_outbox";

/// Writes events into an outbox table inside the caller's transaction.
///
/// ```no_run
/// use saas_core::TenantId;
/// use saas_events::Event;
/// use saas_events::sqlite::SqliteOutbox;
/// use sqlx::Connection;
///
/// # async fn run(conn: &mut sqlx::SqliteConnection) -> Result<(), Box<dyn std::error::Error>> {
/// let outbox = SqliteOutbox::new();
/// let mut tx = conn.begin().await?; // or `tenancy.begin(&ctx)` from saas-tenancy
/// sqlx::query("UPDATE invoices SET paid = 1 WHERE id = 42").execute(&mut *tx).await?;
/// let event = Event::new(TenantId::new(), "invoice.paid", "/billing", &42)?;
/// outbox.publish(&mut tx, "invoices", event).await?;
/// tx.commit().await?; // the event exists only if this commits
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteOutbox {
    settings: OutboxSettings,
}

impl Default for SqliteOutbox {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SqliteOutbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings.debug(f, "SqliteOutbox")
    }
}

impl SqliteOutbox {
    /// An outbox writing to [`DEFAULT_OUTBOX_TABLE`], with a 1 MiB payload
    /// limit and the system clock.
    pub fn new() -> Self {
        Self {
            settings: OutboxSettings::new(DEFAULT_OUTBOX_TABLE),
        }
    }

    /// Uses another table name.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] unless it is a lowercase SQL identifier.
    pub fn with_table(mut self, table: &str) -> Result<Self, EventError> {
        self.settings.set_table(table)?;
        Ok(self)
    }

    /// Sets the payload limit.
    pub fn with_max_payload_bytes(mut self, limit: usize) -> Self {
        self.settings.max_payload_bytes = limit;
        self
    }

    /// Sets the clock stamping events published without a time and the
    /// rows' `created_at` (which the relay's pending age is measured from:
    /// give the relay the same clock).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.settings.clock = clock;
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.settings.table
    }

    /// The payload limit.
    pub fn max_payload_bytes(&self) -> usize {
        self.settings.max_payload_bytes
    }

    /// `CREATE TABLE IF NOT EXISTS` for the outbox, for the host's
    /// migrations (tenant database files included).
    pub fn create_table_sql(&self) -> String {
        table_sql(&self.settings.table)
    }

    /// The same table under the name `physical`: the table behind the
    /// tenant view in a shared file, where the outbox is declared a tenant
    /// table (`saas_events_outbox_rows` by saas-tenancy's default).
    ///
    /// # Errors
    /// [`EventError::InvalidName`] unless it is a lowercase SQL identifier.
    pub fn create_table_sql_as(&self, physical: &str) -> Result<String, EventError> {
        check_ident(physical, "a table must be a lowercase SQL identifier")?;
        Ok(table_sql(physical))
    }

    /// Runs [`SqliteOutbox::create_table_sql`] on `conn`.
    ///
    /// # Errors
    /// A database error.
    pub async fn create_table(&self, conn: &mut SqliteConnection) -> Result<(), EventError> {
        sqlx::query(AssertSqlSafe(self.create_table_sql()))
            .execute(conn)
            .await
            .map(|_| ())
            .map_err(sqlite_error)
    }

    /// Adds `event` to the outbox in `conn`'s current transaction.
    ///
    /// The event becomes visible to the relay when the transaction commits
    /// and never if it rolls back. An event without a time is stamped now.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] for a bad topic,
    /// [`EventError::PayloadTooLarge`] over the limit (nothing written),
    /// or a database error (a tenant view refusing an event of another
    /// tenant, for example).
    pub async fn publish(
        &self,
        conn: &mut SqliteConnection,
        topic: &str,
        event: Event,
    ) -> Result<(), EventError> {
        self.publish_batch(conn, topic, vec![event]).await
    }

    /// Adds several events, in order, all or none: every event is checked
    /// before anything is written, and the rows are written under a
    /// savepoint (a transaction if `conn` has none).
    ///
    /// # Errors
    /// As [`SqliteOutbox::publish`].
    pub async fn publish_batch(
        &self,
        conn: &mut SqliteConnection,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<(), EventError> {
        let created_at = self.settings.clock.now().timestamp_millis();
        let rows = self.settings.rows(topic, events)?;
        if rows.is_empty() {
            return Ok(());
        }
        // Row by row: a tenant view's INSTEAD OF trigger runs per row
        // anyway, and the statement is prepared once and cached.
        let sql = format!(
            "INSERT INTO \"{}\" (tenant_id, topic, event, created_at) VALUES (?, ?, ?, ?)",
            self.settings.table
        );
        let mut tx = conn.begin().await.map_err(sqlite_error)?;
        for row in rows {
            sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(row.tenant)
                .bind(topic)
                .bind(row.body)
                .bind(created_at)
                .execute(&mut *tx)
                .await
                .map_err(sqlite_error)?;
        }
        tx.commit().await.map_err(sqlite_error)
    }
}

/// `seq` never repeats (`AUTOINCREMENT`), so delivered rows can be deleted
/// by range; `created_at` is Unix milliseconds from the outbox's clock
/// (written explicitly: a tenant view has no column defaults).
fn table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS \"{table}\" (\
         seq INTEGER PRIMARY KEY AUTOINCREMENT, \
         tenant_id BLOB, \
         topic TEXT NOT NULL, \
         event TEXT NOT NULL, \
         created_at INTEGER NOT NULL)"
    )
}

/// A [`Publisher`] over an outbox that opens its own transaction per call,
/// for code that has no transaction of its own (and for the conformance
/// suite). Inside a business transaction use [`SqliteOutbox::publish`].
#[derive(Debug, Clone)]
pub struct SqliteOutboxPublisher {
    outbox: SqliteOutbox,
    pool: SqlitePool,
}

impl SqliteOutboxPublisher {
    /// Publishes through `outbox` on connections from `pool`.
    pub fn new(outbox: SqliteOutbox, pool: SqlitePool) -> Self {
        Self { outbox, pool }
    }
}

#[async_trait]
impl Publisher for SqliteOutboxPublisher {
    async fn publish(&self, topic: &str, event: Event) -> Result<(), EventError> {
        self.publish_batch(topic, vec![event]).await
    }

    async fn publish_batch(&self, topic: &str, events: Vec<Event>) -> Result<(), EventError> {
        let mut conn = self.pool.acquire().await.map_err(sqlite_error)?;
        // Take the write lock up front: a deferred transaction that reads
        // before writing can fail with SQLITE_BUSY instead of waiting.
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sqlite_error)?;
        self.outbox.publish_batch(&mut tx, topic, events).await?;
        tx.commit().await.map_err(sqlite_error)
    }

    fn capabilities(&self) -> Capabilities {
        self.outbox.settings.capabilities()
    }
}
