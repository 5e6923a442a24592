//! The relay: committed outbox rows to a publisher, in order, exactly one
//! relay per table at a time.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::error::pg_error;
use super::location::{OutboxLocation, OutboxLocations, check_ident};
use super::wake::PgWakeups;
use crate::envelope::Event;
use crate::error::EventError;
pub use crate::relay_core::RelayStats;
use crate::relay_core::{self, PassTable, Unconfirmed};
use crate::relay_wake::{WakeSignals, Wakeups};
use crate::sql::DEFAULT_OUTBOX_TABLE;
use crate::traits::Publisher;

/// The advisory-lock class of outbox relays (first key of
/// `pg_try_advisory_xact_lock(int, int)`), chosen to not collide with
/// other users of two-key advisory locks.
const LOCK_CLASS: i32 = 0x5AA5_E7E0;

/// How often a relay that wakes on commit still visits every location.
const DEFAULT_FULL_SCAN_INTERVAL: Duration = Duration::from_secs(30);

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
    /// How long a pass waits for the sink to confirm a batch (default
    /// 30 s; see [`Publisher::publish_tracked`]). A sink that keeps events
    /// in memory confirms once its consumers have acknowledged them; until
    /// then the rows stay in the outbox, and after this long unconfirmed
    /// they are forwarded again.
    pub confirm_timeout: Duration,
    /// Forwarded rows awaiting confirmation at which the relay stops
    /// reading new rows from a location (default 5,000).
    pub max_unconfirmed: u32,
    /// Whether a spawned relay listens for the commits that write outbox
    /// rows ([`PgOutbox::with_relay_wakeups`](super::PgOutbox::with_relay_wakeups),
    /// on by default) and visits only the locations that have rows, instead
    /// of every location every `poll_interval` (default on). Needs a
    /// session connection per database its locations' own pools reach (not
    /// through a transaction-pooling PgBouncer); locations lent per pass are
    /// visited every pass either way.
    pub wake_on_commit: bool,
    /// How often a relay that wakes on commit still lists and visits every
    /// location (default 30 s; the visits are spread over passes, a slice
    /// at a time beside the locations with work): the most a lost
    /// notification, or rows written with notifications off, wait.
    pub full_scan_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            table: DEFAULT_OUTBOX_TABLE.to_owned(),
            batch_size: relay_core::DEFAULT_BATCH_SIZE,
            poll_interval: relay_core::DEFAULT_POLL_INTERVAL,
            confirm_timeout: relay_core::DEFAULT_CONFIRM_TIMEOUT,
            max_unconfirmed: relay_core::DEFAULT_MAX_UNCONFIRMED,
            wake_on_commit: true,
            full_scan_interval: DEFAULT_FULL_SCAN_INTERVAL,
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

    /// Sets how long forwarded rows wait for the sink's confirmation
    /// before they are forwarded again.
    pub fn with_confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// Sets whether the relay wakes on commit (see
    /// [`RelayConfig::wake_on_commit`]); off, every pass visits every
    /// location.
    pub fn with_wake_on_commit(mut self, on: bool) -> Self {
        self.wake_on_commit = on;
        self
    }

    /// Sets how often a relay that wakes on commit visits every location.
    pub fn with_full_scan_interval(mut self, interval: Duration) -> Self {
        self.full_scan_interval = interval;
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
    /// and the others are still drained; the first error is returned after.
    ///
    /// # Errors
    /// The first location's failure, or the location provider's.
    pub async fn relay_once(&self) -> Result<usize, EventError> {
        relay_core::relay_once(self).await
    }

    /// One pass over `location`, in one transaction: deletes the rows the
    /// sink has confirmed since the last pass, and forwards the oldest rows
    /// not yet forwarded, in sequence order. Returns how many were
    /// forwarded; 0 without waiting when another relay holds the location.
    ///
    /// A sink with [`persistence`](crate::Capabilities::persistence)
    /// confirms on publication, so its rows are deleted in the same
    /// transaction. An in-memory bus confirms once its consumers have
    /// acknowledged the events; until then the rows stay in the outbox (a
    /// crash loses nothing) and are not forwarded again unless the sink
    /// loses them or [`RelayConfig::confirm_timeout`] passes.
    ///
    /// # Errors
    /// A database error, a row that is not a valid event (left in place,
    /// so the stall shows in [`OutboxRelay::oldest_pending_age`]), or the
    /// sink's error (the batch stays and is forwarded again).
    pub async fn relay_location(&self, location: &OutboxLocation) -> Result<usize, EventError> {
        let table = location.qualified(&self.config.table);
        let pool = location.lease().await?;
        let mut tx = pool.begin().await.map_err(pg_error)?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(&table)
            .fetch_one(&mut *tx)
            .await
            .map_err(pg_error)?;
        if !locked {
            return Ok(0);
        }
        // Another pass of this relay (a clone) has the location: it holds
        // forwarded rows this pass would not know to skip.
        let Some(mut checkout) = self
            .unconfirmed
            .check_out(location.name(), self.config.confirm_timeout)
        else {
            return Ok(0);
        };
        let room = checkout.room(self.config.max_unconfirmed, self.config.batch_size);
        let mut pass_table = PgPassTable {
            tx: &mut tx,
            table: &table,
        };
        let outcome =
            relay_core::forward_batch(&*self.sink, &mut pass_table, &mut checkout.settled, room)
                .await;
        let forwarded = relay_core::end_pass(tx, outcome, pg_error).await?;
        checkout.committed();
        self.stats.add_relayed(forwarded);
        Ok(forwarded)
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
            let pool = location.lease().await?;
            let age: Option<f64> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT EXTRACT(EPOCH FROM clock_timestamp() - min(created_at))::float8 FROM {table}"
            )))
            .fetch_one(pool.pool())
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
            let pool = location.lease().await?;
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(pool.pool())
                .await
                .map_err(pg_error)?;
            total += u64::try_from(n).unwrap_or(0);
        }
        Ok(total)
    }

    /// Runs the relay on a tokio task until `RelayHandle::shutdown`:
    /// passes back to back while there is work. Idle, it waits for a
    /// commit to announce rows ([`RelayConfig::wake_on_commit`]) and then
    /// visits only the locations announced, with a full pass every
    /// [`RelayConfig::full_scan_interval`]; without wake-ups, every pass
    /// visits every location, `poll_interval` apart.
    pub fn spawn(self) -> RelayHandle {
        relay_core::spawn(self)
    }

    /// The commit listeners of a spawned relay, if it wakes on commit.
    fn start_wakeups(&self, signals: Arc<WakeSignals>) -> Option<Box<dyn Wakeups<OutboxLocation>>> {
        self.config.wake_on_commit.then(|| {
            Box::new(PgWakeups::new(signals, &self.config.table))
                as Box<dyn Wakeups<OutboxLocation>>
        })
    }
}

