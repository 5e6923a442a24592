//! The program around an app: open the stack its settings name
//! (PostgreSQL, or SQLite files when there is no database URL), start the
//! app on it, serve its routes, and stop everything in order on Ctrl-C or
//! SIGTERM — what every host's `main` otherwise writes.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;

use async_trait::async_trait;
use saas_tenancy::postgres::{PgTenancy, PgTenancyBuilder};
use saas_tenancy::sqlite::{SqliteTenancy, SqliteTenancyBuilder};
use sqlx::postgres::PgConnectOptions;

mod traces;

use crate::config::Settings;
use crate::services::{Services, shutdown_signal};
use crate::stack::{PgStack, SqliteStack, Stack, StackBackend, StackError};

/// An app's own error, boxed.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// An application a [`Host`] runs, on either database: implement it for
/// every `T: StackBackend` (or for `PgTenancy` and `SqliteTenancy`).
#[async_trait]
pub trait App<T: StackBackend>: Send + Sync + 'static {
    /// Starts the app on `stack` — its event consumers, then the relay
    /// (registered with `services`, which the host stops after the server,
    /// last started first) — and returns its routes.
    ///
    /// # Errors
    /// Whatever keeps the app from starting; the host stops what was
    /// started and returns it.
    async fn start(
        &self,
        stack: Stack<T>,
        services: &mut Services,
    ) -> Result<axum::Router, BoxError>;
}

type Configure<B> = Box<dyn FnOnce(B) -> B + Send>;
type OnListening = Box<dyn FnOnce(SocketAddr, &str) + Send>;

/// Runs an [`App`]: the stack from [`Settings`], the app started on it,
/// its routes served on [`Settings::listen`] until the shutdown signal,
/// then the requests in flight finished and every service stopped.
///
/// ```no_run
/// use async_trait::async_trait;
/// use axum::{Router, routing::get};
/// use saas_foundation::config::Settings;
/// use saas_foundation::host::{App, BoxError, Host};
/// use saas_foundation::services::Services;
/// use saas_foundation::stack::{Stack, StackBackend};
///
/// struct Hello;
///
/// #[async_trait]
/// impl<T: StackBackend> App<T> for Hello {
///     async fn start(&self, stack: Stack<T>, _: &mut Services) -> Result<Router, BoxError> {
///         let storage = stack.describe();
///         Ok(Router::new().route("/", get(move || async move { storage })))
///     }
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let settings = Settings::from_prefix("HELLO").from_env()?;
/// Host::new(settings)
///     .named("hello") // prints "hello listening on http://…"
///     .log_to_stderr("warn")
///     .serve(Hello)
///     .await?;
/// # Ok(()) }
/// ```
pub struct Host {
    settings: Settings,
    postgres: Configure<PgTenancyBuilder>,
    sqlite: Configure<SqliteTenancyBuilder>,
    on_listening: OnListening,
    name: Option<String>,
    telemetry: traces::Telemetry,
    #[cfg(feature = "prometheus")]
    metrics_path: Option<String>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// A host for these settings, with the tenancies as they come.
    pub fn new(settings: Settings) -> Self {
        Host {
            settings,
            postgres: Box::new(|tenancy| tenancy),
            sqlite: Box::new(|tenancy| tenancy),
            on_listening: Box::new(|addr, storage| {
                tracing::info!(%addr, storage, "listening");
            }),
            name: None,
            telemetry: traces::Telemetry::default(),
            #[cfg(feature = "prometheus")]
            metrics_path: None,
        }
    }

    /// Serves every metric of the foundation and the app at `path` (such
    /// as `/metrics`; it must start with `/` and be none of the app's
    /// routes) in the Prometheus text format: the recorder is installed
    /// before the stack opens, so startup is measured too (see
    /// [`Prometheus`](crate::metrics::Prometheus); the route has no
    /// authentication of its own).
    #[cfg(feature = "prometheus")]
    #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
    pub fn metrics_at(mut self, path: impl Into<String>) -> Self {
        self.metrics_path = Some(path.into());
        self
    }

