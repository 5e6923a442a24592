//! The whole foundation on one database, opened in one call: the tenant
//! catalog, the billing tables and the tenancy, migrated and set up, with
//! the outbox relay over every tenant's outbox and everything registered
//! to stop cleanly — what every host otherwise writes at startup.
//!
//! A stack owns the wiring, not the app: the app's tables and migrations,
//! tenant tables and pool limits go in through the tenancy builder (the
//! `configure` argument of `open`), its price list into the billing engine
//! it builds with [`Stack::billing_engine`], its consumers onto the bus the relay
//! feeds. [`Stack`] is one type over both databases (`PgStack`,
//! `SqliteStack`), so the code after `open` is written once.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use saas_billing::{BillingEngine, BillingError, BillingStores, Catalog};
use saas_core::{ErrorKind, SharedClock, TenantId};
use saas_events::{Event, EventError, Publisher};
use saas_tenancy::{ClusterName, DynCatalog, Tenancy, TenancyError};

use crate::services::Services;

mod in_process;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use in_process::InProcess;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PgStack;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteStack;

/// A backend's sqlx connection, what scoped transactions deref to.
pub type Connection<T> = <<T as Tenancy>::Database as sqlx::Database>::Connection;

/// What a [`Stack`] does its own way on each database: implemented by
/// `PgTenancy` and `SqliteTenancy`, and sealed — a stack opens only on
/// them.
#[async_trait]
pub trait StackBackend: Tenancy + Sized + private::Sealed {
    /// Where the stack keeps the catalog and billing tables: the
    /// administrator pool on PostgreSQL, the directory of files on SQLite.
    type Home: fmt::Debug + Clone + Send + Sync + 'static;
    /// The transactional outbox the stack's relay reads.
    type Outbox: fmt::Debug + Clone + Default + Send + Sync + 'static;
    /// The relay's settings.
    type RelayConfig: Default + Send + 'static;

    /// Writes `event` to the outbox in `conn`'s transaction.
    async fn publish(
        outbox: &Self::Outbox,
        conn: &mut Connection<Self>,
        topic: &str,
        event: Event,
    ) -> Result<(), EventError>;

    /// Makes the transactions that call it for `tenant` run one at a time
    /// (until they end), for a check-then-write a concurrent one must not
    /// interleave with: a count against a plan's limit, then an insert.
    async fn serialize_writes(
        conn: &mut Connection<Self>,
        tenant: TenantId,
    ) -> Result<(), TenancyError>;

    /// Starts the relay of every tenant's outbox into `sink`.
    fn start_relay(
        stack: &Stack<Self>,
        sink: Arc<dyn Publisher>,
        config: Self::RelayConfig,
        services: &mut Services,
    );

    /// Where the data is, for a startup message (never a password).
    fn describe(home: &Self::Home) -> String;
}

mod private {
    pub trait Sealed {}
    #[cfg(feature = "postgres")]
    impl Sealed for saas_tenancy::postgres::PgTenancy {}
    #[cfg(feature = "sqlite")]
    impl Sealed for saas_tenancy::sqlite::SqliteTenancy {}
}

/// The foundation on one database: catalog, billing stores, the tenancy
/// and its outbox. Opened by `PgStack::open` or `SqliteStack::open`; the
/// rest of its API is the same on both, so host code written for
/// `Stack<T>` runs on either.
///
/// ```no_run
/// use saas_core::TenantContext;
/// use saas_events::Event;
/// use saas_foundation::stack::{Stack, StackBackend};
/// use saas_tenancy::{Tenancy, TenantTransaction};
///
/// /// Publishes `event` in a transaction of its own, on either database.
/// async fn announce<T: StackBackend>(
///     stack: &Stack<T>,
///     ctx: &TenantContext,
///     event: Event,
/// ) -> Result<(), Box<dyn std::error::Error>> {
///     let mut tx = stack.tenancy().begin_for_write(ctx).await?;
///     stack.serialize_writes(&mut tx, ctx.tenant_id()).await?;
///     stack.publish(&mut tx, "app.changes", event).await?;
///     tx.commit().await?;
///     Ok(())
/// }
/// ```
pub struct Stack<T: StackBackend> {
    home: T::Home,
    catalog: DynCatalog,
    tenancy: Arc<T>,
    billing: BillingStores,
    cluster: ClusterName,
    outbox: T::Outbox,
}

