//! What the PostgreSQL and SQLite inboxes share: their settings (table,
//! clock), the key and outcome of a claim, and the router handler that
//! opens a transaction, claims the event and runs the inner handler in
//! it. Each backend supplies only how its transaction begins and its
//! claim statement ([`InboxStore`]).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use saas_core::{SharedClock, SystemClock};
use sqlx::{Database, Pool, Transaction};
use uuid::Uuid;

use crate::envelope::Event;
use crate::error::EventError;
use crate::middleware::{InboxClaim, TxHandler};
use crate::names::validate_name;
use crate::router::{Handler, ReceivedEvent};
use crate::sql_ident::check_ident;

/// An inbox's settings, behind each backend's validated setters.
#[derive(Clone)]
pub(crate) struct InboxSettings {
    pub(crate) table: String,
    pub(crate) clock: SharedClock,
}

impl InboxSettings {
    /// `table` (the backend's default) on the system clock.
    pub(crate) fn new(table: &str) -> Self {
        Self {
            table: table.to_owned(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses another table name.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] unless it is a lowercase SQL identifier.
    pub(crate) fn set_table(&mut self, table: &str) -> Result<(), EventError> {
        check_ident(table, "a table must be a lowercase SQL identifier")?;
        self.table = table.to_owned();
        Ok(())
    }

    /// The record `consumer` claims `event` with, after checking the
    /// consumer's name.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] for a bad consumer name.
    pub(crate) fn claim_row(&self, consumer: &str, event: &Event) -> Result<ClaimRow, EventError> {
        validate_name(consumer)?;
        Ok(ClaimRow {
            tenant: event.tenant_id().map_or(Uuid::nil(), |t| *t.as_uuid()),
            processed_at: self.clock.now().timestamp_millis(),
        })
    }

    /// The backend's `Debug`: the table under the inbox's type name.
    pub(crate) fn debug(&self, f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
        f.debug_struct(name)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// What a claim's record holds besides the consumer and the event id.
pub(crate) struct ClaimRow {
    /// The event's tenant, or the nil UUID (which no tenant id can be)
    /// for a tenant-less event.
    pub(crate) tenant: Uuid,
    /// When, in Unix milliseconds by the inbox's clock.
    pub(crate) processed_at: i64,
}

/// A claim's outcome from the rows its `INSERT … ON CONFLICT DO NOTHING`
/// wrote: one for a first claim, none for a duplicate.
pub(crate) fn claim_outcome(inserted: u64) -> InboxClaim {
    if inserted == 1 {
        InboxClaim::First
    } else {
        InboxClaim::Duplicate
    }
}

/// One backend's inbox, as the shared handler drives it.
#[async_trait]
pub(crate) trait InboxStore: Clone + fmt::Debug + Send + Sync + 'static {
    /// The database the inbox table lives in.
    type Db: Database;
    /// Opens the transaction a delivery is handled in.
    async fn begin(pool: &Pool<Self::Db>) -> Result<Transaction<'static, Self::Db>, EventError>;
    /// Records that `consumer` processes `event` in `conn`'s transaction.
    async fn claim_in(
        &self,
        conn: &mut <Self::Db as Database>::Connection,
        consumer: &str,
        event: &Event,
    ) -> Result<InboxClaim, EventError>;
    /// The backend's mapping of a database error.
    fn db_error(error: sqlx::Error) -> EventError;
}

/// A router [`Handler`] running its inner handler at most once per event
/// for one consumer (`S` is the backend's inbox, `DB` its database).
pub struct InboxHandler<S, DB: Database> {
    inbox: S,
    consumer: Arc<str>,
    pool: Pool<DB>,
    inner: Arc<dyn TxHandler<DB::Connection>>,
}

impl<S, DB: Database> InboxHandler<S, DB> {
    /// The handler of `consumer` over `inbox`, running `inner`.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] for a bad consumer name.
    pub(crate) fn new(
        inbox: S,
        consumer: &str,
        pool: Pool<DB>,
        inner: Arc<dyn TxHandler<DB::Connection>>,
    ) -> Result<Self, EventError> {
        validate_name(consumer)?;
        Ok(Self {
            inbox,
            consumer: consumer.into(),
            pool,
            inner,
        })
    }
}

impl<S: Clone, DB: Database> Clone for InboxHandler<S, DB> {
    fn clone(&self) -> Self {
        Self {
            inbox: self.inbox.clone(),
            consumer: Arc::clone(&self.consumer),
            pool: self.pool.clone(),
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: fmt::Debug, DB: Database> fmt::Debug for InboxHandler<S, DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboxHandler")
            .field("inbox", &self.inbox)
            .field("consumer", &self.consumer)
            .field("pool", &self.pool)
            .field("inner", &self.inner)
            .finish()
    }
}

#[async_trait]
impl<S: InboxStore<Db = DB>, DB: Database> Handler for InboxHandler<S, DB> {
    async fn handle(&self, event: ReceivedEvent) -> Result<(), EventError> {
        let mut tx = S::begin(&self.pool).await?;
        let claim = self
            .inbox
            .claim_in(&mut tx, &self.consumer, event.event())
            .await?;
        if claim == InboxClaim::Duplicate {
            tx.rollback().await.map_err(S::db_error)?;
            return Ok(());
        }
        if let Err(error) = self.inner.handle(&event, &mut tx).await {
            tx.rollback().await.map_err(S::db_error)?;
            return Err(error);
        }
        tx.commit().await.map_err(S::db_error)
    }
}
