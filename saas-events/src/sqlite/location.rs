//! Where SQLite outbox tables live, as the relay sees them.

use std::fmt;

use std::sync::Arc;

use async_trait::async_trait;
use saas_core::TenantId;
use sqlx::{Sqlite, SqlitePool};

use crate::error::EventError;
use crate::pool_lease::{LeasedPool, PoolSource, Reach};
use crate::sql::DEFAULT_OUTBOX_TABLE;
use crate::sql_ident::check_ident;

/// One outbox table the relay drains: a pool on the database file that
/// may read and delete every row of it (unscoped: a tenant view must not
/// hide rows from the relay), the table's name in that file, and — for a
/// file that belongs to one tenant — that tenant.
#[derive(Clone)]
pub struct OutboxLocation {
    name: String,
    reach: Reach<Sqlite>,
    table: String,
    tenant: Option<TenantId>,
}

impl OutboxLocation {
    /// A location named `name` (for logs and metrics), reached through
    /// `pool`, holding [`DEFAULT_OUTBOX_TABLE`].
    pub fn new(name: impl Into<String>, pool: SqlitePool) -> Self {
        Self::reached(name, Reach::Pool(pool))
    }

    /// A location whose pool is lent by `source` for each relay pass and
    /// given back after it (a tenant file's pool from a tenancy's pool
    /// registry, so the relay stays within its connection budget).
    pub fn lent(name: impl Into<String>, source: Arc<dyn PoolSource<Sqlite>>) -> Self {
        Self::reached(name, Reach::Lent(source))
    }

    fn reached(name: impl Into<String>, reach: Reach<Sqlite>) -> Self {
        Self {
            name: name.into(),
            reach,
            table: DEFAULT_OUTBOX_TABLE.to_owned(),
            tenant: None,
        }
    }

    /// Reads another table: the physical table behind a tenant view in a
    /// shared file (`saas_events_outbox_rows`), for example.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] unless it is a lowercase SQL identifier.
    pub fn with_table(mut self, table: &str) -> Result<Self, EventError> {
        check_ident(table, "a table must be a lowercase SQL identifier")?;
        self.table = table.to_owned();
        Ok(self)
    }

    /// Declares the file one tenant's (a database tenant): the relay
    /// stamps `tenant` on tenant-less events and refuses to forward an
    /// event claiming any other tenant.
    pub fn with_tenant(mut self, tenant: TenantId) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// The location's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool to drain it with, for one pass: its own pool, or one lent
    /// by its [`PoolSource`]. Hold it only as long as the pass.
    ///
    /// # Errors
    /// The source's error (no budget left, a tenant that is gone).
    pub async fn lease(&self) -> Result<LeasedPool<Sqlite>, EventError> {
        self.reach.lease().await
    }

    /// The table read.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The tenant owning the whole file, if declared.
    pub fn tenant(&self) -> Option<TenantId> {
        self.tenant
    }

    /// The quoted table name.
    pub(crate) fn quoted(&self) -> String {
        format!("\"{}\"", self.table)
    }
}

impl fmt::Debug for OutboxLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxLocation")
            .field("name", &self.name)
            .field("table", &self.table)
            .field("tenant", &self.tenant)
            .field("reach", &self.reach)
            .finish()
    }
}

/// The set of outbox tables a relay drains, asked for again on every pass
/// so tenants provisioned later are picked up.
///
/// A host implements it from its tenant catalog: the shared file once for
/// all row tenants, each database tenant's file with its tenant. Keep the
/// pools between calls (open one per file once), since this runs on every
/// pass.
#[async_trait]
pub trait OutboxLocations: Send + Sync + fmt::Debug {
    /// The current locations.
    async fn locations(&self) -> Result<Vec<OutboxLocation>, EventError>;
}

/// A fixed list of locations.
#[derive(Debug, Clone, Default)]
pub struct StaticLocations(pub Vec<OutboxLocation>);

#[async_trait]
impl OutboxLocations for StaticLocations {
    async fn locations(&self) -> Result<Vec<OutboxLocation>, EventError> {
        Ok(self.0.clone())
    }
}