impl<T: StackBackend> Stack<T> {
    /// Starts the outbox relay over every tenant's outbox into `sink`,
    /// registered with `services`: start the sink's consumers before, so
    /// it stops before them.
    pub fn start_relay(
        &self,
        sink: Arc<dyn Publisher>,
        config: T::RelayConfig,
        services: &mut Services,
    ) {
        T::start_relay(self, sink, config, services);
    }

    /// Writes `event` to the stack's outbox in `conn`'s transaction (a
    /// scoped transaction derefs to it): it is relayed if and only if the
    /// transaction commits.
    ///
    /// # Errors
    /// [`EventError`]: an event over the outbox's size limit, or the
    /// database's error.
    pub async fn publish(
        &self,
        conn: &mut Connection<T>,
        topic: &str,
        event: Event,
    ) -> Result<(), EventError> {
        T::publish(&self.outbox, conn, topic, event).await
    }

    /// Makes `conn`'s transaction the only one of `tenant`'s, among those
    /// that call this, until it ends — on PostgreSQL a transaction-scoped
    /// advisory lock; on SQLite nothing, as a transaction begun with
    /// [`Tenancy::begin_for_write`] already holds the file's write lock.
    /// Begin the transaction with `begin_for_write` (on SQLite a deferred
    /// one would fail with "database is locked" instead of waiting) and
    /// call this first in it.
    ///
    /// # Errors
    /// The database's error.
    pub async fn serialize_writes(
        &self,
        conn: &mut Connection<T>,
        tenant: TenantId,
    ) -> Result<(), TenancyError> {
        T::serialize_writes(conn, tenant).await
    }

    /// The tenant catalog.
    pub fn catalog(&self) -> &DynCatalog {
        &self.catalog
    }

    /// The tenancy.
    pub fn tenancy(&self) -> &Arc<T> {
        &self.tenancy
    }

    /// The billing stores, for the app's `BillingEngine`.
    pub fn billing(&self) -> BillingStores {
        self.billing.clone()
    }

    /// The app's billing engine over the stack's billing stores, with the
    /// entitlements of the subscriptions already stored loaded (a
    /// restarted server enforces the same limits and quotas as the one
    /// before it; see `BillingEngine::restore_entitlements`).
    ///
    /// # Errors
    /// [`BillingError`]: the store failing, a stored subscription on a
    /// plan version missing from `catalog`.
    pub async fn billing_engine(
        &self,
        catalog: Catalog,
        clock: SharedClock,
    ) -> Result<BillingEngine, BillingError> {
        let engine = BillingEngine::new(Arc::new(catalog), self.billing(), clock);
        engine.restore_entitlements().await?;
        Ok(engine)
    }

    /// The cluster new tenants are placed on (`main` on PostgreSQL,
    /// `local` on SQLite).
    pub fn cluster(&self) -> &ClusterName {
        &self.cluster
    }

    /// The outbox [`Stack::publish`] writes to and the relay reads.
    pub fn outbox(&self) -> &T::Outbox {
        &self.outbox
    }

    /// Where the data is, for a startup message: the server and database
    /// (no password), or the directory.
    pub fn describe(&self) -> String {
        T::describe(&self.home)
    }
}

impl<T: StackBackend> Clone for Stack<T> {
    fn clone(&self) -> Self {
        Stack {
            home: self.home.clone(),
            catalog: Arc::clone(&self.catalog),
            tenancy: Arc::clone(&self.tenancy),
            billing: self.billing.clone(),
            cluster: self.cluster.clone(),
            outbox: self.outbox.clone(),
        }
    }
}

impl<T: StackBackend> fmt::Debug for Stack<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("home", &self.home)
            .field("tenancy", &self.tenancy)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// Why a stack could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    /// The database could not be reached or a file created.
    #[error("cannot open the database: {0}; check the URL or directory and that it is reachable")]
    Database(#[from] sqlx::Error),
    /// A directory could not be created.
    #[error("cannot create the data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The catalog, the tenancy or its migrations failed.
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    /// The billing tables could not be migrated.
    #[error(transparent)]
    Billing(#[from] BillingError),
}

impl StackError {
    /// The workspace-wide kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StackError::Database(_) | StackError::Io(_) => ErrorKind::Unavailable,
            StackError::Tenancy(e) => e.kind(),
            StackError::Billing(e) => e.kind(),
        }
    }
}