    /// Names the program for its operator: once listening it prints
    /// `{name} listening on http://{addr} (Ctrl-C stops it)` and
    /// `storage: {where the data is}` to standard output (the first line is
    /// what scripts read the address from), and `{name}: stopped` after a
    /// clean stop. Replaces any [`Host::on_listening`] set before it.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        let listening = name.clone();
        self.on_listening = Box::new(move |addr, storage| {
            println!("{listening} listening on http://{addr} (Ctrl-C stops it)");
            println!("storage: {storage}");
        });
        self.name = Some(name);
        self
    }

    /// Logs to standard error through `tracing`, filtered by `RUST_LOG`
    /// (`default_filter`, such as `"warn"`, when it is unset or invalid).
    /// The subscriber is installed when serving starts, unless the program
    /// installed one already.
    pub fn log_to_stderr(mut self, default_filter: &str) -> Self {
        self.telemetry.log_filter = Some(default_filter.to_owned());
        self
    }

    /// Exports spans (level `info` and above) through OpenTelemetry as
    /// `service`: to [`Settings::otlp_endpoint`] over OTLP/HTTP when set,
    /// else to standard output; batched, flushed when the host stops. The
    /// app's routes continue the trace of a request that carries a
    /// `traceparent` ([`TraceContextLayer`](crate::otel::TraceContextLayer)),
    /// and events carry it on through the outbox and any broker.
    #[cfg(feature = "otlp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otlp")))]
    pub fn export_traces(mut self, service: impl Into<String>) -> Self {
        self.telemetry.traces = Some(service.into());
        self
    }

    /// Adds the app's tenant tables, migrations and limits to the
    /// PostgreSQL tenancy.
    pub fn postgres(
        mut self,
        configure: impl FnOnce(PgTenancyBuilder) -> PgTenancyBuilder + Send + 'static,
    ) -> Self {
        self.postgres = Box::new(configure);
        self
    }

    /// Adds the app's tenant migrations and limits to the SQLite tenancy.
    pub fn sqlite(
        mut self,
        configure: impl FnOnce(SqliteTenancyBuilder) -> SqliteTenancyBuilder + Send + 'static,
    ) -> Self {
        self.sqlite = Box::new(configure);
        self
    }

    /// Called once the listener is bound, with its address (the port the
    /// system chose for `:0`) and where the data is (default: an `info`
    /// log line).
    pub fn on_listening(mut self, report: impl FnOnce(SocketAddr, &str) + Send + 'static) -> Self {
        self.on_listening = Box::new(report);
        self
    }

    /// Serves until Ctrl-C or SIGTERM.
    ///
    /// # Errors
    /// As [`Host::serve_until`].
    pub async fn serve<A>(self, app: A) -> Result<(), HostError>
    where
        A: App<PgTenancy> + App<SqliteTenancy>,
    {
        self.serve_until(app, shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then lets the requests in flight
    /// finish and stops the services (relay, consumers, pools).
    ///
    /// # Errors
    /// [`HostError`]: the stack could not be opened, the app could not
    /// start, the address could not be bound or the server failed. What
    /// was started is stopped first.
    pub async fn serve_until<A>(
        self,
        app: A,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HostError>
    where
        A: App<PgTenancy> + App<SqliteTenancy>,
    {
        let Host {
            settings,
            postgres,
            sqlite,
            on_listening,
            name,
            telemetry,
            #[cfg(feature = "prometheus")]
            metrics_path,
        } = self;
        let mut services = Services::new();
        let traced = telemetry.exports_traces();
        if let Err(e) = telemetry.install(settings.otlp_endpoint.as_deref(), &mut services) {
            services.shutdown().await;
            return Err(e);
        }
        #[cfg(feature = "prometheus")]
        let metrics = match metrics_path.map(|path| metrics_route(&path, &mut services)) {
            Some(Err(e)) => {
                services.shutdown().await;
                return Err(e);
            }
            Some(Ok(route)) => Some(route),
            None => None,
        };
        let opened = match &settings.database_url {
            Some(url) => match url.expose().parse::<PgConnectOptions>() {
                Ok(options) => {
                    let role = &settings.runtime_role;
                    match PgStack::open(options, role, &mut services, postgres).await {
                        Ok(stack) => start(&app, stack, &mut services).await,
                        Err(e) => Err(HostError::Stack(e)),
                    }
                }
                Err(e) => Err(HostError::Stack(StackError::Database(e))),
            },
            None => match SqliteStack::open(&settings.data_dir, &mut services, sqlite).await {
                Ok(stack) => start(&app, stack, &mut services).await,
                Err(e) => Err(HostError::Stack(e)),
            },
        };
        #[cfg(feature = "prometheus")]
        let opened = opened.map(|(router, storage)| match metrics {
            Some(route) => (router.merge(route), storage),
            None => (router, storage),
        });
        #[cfg(feature = "otlp")]
        let opened = opened.map(|(router, storage)| match traced {
            true => (router.layer(crate::otel::TraceContextLayer::new()), storage),
            false => (router, storage),
        });
        #[cfg(not(feature = "otlp"))]
        let _ = traced;
        let served = match opened {
            Ok((router, storage)) => {
                serve(router, &storage, &settings, on_listening, shutdown).await
            }
            Err(e) => Err(e),
        };
        services.shutdown().await;
        if let (Ok(()), Some(name)) = (&served, name) {
            println!("{name}: stopped");
        }
        served
    }
}

/// The Prometheus recorder installed, its upkeep started and its route at
/// `path`.
#[cfg(feature = "prometheus")]
fn metrics_route(path: &str, services: &mut Services) -> Result<axum::Router, HostError> {
    if !path.starts_with('/') {
        let e = format!("the metrics path {path:?} must start with '/'");
        return Err(HostError::Telemetry(e.into()));
    }
    let prometheus =
        crate::metrics::Prometheus::install().map_err(|e| HostError::Telemetry(Box::new(e)))?;
    prometheus.start_upkeep(services);
    Ok(prometheus.route(path))
}

/// Starts `app` on `stack`: its routes, and where the data is.
async fn start<T: StackBackend, A: App<T>>(
    app: &A,
    stack: Stack<T>,
    services: &mut Services,
) -> Result<(axum::Router, String), HostError> {
    let storage = stack.describe();
    let router = app.start(stack, services).await.map_err(HostError::App)?;
    Ok((router, storage))
}

async fn serve(
    router: axum::Router,
    storage: &str,
    settings: &Settings,
    on_listening: OnListening,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HostError> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| HostError::Listen(settings.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| HostError::Listen(settings.listen, e))?;
    on_listening(addr, storage);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(HostError::Serve)?;
    tracing::info!("shutting down");
    Ok(())
}

/// Why a [`Host`] stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The database URL, the database or the tenancy.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// The app did not start.
    #[error("the app did not start: {0}")]
    App(#[source] BoxError),
    /// The listen address could not be bound.
    #[error("cannot listen on {0}: {1}; is another server using it?")]
    Listen(SocketAddr, #[source] std::io::Error),
    /// The metrics recorder or the trace exporter could not be set up.
    #[error("cannot set up metrics or traces: {0}")]
    Telemetry(#[source] BoxError),
    /// The server failed while serving.
    #[error("the server failed: {0}")]
    Serve(#[source] std::io::Error),
}
