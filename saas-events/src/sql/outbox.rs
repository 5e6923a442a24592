//! Writing events into the outbox inside the caller's transaction, on
//! PostgreSQL and SQLite.

use std::fmt;
use std::marker::PhantomData;

use async_trait::async_trait;
use saas_core::SharedClock;
use sqlx::Pool;

use super::SqlDialect;
use super::dialect::Dialect;
use crate::envelope::Event;
use crate::error::EventError;
use crate::outbox_core::OutboxSettings;
use crate::traits::{Capabilities, Publisher};

/// The outbox table's default name.
pub const DEFAULT_OUTBOX_TABLE: &str = "saas_events_outbox";

/// Writes events into an outbox table inside the caller's transaction.
/// Used as [`PgOutbox`](crate::postgres::PgOutbox) or
/// [`SqliteOutbox`](crate::sqlite::SqliteOutbox).
///
/// ```no_run
/// use saas_core::TenantId;
/// use saas_events::Event;
/// use saas_events::postgres::PgOutbox;
///
/// # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let outbox = PgOutbox::new(); // `SqliteOutbox::new()` alike
/// let mut tx = pool.begin().await?; // or `tenancy.begin(&ctx)` from saas-tenancy
/// sqlx::query("UPDATE invoices SET paid = true WHERE id = 42").execute(&mut *tx).await?;
/// let event = Event::new(TenantId::new(), "invoice.paid", "/billing", &42)?;
/// outbox.publish(&mut tx, "invoices", event).await?;
/// tx.commit().await?; // the event exists only if this commits
/// # Ok(())
/// # }
/// ```
pub struct SqlOutbox<D: SqlDialect> {
    pub(crate) settings: OutboxSettings,
    dialect: PhantomData<fn() -> D>,
}

// By hand: a derive would ask `D: Clone`.
impl<D: SqlDialect> Clone for SqlOutbox<D> {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.clone(),
            dialect: PhantomData,
        }
    }
}

impl<D: SqlDialect> Default for SqlOutbox<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: SqlDialect> fmt::Debug for SqlOutbox<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings.debug(f, &format!("{}Outbox", D::PREFIX))
    }
}

impl<D: SqlDialect> SqlOutbox<D> {
    /// An outbox writing to [`DEFAULT_OUTBOX_TABLE`], with a 1 MiB payload
    /// limit and the system clock.
    pub fn new() -> Self {
        Self {
            settings: OutboxSettings::new(DEFAULT_OUTBOX_TABLE),
            dialect: PhantomData,
        }
    }

    /// Uses another table name (on PostgreSQL unqualified: it resolves
    /// through the connection's `search_path`).
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

    /// Sets the clock stamping events published without a time. On SQLite
    /// it stamps the rows' `created_at` too, which the relay's pending age
    /// is measured from: give the relay the same clock.
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
    /// host's migrations (shared and tenant migrations alike, tenant
    /// database files included). For PostgreSQL row tenants declare the
    /// table to the tenancy (its `tenant_id` column gets the RLS policy);
    /// tenant-less events then need an unscoped connection. For SQLite row
    /// tenants see `SqliteOutbox::create_table_sql_as`.
    pub fn create_table_sql(&self) -> String {
        outbox_table_sql::<D>(&self.settings.table)
    }

    /// Runs [`SqlOutbox::create_table_sql`] on `conn`.
    ///
    /// # Errors
    /// A database error.
    pub async fn create_table(&self, conn: &mut D::Connection) -> Result<(), EventError> {
        D::execute(conn, self.create_table_sql(), Vec::new())
            .await
            .map(|_| ())
            .map_err(D::error)
    }

    /// Adds `event` to the outbox in `conn`'s current transaction.
    ///
    /// The event becomes visible to the relay when the transaction commits
    /// and never if it rolls back. An event without a time is stamped now.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] for a bad topic,
    /// [`EventError::PayloadTooLarge`] over the limit (nothing written),
    /// or a database error (an RLS refusal on PostgreSQL, or a SQLite
    /// tenant view's, when the event's tenant is not the transaction's).
    pub async fn publish(
        &self,
        conn: &mut D::Connection,
        topic: &str,
        event: Event,
    ) -> Result<(), EventError> {
        self.publish_batch(conn, topic, vec![event]).await
    }

    /// Adds several events, in order, all or none: every event is checked
    /// before anything is written. PostgreSQL writes them with one
    /// statement; SQLite row by row under a savepoint (a transaction if
    /// `conn` has none).
    ///
    /// # Errors
    /// As [`SqlOutbox::publish`].
    pub async fn publish_batch(
        &self,
        conn: &mut D::Connection,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<(), EventError> {
        D::insert_outbox_rows(&self.settings, conn, topic, events).await
    }
}

/// The outbox table named `table`. `seq` never repeats, so delivered rows
/// can be deleted by it; `created_at` is when the row was written (on
/// SQLite Unix milliseconds from the outbox's clock, written explicitly: a
/// tenant view has no column defaults).
pub(crate) fn outbox_table_sql<D: Dialect>(table: &str) -> String {
    let (seq, uuid, text, created_at) = (D::SEQ_KEY, D::UUID, D::TEXT, D::CREATED_AT);
    format!(
        "CREATE TABLE IF NOT EXISTS \"{table}\" (\
         seq {seq}, \
         tenant_id {uuid}, \
         topic {text} NOT NULL, \
         event {text} NOT NULL, \
         created_at {created_at})"
    )
}

/// A [`Publisher`] over an outbox that opens its own transaction per call,
/// for code that has no transaction of its own (and for the conformance
/// suite). Inside a business transaction use [`SqlOutbox::publish`]. Used
/// as [`PgOutboxPublisher`](crate::postgres::PgOutboxPublisher) or
/// [`SqliteOutboxPublisher`](crate::sqlite::SqliteOutboxPublisher).
pub struct SqlOutboxPublisher<D: SqlDialect> {
    outbox: SqlOutbox<D>,
    pool: Pool<D>,
}

impl<D: SqlDialect> SqlOutboxPublisher<D> {
    /// Publishes through `outbox` on connections from `pool`.
    pub fn new(outbox: SqlOutbox<D>, pool: Pool<D>) -> Self {
        Self { outbox, pool }
    }
}

// By hand: derives would ask `D: Clone + Debug`.
impl<D: SqlDialect> Clone for SqlOutboxPublisher<D> {
    fn clone(&self) -> Self {
        Self {
            outbox: self.outbox.clone(),
            pool: self.pool.clone(),
        }
    }
}

impl<D: SqlDialect> fmt::Debug for SqlOutboxPublisher<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(&format!("{}OutboxPublisher", D::PREFIX))
            .field("outbox", &self.outbox)
            .field("pool", &self.pool)
            .finish()
    }
}

#[async_trait]
impl<D: SqlDialect> Publisher for SqlOutboxPublisher<D> {
    async fn publish(&self, topic: &str, event: Event) -> Result<(), EventError> {
        self.publish_batch(topic, vec![event]).await
    }

    async fn publish_batch(&self, topic: &str, events: Vec<Event>) -> Result<(), EventError> {
        let mut conn = self.pool.acquire().await.map_err(D::error)?;
        let mut tx = D::begin_write_on(&mut conn).await.map_err(D::error)?;
        self.outbox.publish_batch(&mut tx, topic, events).await?;
        tx.commit().await.map_err(D::error)
    }

    fn capabilities(&self) -> Capabilities {
        self.outbox.settings.capabilities()
    }
}
