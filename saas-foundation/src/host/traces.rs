//! What the host installs for logs and traces: one `tracing` subscriber
//! with a log layer (standard error, `RUST_LOG`) and, with
//! [`Host::export_traces`](super::Host::export_traces), an OpenTelemetry
//! layer exporting spans over OTLP/HTTP or to standard output.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use super::HostError;
use crate::services::Services;

/// What the host installs, as its builder was told.
#[derive(Debug, Default)]
pub(super) struct Telemetry {
    /// `RUST_LOG`'s default: logs to standard error when set.
    pub(super) log_filter: Option<String>,
    /// The service name spans are exported under.
    #[cfg(feature = "otlp")]
    pub(super) traces: Option<String>,
}

impl Telemetry {
    /// Whether spans are exported (the app's routes then continue the
    /// callers' traces).
    pub(super) fn exports_traces(&self) -> bool {
        #[cfg(feature = "otlp")]
        return self.traces.is_some();
        #[cfg(not(feature = "otlp"))]
        false
    }

    /// Installs the subscriber (unless the program has one already) and
    /// registers the trace exporter's flush with `services`.
    pub(super) fn install(
        self,
        otlp_endpoint: Option<&str>,
        services: &mut Services,
    ) -> Result<(), HostError> {
        let logs = self.log_filter.map(|default| {
            let filter = EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(default.as_str()));
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter)
        });
        #[cfg(feature = "otlp")]
        let traces = match self.traces {
            Some(service) => Some(export::layer(&service, otlp_endpoint, services)?),
            None => None,
        };
        #[cfg(not(feature = "otlp"))]
        let traces: Option<tracing_subscriber::layer::Identity> = {
            let _ = (otlp_endpoint, services);
            None
        };
        if logs.is_none() && traces.is_none() {
            // Neither asked for: the program's own subscriber, if any, stays
            // free to be installed later.
            return Ok(());
        }
        let exporting = traces.is_some();
        // An error means a subscriber is set: the program chose its own.
        if tracing_subscriber::registry()
            .with(logs)
            .with(traces)
            .try_init()
            .is_err()
            && exporting
        {
            tracing::warn!(
                "a tracing subscriber was already installed: spans are not exported; \
                 add the OpenTelemetry layer to it, or let the host install its own"
            );
        }
        Ok(())
    }
}

#[cfg(feature = "otlp")]
mod export {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::registry::LookupSpan;

    use super::super::HostError;
    use crate::services::Services;

    /// The OpenTelemetry layer: `info` spans and above, batched to
    /// `endpoint` (OTLP/HTTP, protobuf) or to standard output; flushed
    /// when `services` stop. Also makes the W3C trace context the global
    /// propagator, which events and requests carry their context with.
    pub(super) fn layer<S>(
        service: &str,
        endpoint: Option<&str>,
        services: &mut Services,
    ) -> Result<impl Layer<S>, HostError>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let resource = Resource::builder()
            .with_service_name(service.to_owned())
            .build();
        let provider = SdkTracerProvider::builder().with_resource(resource);
        let provider = match endpoint {
            Some(endpoint) => {
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(endpoint)
                    .build()
                    .map_err(|e| HostError::Telemetry(Box::new(e)))?;
                provider.with_batch_exporter(exporter)
            }
            None => provider.with_batch_exporter(opentelemetry_stdout::SpanExporter::default()),
        }
        .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let tracer = provider.tracer(service.to_owned());
        services.on_stop("trace export", move || async move {
            // Flushes the last batch; a blocking call, off the runtime's
            // worker threads.
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        });
        Ok(tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(LevelFilter::INFO))
    }
}
