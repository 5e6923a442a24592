//! The Prometheus recorder and its `/metrics` route.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::services::Services;

/// Buckets of every `*_seconds` histogram: 100 µs to 10 s.
const SECONDS_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// How often histograms are compacted (the exporter's upkeep).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder: every series the crates record,
/// rendered in the Prometheus text format.
///
/// ```
/// use saas_foundation::metrics::Prometheus;
///
/// let prometheus = Prometheus::install()?;
/// metrics::counter!("app_signups_total").increment(1);
/// assert!(prometheus.render().contains("app_signups_total 1"));
/// // Serve it: `app.merge(prometheus.route("/metrics"))`.
/// # Ok::<(), saas_foundation::metrics::PrometheusError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Prometheus {
    handle: PrometheusHandle,
}

impl Prometheus {
    /// Installs the Prometheus recorder as the process's `metrics`
    /// recorder, once: later calls return the same one. Histograms named
    /// `*_seconds` get buckets from 100 µs to 10 s.
    ///
    /// # Errors
    /// [`PrometheusError`]: another recorder is installed already.
    pub fn install() -> Result<Self, PrometheusError> {
        if let Some(handle) = HANDLE.get() {
            return Ok(Prometheus {
                handle: handle.clone(),
            });
        }
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .map_err(|e| PrometheusError(e.to_string()))?;
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Two callers racing: one installs, the other finds it set.
        match ::metrics::set_global_recorder(recorder) {
            Ok(()) => Ok(Prometheus {
                handle: HANDLE.get_or_init(|| handle).clone(),
            }),
            Err(_) => HANDLE
                .get()
                .map(|handle| Prometheus {
                    handle: handle.clone(),
                })
                .ok_or_else(|| {
                    PrometheusError(
                        "another metrics recorder is installed in this process".to_owned(),
                    )
                }),
        }
    }

    /// Every series now, in the Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// A route serving [`render`](Self::render) at `path` (`GET`, content
    /// type `text/plain; version=0.0.4`). It has no authentication of its
    /// own: serve it where only the scraper reaches it, or put a layer on
    /// it.
    pub fn route<S: Clone + Send + Sync + 'static>(&self, path: &str) -> axum::Router<S> {
        let handle = self.handle.clone();
        axum::Router::new().route(
            path,
            axum::routing::get(move || {
                let body = handle.render();
                async move {
                    (
                        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        body,
                    )
                }
            }),
        )
    }

    /// Runs the exporter's upkeep (compacting histograms) every few
    /// seconds until `services` stop.
    pub fn start_upkeep(&self, services: &mut Services) {
        let handle = self.handle.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => handle.run_upkeep(),
                    _ = &mut stopped => return,
                }
            }
        });
        services.on_stop("metrics upkeep", move || async move {
            let _ = stop.send(());
            let _ = task.await;
        });
    }
}

/// The Prometheus recorder could not be installed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot install the Prometheus recorder: {0}; install it once, before any other")]
pub struct PrometheusError(String);
