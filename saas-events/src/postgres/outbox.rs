//! Writing events into the outbox inside the caller's transaction.

use std::fmt;

use async_trait::async_trait;
use saas_core::SharedClock;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

use super::error::pg_error;
use crate::envelope::Event;
use crate::error::EventError;
use crate::outbox_core::OutboxSettings;
use crate::traits::{Capabilities, Publisher};

/// The outbox table's default name.
pub const DEFAULT_OUTBOX_TABLE: &str = "saas_events_outbox";

/// Writes events into an outbox table inside the caller's transaction.
///
/// ```no_run
/// use saas_core::TenantId;
/// use saas_events::Event;
/// use saas_events::postgres::PgOutbox;
///
/// # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let outbox = PgOutbox::new();
/// let mut tx = pool.begin().await?; // or `tenancy.begin(&ctx)` from saas-tenancy
/// sqlx::query("UPDATE invoices SET paid = true WHERE id = 42").execute(&mut *tx).await?;
/// let event = Event::new(TenantId::new(), "invoice.paid", "/billing", &42)?;
/// outbox.publish(&mut tx, "invoices", event).await?;
/// tx.commit().await?; // the event exists only if this commits
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgOutbox {
    settings: OutboxSettings,
}

impl Default for PgOutbox {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PgOutbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings.debug(f, "PgOutbox")
    }
}

impl PgOutbox {
    /// An outbox writing to [`DEFAULT_OUTBOX_TABLE`], with a 1 MiB payload
    /// limit and the system clock.
    pub fn new() -> Self {
        Self {
            settings: OutboxSettings::new(DEFAULT_OUTBOX_TABLE),
        }
    }

    /// Uses another table name (unqualified: it resolves through the
    /// connection's `search_path`).
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

    /// Sets the clock stamping events published without a time.
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

    /// `CREATE TABLE IF NOT EXISTS` for the outbox, unqualified, for the
    /// host's migrations (shared and tenant migrations alike). For row
    /// tenants declare the table to the tenancy (its `tenant_id` column
    /// gets the RLS policy); tenant-less events then need an unscoped
    /// connection.
    pub fn create_table_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS \"{}\" (\
             seq bigserial PRIMARY KEY, \
             tenant_id uuid, \
             topic text NOT NULL, \
             event text NOT NULL, \
             created_at timestamptz NOT NULL DEFAULT now())",
            self.settings.table
        )
    }

    /// Runs [`PgOutbox::create_table_sql`] on `conn`.
    ///
    /// # Errors
    /// A database error.
    pub async fn create_table(&self, conn: &mut PgConnection) -> Result<(), EventError> {
        sqlx::query(AssertSqlSafe(self.create_table_sql()))
            .execute(conn)
            .await
            .map(|_| ())
            .map_err(pg_error)
    }

    /// Adds `event` to the outbox in `conn`'s current transaction.
    ///
    /// The event becomes visible to the relay when the transaction commits
    /// and never if it rolls back. An event without a time is stamped now.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] for a bad topic,
    /// [`EventError::PayloadTooLarge`] over the limit (nothing written),
    /// or a database error (an RLS refusal when the event's tenant is not
    /// the transaction's, for example).
    pub async fn publish(
        &self,
        conn: &mut PgConnection,
        topic: &str,
        event: Event,
    ) -> Result<(), EventError> {
        self.publish_batch(conn, topic, vec![event]).await
    }

    /// Adds several events, in order, with one statement.
    ///
    /// # Errors
    /// As [`PgOutbox::publish`]; every event is checked before anything is
    /// written.
    pub async fn publish_batch(
        &self,
        conn: &mut PgConnection,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<(), EventError> {
        let rows = self.settings.rows(topic, events)?;
        if rows.is_empty() {
            return Ok(());
        }
        let (tenants, bodies): (Vec<_>, Vec<_>) =
            rows.into_iter().map(|row| (row.tenant, row.body)).unzip();
        // WITH ORDINALITY keeps the batch's order in the sequence.
        let sql = format!(
            "INSERT INTO \"{}\" (tenant_id, topic, event) \
             SELECT t, $3, e FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS u(t, e, n) \
             ORDER BY n",
            self.settings.table
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenants)
            .bind(bodies)
            .bind(topic)
            .execute(conn)
            .await
            .map(|_| ())
            .map_err(pg_error)
    }
}

/// A [`Publisher`] over an outbox that opens its own transaction per call,
/// for code that has no transaction of its own (and for the conformance
/// suite). Inside a business transaction use [`PgOutbox::publish`].
#[derive(Debug, Clone)]
pub struct PgOutboxPublisher {
    outbox: PgOutbox,
    pool: PgPool,
}

impl PgOutboxPublisher {
    /// Publishes through `outbox` on connections from `pool`.
    pub fn new(outbox: PgOutbox, pool: PgPool) -> Self {
        Self { outbox, pool }
    }
}

#[async_trait]
impl Publisher for PgOutboxPublisher {
    async fn publish(&self, topic: &str, event: Event) -> Result<(), EventError> {
        self.publish_batch(topic, vec![event]).await
    }

    async fn publish_batch(&self, topic: &str, events: Vec<Event>) -> Result<(), EventError> {
        let mut conn = self.pool.acquire().await.map_err(pg_error)?;
        let mut tx = conn.begin().await.map_err(pg_error)?;
        self.outbox.publish_batch(&mut tx, topic, events).await?;
        tx.commit().await.map_err(pg_error)
    }

    fn capabilities(&self) -> Capabilities {
        self.outbox.settings.capabilities()
    }
}
