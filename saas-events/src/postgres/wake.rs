//! Relays woken by the commits that write outbox rows: `LISTEN` on each
//! database the locations' own pools reach, one connection per database
//! (not per schema, not per tenant).
//!
//! [`PgOutbox`](super::PgOutbox) inserts its rows and calls
//! `pg_notify(WAKE_CHANNEL, <schema of the table>)` in one statement;
//! PostgreSQL delivers the notification when the transaction commits and
//! drops it when it rolls back. A listener maps the schema back to the
//! relay's locations on that database and marks them for the next pass.
//!
//! Locations lent per pass (a tenant database reached through a tenancy's
//! pool registry) are not listened to — holding a connection to every
//! tenant database would defeat the registry's budget — and are visited
//! on every pass as before.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::location::OutboxLocation;
use crate::relay_wake::{WakeSignals, Wakeups};
use crate::sql::SqlOutbox;

/// The notification channel outbox inserts announce themselves on; the
/// payload is the schema of the outbox table written.
pub const WAKE_CHANNEL: &str = "saas_events_outbox";

/// How long a listener waits before connecting again after a failure.
const RECONNECT_WAIT: Duration = Duration::from_secs(1);

/// How long [`Wakeups::watch`] waits for new listeners to listen.
const START_WAIT: Duration = Duration::from_secs(5);

impl SqlOutbox<sqlx::Postgres> {
    /// Whether inserts notify listening relays (default on).
    ///
    /// The notification is part of the insert statement and is delivered
    /// at commit; it lets an [`OutboxRelay`](super::OutboxRelay) visit only
    /// the locations that have rows. PostgreSQL serialises the commits of
    /// transactions that notified (a brief global lock at commit): turn it
    /// off where a write-heavy outbox measures that cost above the lag it
    /// saves — relays then find rows on their full passes
    /// ([`RelayConfig::full_scan_interval`](super::RelayConfig::full_scan_interval)).
    ///
    /// ```
    /// use saas_events::postgres::PgOutbox;
    ///
    /// let quiet = PgOutbox::new().with_relay_wakeups(false);
    /// # let _ = quiet;
    /// ```
    pub fn with_relay_wakeups(mut self, on: bool) -> Self {
        self.settings.notify = on;
        self
    }
}

/// Which of the relay's locations a notification from one database means.
#[derive(Debug, Default)]
struct Routes {
    /// Locations by the schema of their table.
    by_schema: HashMap<String, Vec<String>>,
    /// Locations without a schema (the pool's `search_path` decides): any
    /// notification from the database may be theirs.
    unqualified: Vec<String>,
}

impl Routes {
    /// The locations `schema`'s notification wakes, `None` if none is
    /// known (a table the relay has not listed yet).
    fn for_schema(&self, schema: &str) -> Option<Vec<String>> {
        let named = self.by_schema.get(schema);
        if named.is_none() && self.unqualified.is_empty() {
            return None;
        }
        let mut names = self.unqualified.clone();
        names.extend(named.into_iter().flatten().cloned());
        Some(names)
    }

    fn all(&self) -> Vec<String> {
        let mut names = self.unqualified.clone();
        names.extend(self.by_schema.values().flatten().cloned());
        names
    }
}

/// One database listened to.
struct Listener {
    routes: Arc<RwLock<Routes>>,
    task: JoinHandle<()>,
}

/// The listeners of one relay, one per database its own-pool locations
/// reach; aborted with it.
pub(crate) struct PgWakeups {
    signals: Arc<WakeSignals>,
    listeners: HashMap<String, Listener>,
    /// The outbox table's name (the relay's).
    table: String,
    /// The schemas of locations without one, as resolved once (by name):
    /// the relay lists its locations every second, and asking the
    /// database again each time would be work per listing for nothing.
    resolved: HashMap<String, String>,
}

impl PgWakeups {
    pub(crate) fn new(signals: Arc<WakeSignals>, table: &str) -> Self {
        Self {
            signals,
            listeners: HashMap::new(),
            table: table.to_owned(),
            resolved: HashMap::new(),
        }
    }
}

/// The schema `table` resolves to through `pool`'s search path, `None` if
/// it cannot be told (no such table yet, the database unreachable).
async fn resolve_schema(pool: &PgPool, table: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.oid = to_regclass(quote_ident($1))",
    )
    .bind(table)
    .fetch_optional(pool)
    .await
    .ok()
    .flatten()
}

