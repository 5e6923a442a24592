//! The relay: committed outbox rows to a publisher, in order, exactly one
//! relay per table at a time.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Row};

use super::error::pg_error;
use super::location::{OutboxLocation, OutboxLocations, check_ident};
use super::outbox::DEFAULT_OUTBOX_TABLE;
use crate::envelope::Event;
use crate::error::EventError;
use crate::relay_core;
pub use crate::relay_core::RelayStats;
use crate::traits::Publisher;

/// The advisory-lock class of outbox relays (first key of
/// `pg_try_advisory_xact_lock(int, int)`), chosen to not collide with
/// other users of two-key advisory locks.
const LOCK_CLASS: i32 = 0x5AA5_E7E0;

/// Settings of an [`OutboxRelay`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayConfig {
    /// The outbox table name (default [`DEFAULT_OUTBOX_TABLE`]).
    pub table: String,
    /// Rows read, forwarded and deleted per transaction (default 500).
    pub batch_size: u32,
    /// How long an idle relay waits before looking again (default 20 ms).
    pub poll_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            table: DEFAULT_OUTBOX_TABLE.to_owned(),
            batch_size: 500,
            poll_interval: Duration::from_millis(20),
        }
    }
}

impl RelayConfig {
    /// Sets the table name.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] unless it is a lowercase SQL identifier.
    pub fn with_table(mut self, table: &str) -> Result<Self, EventError> {
        check_ident(table, "a table must be a lowercase SQL identifier")?;
        self.table = table.to_owned();
        Ok(self)
    }

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
}

/// Moves committed outbox rows to a [`Publisher`].
///
/// ```no_run
/// use std::sync::Arc;
/// use saas_events::InMemoryBus;
/// use saas_events::postgres::{OutboxLocation, OutboxRelay, RelayConfig, StaticLocations};
///
/// # async fn run(admin: sqlx::PgPool) -> Result<(), saas_events::EventError> {
/// let bus = InMemoryBus::new(); // subscribers attach here
/// let shared = OutboxLocation::new("shared", admin, Some("app".into()))?;
/// let relay = OutboxRelay::new(
///     Arc::new(StaticLocations(vec![shared])),
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
    /// and the others are still drained; the first error is returned after.
    ///
    /// # Errors
    /// The first location's failure, or the location provider's.
    pub async fn relay_once(&self) -> Result<usize, EventError> {
        relay_core::relay_once(self).await
    }

    /// Forwards one batch from `location`, in sequence order, and deletes
    /// it in the same transaction. Returns 0 without waiting when another
    /// relay holds the location.
    ///
    /// # Errors
    /// A database error, a row that is not a valid event (left in place,
    /// so the stall shows in [`OutboxRelay::oldest_pending_age`]), or the
    /// sink's error (the batch stays and is forwarded again).
    pub async fn relay_location(&self, location: &OutboxLocation) -> Result<usize, EventError> {
        let table = location.qualified(&self.config.table);
        let mut tx = location.pool().begin().await.map_err(pg_error)?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(&table)
            .fetch_one(&mut *tx)
            .await
            .map_err(pg_error)?;
        if !locked {
            return Ok(0);
        }
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT seq, topic, event FROM {table} ORDER BY seq LIMIT $1"
        )))
        .bind(i64::from(self.config.batch_size))
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut seqs = Vec::with_capacity(rows.len());
        let mut run: Vec<Event> = Vec::new();
        let mut run_topic = String::new();
        for row in &rows {
            let seq: i64 = row.try_get(0).map_err(pg_error)?;
            let topic: String = row.try_get(1).map_err(pg_error)?;
            let body: &str = row.try_get(2).map_err(pg_error)?;
            let event = Event::from_json_str(body)?;
            if topic != run_topic && !run.is_empty() {
                self.sink
                    .publish_batch(&run_topic, std::mem::take(&mut run))
                    .await?;
            }
            run_topic = topic;
            run.push(event);
            seqs.push(seq);
        }
        if !run.is_empty() {
            self.sink.publish_batch(&run_topic, run).await?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE seq = ANY($1)"
        )))
        .bind(&seqs)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        self.stats.add_relayed(seqs.len());
        Ok(seqs.len())
    }

    /// How long the oldest committed, undelivered event has waited, over
    /// all locations (`None` when nothing is pending). Alert on this: a
    /// relay that is down, failing or blocked shows here.
    ///
    /// # Errors
    /// A database or location provider error.
    pub async fn oldest_pending_age(&self) -> Result<Option<Duration>, EventError> {
        let mut oldest: Option<f64> = None;
        for location in self.locations.locations().await? {
            let table = location.qualified(&self.config.table);
            let age: Option<f64> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT EXTRACT(EPOCH FROM clock_timestamp() - min(created_at))::float8 FROM {table}"
            )))
            .fetch_one(location.pool())
            .await
            .map_err(pg_error)?;
            if let Some(age) = age {
                oldest = Some(oldest.map_or(age, |o: f64| o.max(age)));
            }
        }
        Ok(oldest.map(|secs| Duration::from_secs_f64(secs.max(0.0))))
    }

    /// Committed, undelivered events over all locations.
    ///
    /// # Errors
    /// A database or location provider error.
    pub async fn pending(&self) -> Result<u64, EventError> {
        let mut total = 0u64;
        for location in self.locations.locations().await? {
            let table = location.qualified(&self.config.table);
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(location.pool())
                .await
                .map_err(pg_error)?;
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
