//! The relay: committed outbox rows to a publisher, in order, one pass
//! per file at a time.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use saas_core::{SharedClock, SystemClock, TenantId};
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection};
use uuid::Uuid;

use super::error::sqlite_error;
use super::location::{OutboxLocation, OutboxLocations};
use crate::envelope::Event;
use crate::error::EventError;
pub use crate::relay_core::RelayStats;
use crate::relay_core::{self, Checkout, PassTable, Unconfirmed};
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
    /// How long forwarded rows wait for the sink to confirm them (default
    /// 30 s; see [`Publisher::publish_tracked`]). A sink that keeps events
    /// in memory confirms once its consumers have acknowledged them; until
    /// then the rows stay in the outbox, and after this long unconfirmed
    /// they are forwarded again.
    pub confirm_timeout: Duration,
    /// Forwarded rows awaiting confirmation at which the relay stops
    /// reading new rows from a location (default 5,000).
    pub max_unconfirmed: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: relay_core::DEFAULT_BATCH_SIZE,
            poll_interval: relay_core::DEFAULT_POLL_INTERVAL,
            clock: Arc::new(SystemClock),
            confirm_timeout: relay_core::DEFAULT_CONFIRM_TIMEOUT,
            max_unconfirmed: relay_core::DEFAULT_MAX_UNCONFIRMED,
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

    /// Sets how long forwarded rows wait for the sink's confirmation
    /// before they are forwarded again.
    pub fn with_confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// Sets how many forwarded rows may await confirmation per location.
    pub fn with_max_unconfirmed(mut self, rows: u32) -> Self {
        self.max_unconfirmed = rows.max(1);
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
    unconfirmed: Arc<Unconfirmed>,
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
            unconfirmed: Arc::default(),
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

    /// One pass over `location`, in one write transaction: deletes the
    /// rows the sink has confirmed since the last pass, and forwards the
    /// oldest rows not yet forwarded, in sequence order. Returns how many
    /// were forwarded.
    ///
    /// A sink with [`persistence`](crate::Capabilities::persistence)
    /// confirms on publication, so its rows are deleted in the same
    /// transaction. An in-memory bus confirms once its consumers have
    /// acknowledged the events — consumers that may write to this very
    /// file, which is why the pass never waits for them: the rows stay in
    /// the outbox (a crash loses nothing), are deleted by a later pass, and
    /// are not forwarded again unless the sink loses them or
    /// [`RelayConfig::confirm_timeout`] passes.
    ///
    /// # Errors
    /// A database error (a busy file after the pool's busy timeout), a row
    /// that is not a valid event or claims a tenant other than its row's
    /// or its location's (left in place, so the stall shows in
    /// [`OutboxRelay::oldest_pending_age`]), or the sink's error (the batch
    /// stays and is forwarded again).
    pub async fn relay_location(&self, location: &OutboxLocation) -> Result<usize, EventError> {
        // Another pass of this relay (a clone) has the location: it holds
        // forwarded rows this pass would not know to skip.
        let Some(mut checkout) = self
            .unconfirmed
            .check_out(location.name(), self.config.confirm_timeout)
        else {
            return Ok(0);
        };
        let forwarded = self.pass(location, &mut checkout).await?;
        checkout.committed();
        self.stats.add_relayed(forwarded);
        Ok(forwarded)
    }

    /// The body of [`OutboxRelay::relay_location`].
    async fn pass(
        &self,
        location: &OutboxLocation,
        checkout: &mut Checkout<'_>,
    ) -> Result<usize, EventError> {
        let table = location.quoted();
        let pool = location.lease().await?;
        let mut conn = pool.acquire().await.map_err(sqlite_error)?;
        let room = checkout.room(self.config.max_unconfirmed, self.config.batch_size);
        let settled = &mut checkout.settled;
        let waiting = json_list(&settled.waiting);
        // A read without the write lock first, so an idle relay polling
        // every few milliseconds never makes the application's writers wait.
        let new_rows: bool = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {table} \
             WHERE seq NOT IN (SELECT value FROM json_each(?)))"
        )))
        .bind(&waiting)
        .fetch_one(&mut *conn)
        .await
        .map_err(sqlite_error)?;
        if (!new_rows || room == 0) && settled.confirmed.is_empty() {
            return Ok(0);
        }
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sqlite_error)?;
        let mut pass_table = SqlitePassTable {
            tx: &mut tx,
            table: &table,
            tenant: location.tenant(),
        };
        let outcome = relay_core::forward_batch(&*self.sink, &mut pass_table, settled, room).await;
        relay_core::end_pass(tx, outcome, sqlite_error).await
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
            let pool = location.lease().await?;
            let created: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT min(created_at) FROM {}",
                location.quoted()
            )))
            .fetch_one(pool.pool())
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
            let pool = location.lease().await?;
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT count(*) FROM {}",
                location.quoted()
            )))
            .fetch_one(pool.pool())
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

/// An outbox table in a pass's write transaction.
struct SqlitePassTable<'a> {
    tx: &'a mut SqliteConnection,
    /// The quoted name.
    table: &'a str,
    /// The tenant owning the whole file, if declared.
    tenant: Option<TenantId>,
}

#[async_trait]
impl PassTable for SqlitePassTable<'_> {
    async fn delete(&mut self, seqs: &[i64]) -> Result<(), EventError> {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {} WHERE seq IN (SELECT value FROM json_each(?))",
            self.table
        )))
        .bind(json_list(seqs))
        .execute(&mut *self.tx)
        .await
        .map_err(sqlite_error)?;
        Ok(())
    }

    async fn read(
        &mut self,
        waiting: &[i64],
        room: u32,
    ) -> Result<Vec<(i64, String, Event)>, EventError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT seq, tenant_id, topic, event FROM {} \
             WHERE seq NOT IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ?",
            self.table
        )))
        .bind(json_list(waiting))
        .bind(i64::from(room))
        .fetch_all(&mut *self.tx)
        .await
        .map_err(sqlite_error)?;
        let mut batch = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.try_get(0).map_err(sqlite_error)?;
            let tenant: Option<Uuid> = row.try_get(1).map_err(sqlite_error)?;
            let topic: String = row.try_get(2).map_err(sqlite_error)?;
            let body: &str = row.try_get(3).map_err(sqlite_error)?;
            let row_tenant = tenant
                .map(TenantId::from_uuid)
                .transpose()
                .map_err(|e| EventError::invalid("tenantid", e.to_string()))?;
            let event = owned_event(Event::from_json_str(body)?, row_tenant, self.tenant)?;
            batch.push((seq, topic, event));
        }
        Ok(batch)
    }
}

/// Sequence numbers as the JSON array `json_each` reads.
fn json_list(seqs: &[i64]) -> String {
    let items: Vec<String> = seqs.iter().map(i64::to_string).collect();
    format!("[{}]", items.join(","))
}

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
