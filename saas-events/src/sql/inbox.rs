//! The SQL inbox: an idempotent consumer recorded in the handler's own
//! transaction, on PostgreSQL and SQLite.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::SharedClock;
use sqlx::{Pool, Transaction};

use super::SqlDialect;
use super::dialect::Param;
use crate::envelope::Event;
use crate::error::EventError;
use crate::inbox_core::{InboxHandler, InboxSettings, InboxStore, claim_outcome};
use crate::middleware::{InboxClaim, TxHandler};

/// The inbox table's default name.
pub const DEFAULT_INBOX_TABLE: &str = "saas_events_inbox";

/// Records which events each consumer has processed, keyed by consumer,
/// tenant (the nil UUID for tenant-less events, which no tenant id can
/// be) and event id. Used as [`PgInbox`](crate::postgres::PgInbox) or
/// [`SqliteInbox`](crate::sqlite::SqliteInbox).
///
/// [`SqlInbox::claim`] inserts the record in the caller's transaction with
/// `ON CONFLICT DO NOTHING`: the record commits with the handler's writes
/// or not at all. A concurrent duplicate waits until the first
/// transaction ends, then it is a duplicate (the first committed) or runs
/// (the first rolled back): on PostgreSQL it waits on the key; on SQLite,
/// which has one writer per file, for the write lock (busy timeout).
///
/// On SQLite keep the inbox a plain table, also in a saas-tenancy shared
/// file (not a tenant table): a tenant view's triggers hide whether the
/// insert happened, and the tenant is part of the key anyway.
///
/// ```no_run
/// use saas_events::middleware::InboxClaim;
/// use saas_events::sqlite::SqliteInbox;
/// use saas_events::router::ReceivedEvent;
///
/// # async fn handle(pool: sqlx::SqlitePool, event: ReceivedEvent) -> Result<(), Box<dyn std::error::Error>> {
/// let inbox = SqliteInbox::new(); // `PgInbox::new()` on a `PgPool` alike
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
pub struct SqlInbox<D: SqlDialect> {
    settings: InboxSettings,
    dialect: PhantomData<fn() -> D>,
}

// By hand: a derive would ask `D: Clone`.
impl<D: SqlDialect> Clone for SqlInbox<D> {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.clone(),
            dialect: PhantomData,
        }
    }
}

impl<D: SqlDialect> Default for SqlInbox<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: SqlDialect> fmt::Debug for SqlInbox<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings.debug(f, &format!("{}Inbox", D::PREFIX))
    }
}

impl<D: SqlDialect> SqlInbox<D> {
    /// An inbox in [`DEFAULT_INBOX_TABLE`] on the system clock.
    pub fn new() -> Self {
        Self {
            settings: InboxSettings::new(DEFAULT_INBOX_TABLE),
            dialect: PhantomData,
        }
    }

    /// Uses another table (on PostgreSQL unqualified: it resolves through
    /// the connection's `search_path`).
    ///
    /// # Errors
    /// [`EventError::InvalidName`] unless it is a lowercase SQL identifier.
    pub fn with_table(mut self, table: &str) -> Result<Self, EventError> {
        self.settings.set_table(table)?;
        Ok(self)
    }

    /// Sets the clock stamping `processed_at` (Unix milliseconds on
    /// SQLite).
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
        let (text, uuid, instant) = (D::TEXT, D::UUID, D::INSTANT);
        format!(
            "CREATE TABLE IF NOT EXISTS \"{t}\" (\
             consumer {text} NOT NULL, \
             tenant_id {uuid} NOT NULL, \
             event_id {text} NOT NULL, \
             processed_at {instant} NOT NULL, \
             PRIMARY KEY (consumer, tenant_id, event_id)); \
             CREATE INDEX IF NOT EXISTS \"{t}_processed_at\" ON \"{t}\" (processed_at)"
        )
    }

    /// Runs [`SqlInbox::create_table_sql`] on `conn`.
    ///
    /// # Errors
    /// A database error.
    pub async fn create_table(&self, conn: &mut D::Connection) -> Result<(), EventError> {
        D::execute_raw(conn, self.create_table_sql())
            .await
            .map_err(D::error)
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
        conn: &mut D::Connection,
        consumer: &str,
        event: &Event,
    ) -> Result<InboxClaim, EventError> {
        let row = self.settings.claim_row(consumer, event)?;
        let sql = self.claim_sql();
        let params = vec![
            Param::Text(consumer.to_owned()),
            Param::Uuid(row.tenant),
            Param::Text(event.id().to_owned()),
            Param::Int(row.processed_at),
        ];
        let inserted = D::execute(conn, sql, params).await.map_err(D::error)?;
        Ok(claim_outcome(inserted))
    }

    /// Deletes records processed before `cutoff`; returns how many.
    ///
    /// # Errors
    /// A database error.
    pub async fn purge_before(
        &self,
        conn: &mut D::Connection,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, EventError> {
        D::execute(
            conn,
            self.purge_sql(),
            vec![Param::Int(cutoff.timestamp_millis())],
        )
        .await
        .map_err(D::error)
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
        pool: Pool<D>,
        handler: impl TxHandler<D::Connection> + 'static,
    ) -> Result<SqlInboxHandler<D>, EventError> {
        InboxHandler::new(self.clone(), consumer, pool, Arc::new(handler))
    }
}

impl<D: SqlDialect> SqlInbox<D> {
    /// The claim's statement: consumer, tenant, event id, milliseconds.
    pub(super) fn claim_sql(&self) -> String {
        format!(
            "INSERT INTO \"{}\" (consumer, tenant_id, event_id, processed_at) \
             VALUES ({}, {}, {}, {}) ON CONFLICT DO NOTHING",
            self.settings.table,
            D::param(1),
            D::param(2),
            D::param(3),
            D::millis_param(4),
        )
    }

    /// The purge's statement: the cutoff in milliseconds.
    pub(super) fn purge_sql(&self) -> String {
        format!(
            "DELETE FROM \"{}\" WHERE processed_at < {}",
            self.settings.table,
            D::millis_param(1),
        )
    }
}

/// See [`SqlInbox::handler`].
pub type SqlInboxHandler<D> = InboxHandler<SqlInbox<D>, D>;

#[async_trait]
impl<D: SqlDialect> InboxStore for SqlInbox<D> {
    type Db = D;

    async fn begin(pool: &Pool<D>) -> Result<Transaction<'static, D>, EventError> {
        // On SQLite the write lock up front: the claim is a write, and a
        // deferred transaction upgrading later can fail with SQLITE_BUSY.
        D::begin_write(pool).await.map_err(D::error)
    }

    async fn claim_in(
        &self,
        conn: &mut D::Connection,
        consumer: &str,
        event: &Event,
    ) -> Result<InboxClaim, EventError> {
        self.claim(conn, consumer, event).await
    }

    fn db_error(error: sqlx::Error) -> EventError {
        D::error(error)
    }
}
