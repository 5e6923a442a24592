//! What the PostgreSQL and SQLite inboxes share: the router handler that
//! opens a transaction, claims the event and runs the inner handler in
//! it. Each backend supplies only how its transaction begins and its
//! claim statement ([`InboxStore`]).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{Database, Pool, Transaction};

use crate::envelope::Event;
use crate::error::EventError;
use crate::middleware::{InboxClaim, TxHandler};
use crate::router::{Handler, ReceivedEvent};

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
    /// `consumer` must already be a valid name.
    pub(crate) fn new(
        inbox: S,
        consumer: &str,
        pool: Pool<DB>,
        inner: Arc<dyn TxHandler<DB::Connection>>,
    ) -> Self {
        Self {
            inbox,
            consumer: consumer.into(),
            pool,
            inner,
        }
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
