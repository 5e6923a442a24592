//! Where outbox tables live, as the relay sees them.

use std::fmt;

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{PgPool, Postgres};

use crate::error::EventError;
use crate::pool_lease::{LeasedPool, PoolSource, Reach};

pub(crate) use crate::sql_ident::check_ident;

/// One outbox table the relay drains: a pool that may read and delete
/// every row of it (an owner or admin role, or a tenant database's own
/// runtime role — row-level security must not hide rows from the relay),
/// and the schema holding it.
#[derive(Clone)]
pub struct OutboxLocation {
    name: String,
    reach: Reach<Postgres>,
    schema: Option<String>,
}

impl OutboxLocation {
    /// A location named `name` (for logs and metrics), reached through
    /// `pool`, whose table lives in `schema` (`None`: the pool's
    /// `search_path` decides, e.g. `public` of a tenant database).
    ///
    /// # Errors
    /// [`EventError::InvalidName`] if `schema` is not a lowercase SQL
    /// identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes).
    pub fn new(
        name: impl Into<String>,
        pool: PgPool,
        schema: Option<String>,
    ) -> Result<Self, EventError> {
        Self::reached(name, Reach::Pool(pool), schema)
    }

    /// A location whose pool is lent by `source` for each relay pass and
    /// given back after it (a tenant database's pool from a tenancy's
    /// pool registry, so the relay stays within its connection budget).
    ///
    /// # Errors
    /// As [`OutboxLocation::new`].
    pub fn lent(
        name: impl Into<String>,
        source: Arc<dyn PoolSource<Postgres>>,
        schema: Option<String>,
    ) -> Result<Self, EventError> {
        Self::reached(name, Reach::Lent(source), schema)
    }

    fn reached(
        name: impl Into<String>,
        reach: Reach<Postgres>,
        schema: Option<String>,
    ) -> Result<Self, EventError> {
        if let Some(schema) = &schema {
            check_ident(schema, "a schema must be a lowercase SQL identifier")?;
        }
        Ok(Self {
            name: name.into(),
            reach,
            schema,
        })
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
    pub async fn lease(&self) -> Result<LeasedPool<Postgres>, EventError> {
        self.reach.lease().await
    }

    /// The location's own pool, if it has one (not lent per pass).
    pub(crate) fn own_pool(&self) -> Option<&PgPool> {
        match &self.reach {
            Reach::Pool(pool) => Some(pool),
            Reach::Lent(_) => None,
        }
    }

    /// The schema, if given.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The quoted, schema-qualified table name.
    pub(crate) fn qualified(&self, table: &str) -> String {
        match &self.schema {
            Some(schema) => format!("\"{schema}\".\"{table}\""),
            None => format!("\"{table}\""),
        }
    }
}

impl fmt::Debug for OutboxLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxLocation")
            .field("name", &self.name)
            .field("schema", &self.schema)
            .field("reach", &self.reach)
            .finish()
    }
}

/// The set of outbox tables a relay drains, asked for again on every pass
/// so tenants provisioned later are picked up.
///
/// A host with tenants in several placements implements it from its tenant
/// catalog: the shared schema once for all row tenants, each schema
/// tenant's schema, each database tenant's database.
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
