//! Every tenant's outbox on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use saas_events::EventError;
use saas_events::postgres::{DEFAULT_OUTBOX_TABLE, OutboxLocation, OutboxLocations};
use saas_tenancy::Placement;
use saas_tenancy::postgres::PgTenancy;

use super::{Roster, TenantDatabase, tenancy_error};

/// The outboxes of every active tenant of a [`PgTenancy`], for a
/// [`saas_events::postgres::OutboxRelay`]:
///
/// - `shared:<cluster>` — the shared outbox of row tenants, once per
///   cluster, when the outbox table is one of the tenancy's declared tenant
///   tables; drained through the cluster's administrator pool (row-level
///   security must not hide rows from the relay);
/// - `schema:<cluster>:<tenant id>` — a schema tenant's outbox in its
///   schema, through the same pool;
/// - `database:<cluster>:<tenant id>` — a database tenant's outbox, through the
///   tenant's pool lent by the tenancy's pool registry for one pass at a
///   time ([`PgTenancy::lease_database_pool`]), so that draining ten
///   thousand tenant databases never holds more connections than the
///   registry's budget allows, and requests keep their share.
///
/// A relay remembers what it forwarded from each location by its name, as
/// sequence numbers of that location's table; the cluster is part of the
/// name so that a tenant moved to another server (whose outbox numbers
/// the moved rows from its own sequence) is a new location, never read or
/// deleted from with the old one's numbers.
///
/// ```no_run
/// # async fn run(tenancy: saas_tenancy::postgres::PgTenancy) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use saas_events::InMemoryBus;
/// use saas_events::postgres::{OutboxRelay, RelayConfig};
/// use saas_foundation::outboxes::PgTenantOutboxes;
///
/// let bus = InMemoryBus::new();
/// let relay = OutboxRelay::new(
///     Arc::new(PgTenantOutboxes::new(&tenancy)),
///     Arc::new(bus.clone()),
///     RelayConfig::default(),
/// )
/// .spawn();
/// // … serve …
/// relay.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PgTenantOutboxes {
    tenancy: PgTenancy,
    roster: Roster,
    table: String,
    extra: Vec<OutboxLocation>,
}

impl PgTenantOutboxes {
    /// The outboxes of `tenancy`'s tenants, in tables named
    /// [`DEFAULT_OUTBOX_TABLE`].
    pub fn new(tenancy: &PgTenancy) -> Self {
        Self {
            tenancy: tenancy.clone(),
            roster: Roster::new(Arc::clone(tenancy.catalog())),
            table: DEFAULT_OUTBOX_TABLE.to_owned(),
            extra: Vec::new(),
        }
    }

    /// Outbox tables named `table` (as the relay's
    /// [`RelayConfig::with_table`](saas_events::postgres::RelayConfig)).
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Lists the catalog again at most every `every` (default one second):
    /// how long a new tenant's first events may wait for the relay.
    pub fn with_refresh(mut self, every: Duration) -> Self {
        self.roster.refresh = every;
        self
    }

    /// Drains `location` as well: an outbox that belongs to no tenant (the
    /// catalog's or the billing database's own, when it is not the shared
    /// one).
    pub fn with_location(mut self, location: OutboxLocation) -> Self {
        self.extra.push(location);
        self
    }
}

#[async_trait]
impl OutboxLocations for PgTenantOutboxes {
    async fn locations(&self) -> Result<Vec<OutboxLocation>, EventError> {
        let mut found = self.extra.clone();
        let shared = self
            .tenancy
            .tenant_tables()
            .iter()
            .any(|t| t.table.as_str() == self.table);
        if shared {
            for cluster in self.tenancy.clusters() {
                let admin = self.tenancy.admin_pool(&cluster).map_err(tenancy_error)?;
                found.push(OutboxLocation::new(
                    format!("shared:{cluster}"),
                    admin.clone(),
                    None,
                )?);
            }
        }
        for tenant in self.roster.active().await?.iter() {
            match &tenant.placement {
                Placement::Shared { .. } => {}
                Placement::Schema { cluster, schema } => {
                    let admin = self.tenancy.admin_pool(cluster).map_err(tenancy_error)?;
                    found.push(OutboxLocation::new(
                        format!("schema:{cluster}:{}", tenant.id),
                        admin.clone(),
                        Some(schema.as_str().to_owned()),
                    )?);
                }
                Placement::Database { cluster, .. } => found.push(OutboxLocation::lent(
                    format!("database:{cluster}:{}", tenant.id),
                    Arc::new(TenantDatabase {
                        tenancy: self.tenancy.clone(),
                        tenant: tenant.id,
                        placement: tenant.placement.clone(),
                    }),
                    None,
                )?),
                // A placement added after this code was written: its
                // events wait rather than being read from a guessed place.
                other => {
                    tracing::warn!(tenant = %tenant.id, placement = ?other, "no outbox location for this placement");
                }
            }
        }
        Ok(found)
    }
}
