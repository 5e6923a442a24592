//! The relay: committed outbox rows to a publisher, in order, one relay
//! per file at a time.

use std::sync::Arc;
use std::time::Duration;

use saas_core::{SharedClock, SystemClock, TenantId};
use sqlx::{AssertSqlSafe, Connection, Row};
use uuid::Uuid;

use super::error::sqlite_error;
use super::location::{OutboxLocation, OutboxLocations};
use crate::envelope::Event;
use crate::error::EventError;
use crate::relay_core;
pub use crate::relay_core::RelayStats;
use crate::traits::Publisher;

/// Settings of an [`OutboxRelay`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Rows read, forwarded and deleted per transaction (default 500).
    pub batch_size: u32,
    /// How long an idle relay waits before looking again (default 20 ms).
    pub poll_interval: Duration,
    /// The clock pending ages are measured with (default: the system
    /// clock; use the outbox's).
    pub clock: SharedClock,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(20),
            clock: Arc::new(SystemClock),
        }
    }
}

impl RelayConfig {
    /// Sets the batch size (at least 1).
    pub fn with_batch_size(mut self, rows: u32) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// Sets the idle poll interval.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets the clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
}

/// Moves committed outbox rows to a [`Publisher`].
///
/// ```no_run
/// use std::sync::Arc;
/// use saas_events::InMemoryBus;
/// use saas_events::sqlite::{OutboxLocation, OutboxRelay, RelayConfig, StaticLocations};
///
/// # async fn run(pool: sqlx::SqlitePool) -> Result<(), saas_events::EventError> {
/// let bus = InMemoryBus::new(); // subscribers attach here
/// let relay = OutboxRelay::new(
///     Arc::new(StaticLocations(vec![OutboxLocation::new("app", pool)])),
///     Arc::new(bus.clone()),
///     RelayConfig::default(),
/// );
/// let running = relay.spawn();
/// // … later: is anything stuck?
/// let age = running.relay().oldest_pending_age().await?;
/// running.shutdown().await;
/// # let _ = age;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct OutboxRelay {
    locations: Arc<dyn OutboxLocations>,
    sink: Arc<dyn Publisher>,
    config: RelayConfig,
    stats: Arc<RelayStats>,
}

