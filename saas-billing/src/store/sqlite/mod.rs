//! SQLite stores (feature `sqlite`), on a [`SqlitePool`].
//!
//! The tables mirror the PostgreSQL ones (see [`super::postgres`]) in
//! SQLite's types, as `STRICT` tables. Tenant ids are `TenantId`'s own
//! sqlx encoding, a 16-byte `BLOB`, as saas-tenancy and saas-events store
//! them, so joins across the crates' tables match (bind a `TenantId`,
//! never its text). Subscription and invoice ids (this crate's own, with
//! no sqlx encoding) and exact decimals are `TEXT` (never `REAL`);
//! instants fixed-width RFC 3339 text with nanoseconds (which sorts like
//! the instant); usage times Unix seconds plus nanoseconds. The usage
//! table's `UNIQUE (tenant_id, idempotency_key)` is the idempotency
//! check; an index `(tenant_id, subscription_id, billed_in, sequence)`
//! serves invoicing and `(tenant_id, occurred_at)` time ranges. Writes
//! that read first (ingestion, sealing, invoice changes) run in `BEGIN
//! IMMEDIATE` transactions, which SQLite serializes, so sealing and
//! ingestion never interleave; a batch is inserted by one `INSERT …
//! SELECT FROM json_each(?) ON CONFLICT DO NOTHING RETURNING`, its tenant
//! ids carried as hex and `unhex`ed, which needs SQLite 3.41 or later (the
//! `sqlite` feature links sqlx's bundled SQLite, newer). A trigger
//! refuses changes to finalized invoices. The schema is versioned: see
//! [`SqliteBillingStores::migrate`].
//!
//! Use a file database in WAL mode with a busy timeout for several
//! connections; an in-memory database (`sqlite::memory:`) exists per
//! connection, so give its pool a single connection.

mod coupons;
mod dialect;
mod invoices;
mod migrations;
mod subscriptions;
mod usage;

pub use coupons::SqliteCouponStore;
pub use invoices::SqliteInvoiceStore;
pub use subscriptions::SqliteSubscriptionStore;
pub use usage::SqliteUsageStore;

use std::sync::Arc;

use sqlx::SqlitePool;

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

/// On a connection: a savepoint when it is in a transaction already (the
/// caller's: whether that holds the write lock is the caller's choice),
/// else a write transaction as [`begin_write`].
pub(crate) async fn begin_write_on(
    conn: &mut sqlx::SqliteConnection,
) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>, BillingError> {
    use sqlx::Connection;
    if conn.is_in_transaction() {
        conn.begin().await.map_err(db_error)
    } else {
        conn.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)
    }
}

/// The SQLite stores on one pool, and their migration.
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

    /// The schema version [`migrate`](Self::migrate) brings a database to.
    pub const SCHEMA_VERSION: i64 = migrations::LATEST;

    /// Brings the schema to [`SCHEMA_VERSION`](Self::SCHEMA_VERSION):
    /// applies, in order, the migrations the database has not recorded in
    /// `billing_schema_migrations`, in one write transaction (all or
    /// nothing). Idempotent. A database created before the ledger existed
    /// is migrated too: its tenant ids, stored as text then, are converted
    /// to BLOBs, every row kept.
    ///
    /// # Errors
    /// `Backend` if SQLite fails, if the database records a newer schema
    /// than this version of the crate knows, or if a stored tenant id is
    /// not a UUID (nothing is changed then).
    pub async fn migrate(&self) -> Result<(), BillingError> {
        migrations::migrate_to(&self.pool, Self::SCHEMA_VERSION)
            .await
            .map(drop)
    }

    /// Applies the migrations up to `version` only (for a staged rollout,
    /// or to build an older schema in a test), like
    /// [`migrate`](Self::migrate) otherwise; returns the version the
    /// database is at, which is never lowered (there are no down
    /// migrations). The stores need [`SCHEMA_VERSION`](Self::SCHEMA_VERSION).
    ///
    /// # Errors
    /// `InvalidInput` if `version` is not between 1 and
    /// [`SCHEMA_VERSION`](Self::SCHEMA_VERSION); otherwise as
    /// [`migrate`](Self::migrate).
    pub async fn migrate_to(&self, version: i64) -> Result<i64, BillingError> {
        migrations::migrate_to(&self.pool, version).await
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

    /// The coupon store.
    pub fn coupons(&self) -> SqliteCouponStore {
        SqliteCouponStore::new(self.pool.clone())
    }

    /// The stores, ready for [`BillingEngine::new`](crate::BillingEngine::new).
    pub fn billing_stores(&self) -> BillingStores {
        BillingStores {
            subscriptions: Arc::new(self.subscriptions()),
            usage: Arc::new(self.usage()),
            invoices: Arc::new(self.invoices()),
            coupons: Arc::new(self.coupons()),
        }
    }
}