impl std::fmt::Debug for PgWakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgWakeups")
            .field("databases", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl Drop for PgWakeups {
    fn drop(&mut self) {
        for listener in self.listeners.values() {
            listener.task.abort();
        }
    }
}

/// The server and database a pool reaches: one listener serves every
/// location there, whatever schema or `search_path` its pool uses.
fn database_key(pool: &PgPool) -> String {
    let options = pool.connect_options();
    format!(
        "{}:{}/{}@{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default(),
        options.get_username()
    )
}

#[async_trait::async_trait]
impl Wakeups<OutboxLocation> for PgWakeups {
    async fn watch(&mut self, locations: &[OutboxLocation]) -> HashSet<String> {
        let mut wanted: HashMap<String, (PgPool, Routes)> = HashMap::new();
        let mut covered = HashSet::new();
        for location in locations {
            let Some(pool) = location.own_pool() else {
                continue;
            };
            let (_, routes) = wanted
                .entry(database_key(pool))
                .or_insert_with(|| (pool.clone(), Routes::default()));
            let name = location.name().to_owned();
            // A location without a schema is where its pool's search path
            // puts the table: asked once per listing, so that it does not
            // catch every notification of the database (which would hide
            // new tenants' schemas from the relist).
            let schema = match location.schema() {
                Some(schema) => Some(schema.to_owned()),
                None => match self.resolved.get(&name) {
                    Some(schema) => Some(schema.clone()),
                    None => {
                        let found = resolve_schema(pool, &self.table).await;
                        if let Some(schema) = &found {
                            self.resolved.insert(name.clone(), schema.clone());
                        }
                        found
                    }
                },
            };
            match schema {
                Some(schema) => routes
                    .by_schema
                    .entry(schema)
                    .or_default()
                    .push(name.clone()),
                None => routes.unqualified.push(name.clone()),
            }
            covered.insert(name);
        }
        self.resolved.retain(|name, _| covered.contains(name));
        self.listeners.retain(|key, listener| {
            let keep = wanted.contains_key(key);
            if !keep {
                listener.task.abort();
            }
            keep
        });
        let mut starting = Vec::new();
        for (key, (pool, routes)) in wanted {
            match self.listeners.get(&key) {
                Some(listener) => {
                    *listener
                        .routes
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = routes;
                }
                None => {
                    let routes = Arc::new(RwLock::new(routes));
                    let (ready, listening) = oneshot::channel();
                    let task = tokio::spawn(listen(
                        pool,
                        Arc::clone(&routes),
                        Arc::clone(&self.signals),
                        ready,
                    ));
                    starting.push(listening);
                    self.listeners.insert(key, Listener { routes, task });
                }
            }
        }
        // Bounded: a database that does not answer is listened to later
        // (its listener marks its locations meanwhile).
        let _ = tokio::time::timeout(START_WAIT, all_ready(starting)).await;
        covered
    }
}

/// Waits for every receiver (a sender dropped counts as done).
async fn all_ready(receivers: Vec<oneshot::Receiver<()>>) {
    for receiver in receivers {
        let _ = receiver.await;
    }
}

/// Listens on one database until aborted, reconnecting after failures,
/// and says `ready` once first listening. Whenever listening restarts,
/// every location there is marked: rows committed while nobody listened
/// were announced to no one (the first time, the relay's full pass right
/// after [`Wakeups::watch`] visits them).
async fn listen(
    pool: PgPool,
    routes: Arc<RwLock<Routes>>,
    signals: Arc<WakeSignals>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let all = |routes: &RwLock<Routes>| routes.read().unwrap_or_else(PoisonError::into_inner).all();
    // A connection of its own, outside the location's pool: a listener
    // holds it for good and must not shrink the pool the passes use.
    let own = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with((*pool.connect_options()).clone());
    drop(pool);
    loop {
        let mut listener = match PgListener::connect_with(&own).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "outbox relay cannot listen for commits; visiting every location meanwhile");
                signals.mark(all(&routes));
                tokio::time::sleep(RECONNECT_WAIT).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(WAKE_CHANNEL).await {
            tracing::warn!(%error, "outbox relay cannot listen for commits; retrying");
            signals.mark(all(&routes));
            tokio::time::sleep(RECONNECT_WAIT).await;
            continue;
        }
        match ready.take() {
            Some(ready) => {
                let _ = ready.send(());
            }
            None => signals.mark(all(&routes)),
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    let names = routes
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .for_schema(notification.payload());
                    match names {
                        Some(names) => signals.mark(names),
                        None => signals.request_refresh(),
                    }
                }
                // The connection was lost and made again: whatever was
                // announced meanwhile is gone.
                Ok(None) => signals.mark(all(&routes)),
                Err(error) => {
                    tracing::warn!(%error, "outbox relay lost its commit listener; reconnecting");
                    signals.mark(all(&routes));
                    tokio::time::sleep(RECONNECT_WAIT).await;
                    break;
                }
            }
        }
    }
}
