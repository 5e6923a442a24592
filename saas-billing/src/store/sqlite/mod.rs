//! SQLite stores (feature `sqlite`), on a [`SqlitePool`].
//!
//! The tables mirror the PostgreSQL ones (see [`super::postgres`]) in
//! SQLite's types, as `STRICT` tables: UUIDs and exact decimals as `TEXT`
//! (never `REAL`), instants as fixed-width RFC 3339 text with nanoseconds
//! (which sorts like the instant), usage times as Unix seconds plus
//! nanoseconds. The usage table's `UNIQUE (tenant_id, idempotency_key)` is
//! the idempotency check; an index `(tenant_id, subscription_id,
//! billed_in, sequence)` serves invoicing and `(tenant_id, occurred_at)`
//! time ranges. Writes that read first (ingestion, sealing, invoice
//! changes) run in `BEGIN IMMEDIATE` transactions, which SQLite
//! serializes, so sealing and ingestion never interleave; a batch is
//! inserted by one `INSERT … SELECT FROM json_each(?) ON CONFLICT DO
//! NOTHING RETURNING`. A trigger refuses changes to finalized invoices.
//!
//! Use a file database in WAL mode with a busy timeout for several
//! connections; an in-memory database (`sqlite::memory:`) exists per
//! connection, so give its pool a single connection.

mod invoices;
mod subscriptions;
mod usage;

pub use invoices::SqliteInvoiceStore;
pub use subscriptions::SqliteSubscriptionStore;
pub use usage::SqliteUsageStore;

use std::sync::Arc;

use sqlx::{Executor, SqlitePool};

use crate::engine::BillingStores;
use crate::error::BillingError;

pub(crate) const BACKEND: &str = "sqlite";

pub(crate) fn db_error(error: sqlx::Error) -> BillingError {
    super::sql::backend_error(BACKEND, error)
}

/// Starts a write transaction that holds SQLite's write lock from the
/// start (no deadlock upgrading a read lock).
pub(crate) async fn begin_write(
    pool: &SqlitePool,
) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, BillingError> {
    pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)
}

const MIGRATION: &str = r#"
CREATE TABLE IF NOT EXISTS billing_subscriptions (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    created_at TEXT NOT NULL,
    next_due_at TEXT,
    state TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS billing_subscriptions_tenant_idx
    ON billing_subscriptions (tenant_id, created_at, id);
CREATE INDEX IF NOT EXISTS billing_subscriptions_due_idx
    ON billing_subscriptions (next_due_at, id) WHERE next_due_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS billing_usage_events (
    sequence INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    meter TEXT NOT NULL,
    value TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    occurred_nanos INTEGER NOT NULL,
    properties TEXT NOT NULL,
    period INTEGER NOT NULL,
    billed_in INTEGER NOT NULL CHECK (billed_in >= period),
    UNIQUE (tenant_id, idempotency_key)
) STRICT;
CREATE INDEX IF NOT EXISTS billing_usage_events_billing_idx
    ON billing_usage_events (tenant_id, subscription_id, billed_in, sequence);
CREATE INDEX IF NOT EXISTS billing_usage_events_time_idx
    ON billing_usage_events (tenant_id, occurred_at);

CREATE TABLE IF NOT EXISTS billing_usage_seals (
    tenant_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    sealed_through INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS billing_invoices (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    period_index INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'finalized')),
    currency TEXT NOT NULL,
    total TEXT NOT NULL,
    created_at TEXT NOT NULL,
    finalize_after TEXT NOT NULL,
    finalized_at TEXT,
    body TEXT NOT NULL,
    UNIQUE (subscription_id, period_index)
) STRICT;
CREATE INDEX IF NOT EXISTS billing_invoices_drafts_idx
    ON billing_invoices (finalize_after, id) WHERE status = 'draft';

CREATE TRIGGER IF NOT EXISTS billing_invoices_immutable
    BEFORE UPDATE ON billing_invoices WHEN OLD.status = 'finalized'
BEGIN
    SELECT RAISE(ABORT, 'invoice is finalized');
END;
CREATE TRIGGER IF NOT EXISTS billing_invoices_undeletable
    BEFORE DELETE ON billing_invoices WHEN OLD.status = 'finalized'
BEGIN
    SELECT RAISE(ABORT, 'invoice is finalized');
END;
"#;

/// The three SQLite stores on one pool, and their migration.
///
/// ```no_run
/// use std::str::FromStr;
/// use saas_billing::store::sqlite::SqliteBillingStores;
/// use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let options = SqliteConnectOptions::from_str("sqlite://billing.db")?
///     .create_if_missing(true)
///     .journal_mode(SqliteJournalMode::Wal);
/// let stores = SqliteBillingStores::new(SqlitePool::connect_with(options).await?);
/// stores.migrate().await?;
/// let stores = stores.billing_stores(); // for `BillingEngine::new`
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteBillingStores {
    pool: SqlitePool,
}

impl SqliteBillingStores {
    /// Stores on `pool`.
    pub fn new(pool: SqlitePool) -> SqliteBillingStores {
        SqliteBillingStores { pool }
    }

    /// Creates the tables, indexes and triggers if they do not exist.
    /// Idempotent; runs in one write transaction.
    ///
    /// # Errors
    /// `Backend` if SQLite fails.
    pub async fn migrate(&self) -> Result<(), BillingError> {
        let mut tx = begin_write(&self.pool).await?;
        tx.execute(MIGRATION).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The subscription store.
    pub fn subscriptions(&self) -> SqliteSubscriptionStore {
        SqliteSubscriptionStore::new(self.pool.clone())
    }

    /// The usage store.
    pub fn usage(&self) -> SqliteUsageStore {
        SqliteUsageStore::new(self.pool.clone())
    }

    /// The invoice store.
    pub fn invoices(&self) -> SqliteInvoiceStore {
        SqliteInvoiceStore::new(self.pool.clone())
    }

    /// The three stores, ready for [`BillingEngine::new`](crate::BillingEngine::new).
    pub fn billing_stores(&self) -> BillingStores {
        BillingStores {
            subscriptions: Arc::new(self.subscriptions()),
            usage: Arc::new(self.usage()),
            invoices: Arc::new(self.invoices()),
        }
    }
}
