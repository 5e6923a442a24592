//! One handle over everything a host runs in the background — event
//! routers, outbox relays, pools to close — stopped gracefully, in the
//! right order, by one call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;

/// Something running in the background that can be stopped gracefully.
#[async_trait]
pub trait Background: Send + 'static {
    /// Stops it and waits until it has (what is in flight finishes).
    async fn stop(self: Box<Self>);
}

#[async_trait]
impl Background for saas_events::router::RunningRouter {
    async fn stop(self: Box<Self>) {
        self.shutdown().await;
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl Background for saas_events::postgres::RelayHandle {
    async fn stop(self: Box<Self>) {
        self.shutdown().await;
    }
}

#[cfg(feature = "sqlite")]
#[async_trait]
impl Background for saas_events::sqlite::RelayHandle {
    async fn stop(self: Box<Self>) {
        self.shutdown().await;
    }
}

type Closing = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

enum Step {
    Running(Box<dyn Background>),
    Close(Closing),
}

/// The host's background work, stopped in the reverse order of starting.
///
/// Start consumers before the relays that feed them, and register what a
/// relay reads from (pools to close) before the relay: the relay then
/// stops first — waiting for its consumers to confirm what it forwarded,
/// so a clean stop leaves no event to forward again — then the consumers,
/// then the pools. (An in-memory bus hands an event nobody subscribed to
/// to nobody: a relay started before its consumer loses nothing from the
/// outbox, but the consumer misses what was relayed before it came.)
///
/// ```no_run
/// # async fn run(
/// #     bus: saas_events::InMemoryBus,
/// #     outboxes: std::sync::Arc<saas_foundation::outboxes::SqliteTenantOutboxes>,
/// #     audit: saas_events::router::RunningRouter,
/// # ) {
/// use std::sync::Arc;
/// use saas_events::sqlite::{OutboxRelay, RelayConfig};
/// use saas_foundation::services::Services;
///
/// let mut services = Services::new();
/// let closing = Arc::clone(&outboxes);
/// services.on_stop("outbox files", move || async move { closing.close().await });
/// services.start("audit writer", audit);
/// services.start(
///     "relay",
///     OutboxRelay::new(outboxes, Arc::new(bus), RelayConfig::default()).spawn(),
/// );
/// // … serve until a signal …
/// services.shutdown().await; // relay, audit writer, then the files
/// # }
/// ```
#[derive(Default)]
pub struct Services {
    steps: Vec<(String, Step)>,
}

impl Services {
    /// No services yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `running` (a router, a relay) to stop it on shutdown, after
    /// everything registered later.
    pub fn start(&mut self, name: impl Into<String>, running: impl Background) -> &mut Self {
        self.steps
            .push((name.into(), Step::Running(Box::new(running))));
        self
    }

    /// Runs `close` on shutdown, after everything registered later (close
    /// pools after the relays reading them).
    pub fn on_stop<F, Fut>(&mut self, name: impl Into<String>, close: F) -> &mut Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let closing: Closing = Box::new(move || Box::pin(close()));
        self.steps.push((name.into(), Step::Close(closing)));
        self
    }

    /// How many services are registered.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Stops everything, last registered first, each after the one before
    /// has stopped.
    pub async fn shutdown(self) {
        for (name, step) in self.steps.into_iter().rev() {
            tracing::debug!(service = %name, "stopping");
            match step {
                Step::Running(running) => running.stop().await,
                Step::Close(close) => close().await,
            }
        }
    }
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|(name, _)| name))
            .finish()
    }
}

/// Resolves when the process is asked to stop: Ctrl-C (SIGINT), or SIGTERM
/// on Unix (what service managers and container runtimes send). Hand it to
/// the server's graceful shutdown, then call [`Services::shutdown`].
///
/// ```no_run
/// # async fn run(app: axum::Router, services: saas_foundation::services::Services)
/// # -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, app)
///     .with_graceful_shutdown(saas_foundation::services::shutdown_signal())
///     .await?;
/// services.shutdown().await;
/// # Ok(()) }
/// ```
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Without a SIGTERM handler (none can be installed), Ctrl-C alone.
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