impl OutboxRelay {
    /// A relay draining `locations` into `sink`.
    pub fn new(
        locations: Arc<dyn OutboxLocations>,
        sink: Arc<dyn Publisher>,
        config: RelayConfig,
    ) -> Self {
        Self {
            locations,
            sink,
            config,
            stats: Arc::new(RelayStats::default()),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// One pass: at most one batch from every location. Returns how many
    /// events were forwarded. A location that fails is logged and counted,
    /// and the others are still drained; the first error is returned after
    /// if nothing was forwarded.
    ///
    /// # Errors
    /// The first location's failure, or the location provider's.
    pub async fn relay_once(&self) -> Result<usize, EventError> {
        relay_core::relay_once(self).await
    }

    /// Forwards one batch from `location`, in sequence order, and deletes
    /// it in the same write transaction.
    ///
    /// # Errors
    /// A database error (a busy file after the pool's busy timeout), a row
    /// that is not a valid event or claims a tenant other than its row's
    /// or its location's (left in place, so the stall shows in
    /// [`OutboxRelay::oldest_pending_age`]), or the sink's error (the batch
    /// stays and is forwarded again).
    pub async fn relay_location(&self, location: &OutboxLocation) -> Result<usize, EventError> {
        let table = location.quoted();
        let mut conn = location.pool().acquire().await.map_err(sqlite_error)?;
        // A read without the write lock first, so an idle relay polling
        // every few milliseconds never makes the application's writers wait.
        let any: bool = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {table})"
        )))
        .fetch_one(&mut *conn)
        .await
        .map_err(sqlite_error)?;
        if !any {
            return Ok(0);
        }
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sqlite_error)?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT seq, tenant_id, topic, event FROM {table} ORDER BY seq LIMIT ?"
        )))
        .bind(i64::from(self.config.batch_size))
        .fetch_all(&mut *tx)
        .await
        .map_err(sqlite_error)?;
        let Some(last) = rows.last() else {
            return Ok(0);
        };
        let last_seq: i64 = last.try_get(0).map_err(sqlite_error)?;
        let mut run: Vec<Event> = Vec::new();
        let mut run_topic = String::new();
        for row in &rows {
            let tenant: Option<Uuid> = row.try_get(1).map_err(sqlite_error)?;
            let topic: String = row.try_get(2).map_err(sqlite_error)?;
            let body: &str = row.try_get(3).map_err(sqlite_error)?;
            let row_tenant = tenant
                .map(TenantId::from_uuid)
                .transpose()
                .map_err(|e| EventError::invalid("tenantid", e.to_string()))?;
            let event = owned_event(Event::from_json_str(body)?, row_tenant, location.tenant())?;
            if topic != run_topic && !run.is_empty() {
                self.sink
                    .publish_batch(&run_topic, std::mem::take(&mut run))
                    .await?;
            }
            run_topic = topic;
            run.push(event);
        }
        if !run.is_empty() {
            self.sink.publish_batch(&run_topic, run).await?;
        }
        // The write lock is held since the read, so the rows up to the
        // last one read are exactly the batch.
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE seq <= ?")))
            .bind(last_seq)
            .execute(&mut *tx)
            .await
            .map_err(sqlite_error)?;
        tx.commit().await.map_err(sqlite_error)?;
        self.stats.add_relayed(rows.len());
        Ok(rows.len())
    }

    /// How long the oldest committed, undelivered event has waited, over
    /// all locations (`None` when nothing is pending), by the configured
    /// clock. Alert on this: a relay that is down, failing or blocked
    /// shows here.
    ///
    /// # Errors
    /// A database or location provider error.
    pub async fn oldest_pending_age(&self) -> Result<Option<Duration>, EventError> {
        let mut oldest: Option<i64> = None;
        for location in self.locations.locations().await? {
            let created: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT min(created_at) FROM {}",
                location.quoted()
            )))
            .fetch_one(location.pool())
            .await
            .map_err(sqlite_error)?;
            if let Some(created) = created {
                oldest = Some(oldest.map_or(created, |o| o.min(created)));
            }
        }
        let now = self.config.clock.now().timestamp_millis();
        Ok(oldest.map(|created| {
            Duration::from_millis(u64::try_from(now.saturating_sub(created)).unwrap_or(0))
        }))
    }

    /// Committed, undelivered events over all locations.
    ///
    /// # Errors
    /// A database or location provider error.
    pub async fn pending(&self) -> Result<u64, EventError> {
        let mut total = 0u64;
        for location in self.locations.locations().await? {
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT count(*) FROM {}",
                location.quoted()
            )))
            .fetch_one(location.pool())
            .await
            .map_err(sqlite_error)?;
            total += u64::try_from(n).unwrap_or(0);
        }
        Ok(total)
    }

    /// Runs the relay on a tokio task until `RelayHandle::shutdown`:
    /// passes back to back while there is work, `poll_interval` apart
    /// when idle or failing.
    pub fn spawn(self) -> RelayHandle {
        relay_core::spawn(self)
    }
}

/// A relay running on a task.
pub type RelayHandle = relay_core::RelayHandle<OutboxRelay>;

relay_core::impl_relay_backend!(OutboxRelay, OutboxLocation);

/// The event as it may leave its outbox: the tenant of its row (stamped by
/// a tenant view) or of its location (a tenant's own file) is stamped on a
/// tenant-less event, and an event claiming another tenant is refused.
fn owned_event(
    event: Event,
    row_tenant: Option<TenantId>,
    location_tenant: Option<TenantId>,
) -> Result<Event, EventError> {
    let claimed = event.tenant_id();
    let mut owner = claimed;
    for tenant in [row_tenant, location_tenant].into_iter().flatten() {
        match owner {
            Some(owner) if owner != tenant => {
                return Err(EventError::invalid(
                    "tenantid",
                    "the event claims a tenant other than the one owning its outbox row",
                ));
            }
            _ => owner = Some(tenant),
        }
    }
    Ok(if claimed == owner {
        event
    } else {
        event.with_tenant(owner)
    })
}
