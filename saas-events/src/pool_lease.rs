//! Pools a relay borrows for one pass: how an outbox location reaches a
//! database whose connections are budgeted elsewhere (a tenant database
//! whose pool the tenancy's registry opens, evicts and closes).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{Database, Pool};

use crate::error::EventError;

/// A pool lent for one relay pass, with whatever keeps it open (a tenancy
/// registry's lease, which stops the registry from evicting the pool while
/// the pass runs). Dropping it gives the pool back.
pub struct LeasedPool<DB: Database> {
    pool: Pool<DB>,
    hold: Option<Box<dyn Send + Sync>>,
}

impl<DB: Database> LeasedPool<DB> {
    /// `pool`, kept open by nobody but its own handle.
    pub fn new(pool: Pool<DB>) -> Self {
        Self { pool, hold: None }
    }

    /// `pool`, kept open while `hold` lives: `hold` is dropped with the
    /// lease, after the pass is done with the pool.
    pub fn holding(pool: Pool<DB>, hold: impl Send + Sync + 'static) -> Self {
        Self {
            pool,
            hold: Some(Box::new(hold)),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }
}

impl<DB: Database> Deref for LeasedPool<DB> {
    type Target = Pool<DB>;

    fn deref(&self) -> &Pool<DB> {
        &self.pool
    }
}

impl<DB: Database> fmt::Debug for LeasedPool<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeasedPool")
            .field("held", &self.hold.is_some())
            .finish_non_exhaustive()
    }
}

/// Lends a pool on one outbox's database for the length of a relay pass.
///
/// A relay asks for the pool only when it drains the location and gives
/// it back right after, so a relay over many tenant databases holds at
/// most one of their pools at a time — within the connection budget of
/// whoever owns those pools (a tenancy's pool registry), however many
/// databases there are.
#[async_trait]
pub trait PoolSource<DB: Database>: Send + Sync + fmt::Debug {
    /// A pool for one pass.
    ///
    /// # Errors
    /// Whatever stops the pool from being lent: no budget left within the
    /// owner's wait, a tenant that is gone. The relay counts the location
    /// as failed for this pass and tries again on the next.
    async fn lease(&self) -> Result<LeasedPool<DB>, EventError>;
}

/// How a location reaches its database: a pool of its own, or one lent
/// per pass.
pub(crate) enum Reach<DB: Database> {
    Pool(Pool<DB>),
    Lent(Arc<dyn PoolSource<DB>>),
}

// By hand: a derive would ask `DB: Clone`.
impl<DB: Database> Clone for Reach<DB> {
    fn clone(&self) -> Self {
        match self {
            Reach::Pool(pool) => Reach::Pool(pool.clone()),
            Reach::Lent(source) => Reach::Lent(Arc::clone(source)),
        }
    }
}

impl<DB: Database> Reach<DB> {
    /// The pool for one pass.
    pub(crate) async fn lease(&self) -> Result<LeasedPool<DB>, EventError> {
        match self {
            Reach::Pool(pool) => Ok(LeasedPool::new(pool.clone())),
            Reach::Lent(source) => source.lease().await,
        }
    }
}

impl<DB: Database> fmt::Debug for Reach<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reach::Pool(_) => f.write_str("Pool"),
            Reach::Lent(source) => f.debug_tuple("Lent").field(source).finish(),
        }
    }
}