/// An outbox table in a pass's transaction.
struct PgPassTable<'a> {
    tx: &'a mut PgConnection,
    /// The quoted, schema-qualified name.
    table: &'a str,
}

#[async_trait]
impl PassTable for PgPassTable<'_> {
    async fn delete(&mut self, seqs: &[i64]) -> Result<(), EventError> {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {} WHERE seq = ANY($1)",
            self.table
        )))
        .bind(seqs)
        .execute(&mut *self.tx)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn read(
        &mut self,
        waiting: &[i64],
        room: u32,
    ) -> Result<Vec<(i64, String, Event)>, EventError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT seq, topic, event FROM {} WHERE seq <> ALL($1) ORDER BY seq LIMIT $2",
            self.table
        )))
        .bind(waiting)
        .bind(i64::from(room))
        .fetch_all(&mut *self.tx)
        .await
        .map_err(pg_error)?;
        let mut batch = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.try_get(0).map_err(pg_error)?;
            let topic: String = row.try_get(1).map_err(pg_error)?;
            let body: &str = row.try_get(2).map_err(pg_error)?;
            batch.push((seq, topic, Event::from_json_str(body)?));
        }
        Ok(batch)
    }
}

/// A relay running on a task.
pub type RelayHandle = relay_core::RelayHandle<OutboxRelay>;

relay_core::impl_relay_backend!(OutboxRelay, OutboxLocation, wakeups);
