//! Feature `otel`: one trace from an HTTP request, through the event it
//! publishes in its scoped transaction, the PostgreSQL outbox, the relay
//! and NATS JetStream, into the span of the handler that event reaches.
//!
//! The spans are real OpenTelemetry spans (an SDK tracer provider behind a
//! `tracing-opentelemetry` layer, exported into memory). The subscriber is
//! the default of the test's own thread only, so the other tests of this
//! binary neither see it nor add spans to it; the runtime is a
//! current-thread one on that thread, so the tasks the relay and the
//! router spawn run there too and their spans are recorded.

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Request, State};
use axum::middleware::Next;
use axum::routing::post;
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use saas_core::{TenantContext, TenantSlug};
use saas_events::middleware::TracingLayer;
use saas_events::nats::{NatsBus, NatsConfig};
use saas_events::postgres::{DEFAULT_OUTBOX_TABLE, PgOutbox, RelayConfig};
use saas_events::router::{ReceivedEvent, Router, handler_fn};
use saas_events::{Event, SubscribeOptions};
use saas_foundation::otel::TraceContextLayer;
use saas_foundation::problem::Problem;
use saas_foundation::services::Services;
use saas_foundation::stack::PgStack;
use saas_foundation::transaction::{ScopedTx, TransactionLayer};
use saas_tenancy::postgres::PgTenancy;
use saas_tenancy::{NewTenant, Strategy, Tenancy, TenantTable};
use saas_test_support::{Service, service_url, unique_name};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, SqlSafeStr};
use tokio::sync::mpsc;
use tower::ServiceExt;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

const TOPIC: &str = "notes";
/// The caller's context on the first request: its trace, and its span
/// (the remote parent of the request's span).
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Every ended span, kept for the test to read.
#[derive(Debug, Clone, Default)]
struct Exported(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Exported {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

/// What the event handler saw: the event's id and `traceparent`, and its
/// own span's trace and span ids.
#[derive(Debug)]
struct Handled {
    event_id: String,
    traceparent: Option<String>,
    trace_id: TraceId,
    span_id: SpanId,
}

#[test]
fn one_trace_from_a_request_through_the_outbox_and_nats_to_the_handler() {
    let test = "otel_trace::one_trace_from_a_request_through_the_outbox_and_nats_to_the_handler";
    let Some(pg_url) = service_url(Service::Postgres, test) else {
        return;
    };
    let Some(nats_url) = service_url(Service::Nats, test) else {
        return;
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exported = Exported::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exported.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("saas-foundation-tests")));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(run(&pg_url, &nats_url, &exported));
    });
}

async fn run(pg_url: &str, nats_url: &str, exported: &Exported) {
    let (schema, role, prefix) = (
        unique_name("saas_otel"),
        unique_name("saas_rt"),
        unique_name("otel"),
    );
    let mut services = Services::new();
    let stack = open_stack(pg_url, &schema, &role, &mut services).await;
    let new = NewTenant::new(
        TenantSlug::parse("acme").unwrap(),
        "Acme",
        Strategy::Shared,
        stack.cluster().clone(),
    )
    .unwrap();
    let tenant = stack.tenancy().provision(new).await.unwrap().id;
    let acme = stack.tenancy().context(tenant).await.unwrap();

    // The consumer on NATS, subscribed before the relay starts.
    let bus = NatsBus::connect(
        nats_url,
        NatsConfig::default().with_prefix(&prefix).unwrap(),
    )
    .await
    .unwrap();
    let (handled_tx, mut handled_rx) = mpsc::unbounded_channel();
    let handler = handler_fn(move |e: ReceivedEvent| {
        let cx = tracing::Span::current().context();
        let ids = cx.span().span_context().clone();
        let _ = handled_tx.send(Handled {
            event_id: e.event().id().to_owned(),
            traceparent: e.event().traceparent().map(str::to_owned),
            trace_id: ids.trace_id(),
            span_id: ids.span_id(),
        });
        async { Ok(()) }
    });
    let consumer = Router::new()
        .route("note.added", handler)
        .layer(TracingLayer::new())
        .run(&bus, TOPIC, SubscribeOptions::new().with_group("otel"))
        .await
        .unwrap();
    let relay = RelayConfig::default().with_poll_interval(Duration::from_millis(20));
    stack.start_relay(Arc::new(bus.clone()), relay, &mut services);

    let app = app(stack.clone(), acme);
    let traced = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let first = post_note(&app, Some(&traced)).await;
    let second = post_note(&app, None).await;
    let mut handled = HashMap::new();
    while handled.len() < 2 {
        let next = tokio::time::timeout(Duration::from_secs(30), handled_rx.recv())
            .await
            .expect("both events handled within 30 s")
            .unwrap();
        handled.insert(next.event_id.clone(), next);
    }
    // Stopped before reading the spans: a span is exported when it ends,
    // and the router lets the handlers it started finish.
    consumer.shutdown().await;
    services.shutdown().await;

    let spans = exported.0.lock().unwrap().clone();
    let first = &handled[&first];
    assert_eq!(
        first.trace_id.to_string(),
        CALLER_TRACE,
        "the handler continues the caller's trace"
    );
    assert_eq!(
        chain(&spans, first.span_id),
        ["note.added process", "notes.add", "POST"],
        "handler ← the span that created the event ← the request (named by its method)"
    );
    let carried: saas_events::TraceContext = first.traceparent.as_deref().unwrap().parse().unwrap();
    let handler_span = find(&spans, first.span_id);
    assert_eq!(
        handler_span.parent_span_id.to_string(),
        carried.parent_id(),
        "the handler's parent is the span id the event carried"
    );
    let request_span = find(
        &spans,
        chain_ids(&spans, first.span_id).last().copied().unwrap(),
    );
    assert_eq!(request_span.parent_span_id.to_string(), CALLER_SPAN);
    assert!(request_span.parent_span_is_remote);

    let second = &handled[&second];
    assert_ne!(
        second.trace_id, first.trace_id,
        "a request without traceparent starts its own trace"
    );
    assert_eq!(
        chain(&spans, second.span_id),
        ["note.added process", "notes.add", "POST"]
    );

    bus.delete_topic(TOPIC).await.unwrap();
    drop(stack);
    drop_schema(pg_url, &schema, &role).await;
}

/// The span ids from `id` up its parents, as far as they were exported.
fn chain_ids(spans: &[SpanData], id: SpanId) -> Vec<SpanId> {
    let mut ids = vec![id];
    let mut at = find(spans, id);
    while let Some(parent) = spans
        .iter()
        .find(|s| s.span_context.span_id() == at.parent_span_id)
    {
        ids.push(parent.span_context.span_id());
        at = parent;
    }
    ids
}

/// The names of the spans from `id` up its parents.
fn chain(spans: &[SpanData], id: SpanId) -> Vec<String> {
    chain_ids(spans, id)
        .into_iter()
        .map(|id| find(spans, id).name.to_string())
        .collect()
}

fn find(spans: &[SpanData], id: SpanId) -> &SpanData {
    spans
        .iter()
        .find(|s| s.span_context.span_id() == id)
        .unwrap_or_else(|| panic!("no exported span {id}"))
}

/// `POST /notes` for acme, with `traceparent` if given; the id of the
/// event it published.
async fn post_note(app: &axum::Router, traceparent: Option<&str>) -> String {
    let mut request = Request::builder()
        .method("POST")
        .uri("/notes")
        .header("x-tenant", "acme");
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::CREATED);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

/// Publishes `note.added` through the outbox in the request's scoped
/// transaction, inside a span of its own (so the chain shows the event
/// was created there, under the request's span).
async fn add_note(
    State(stack): State<PgStack>,
    Extension(ctx): Extension<TenantContext>,
    mut tx: ScopedTx<PgTenancy>,
) -> Result<(http::StatusCode, String), Problem> {
    async move {
        let event = Event::new(ctx.tenant_id(), "note.added", "/notes", &7)?;
        let id = event.id().to_owned();
        stack.publish(&mut tx, TOPIC, event).await?;
        Ok((http::StatusCode::CREATED, id))
    }
    .instrument(tracing::info_span!("notes.add"))
    .await
}

/// The route behind the scoped transaction, the `x-tenant` stand-in for
/// `TenantLayer`, and the trace layer outermost.
fn app(stack: PgStack, acme: TenantContext) -> axum::Router {
    let tenancy = Arc::clone(stack.tenancy());
    let resolve = move |mut request: Request, next: Next| {
        let acme = acme.clone();
        async move {
            if request
                .headers()
                .get("x-tenant")
                .and_then(|v| v.to_str().ok())
                == Some("acme")
            {
                request.extensions_mut().insert(acme);
            }
            next.run(request).await
        }
    };
    axum::Router::new()
        .route("/notes", post(add_note))
        .with_state(stack)
        .layer(TransactionLayer::shared(tenancy).for_writes())
        .layer(axum::middleware::from_fn(resolve))
        .layer(TraceContextLayer::new())
}

/// The stack in a schema of its own, the outbox a shared tenant table.
async fn open_stack(url: &str, schema: &str, role: &str, services: &mut Services) -> PgStack {
    let base = PgConnectOptions::from_str(url).unwrap();
    let bootstrap = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(base.clone())
        .await
        .unwrap();
    bootstrap
        .execute(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .await
        .unwrap();
    bootstrap.close().await;
    let outbox = AssertSqlSafe(PgOutbox::new().create_table_sql()).into_sql_str();
    let shared = Migrator::with_migrations(vec![Migration::new(
        1,
        "outbox".into(),
        MigrationType::Simple,
        outbox,
        false,
    )]);
    PgStack::open(
        base.options([("search_path", schema)]),
        role,
        services,
        |tenancy| {
            tenancy
                .tenant_table(TenantTable::new(DEFAULT_OUTBOX_TABLE).unwrap())
                .shared_migrations(shared)
        },
    )
    .await
    .unwrap()
}

async fn drop_schema(url: &str, schema: &str, role: &str) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(PgConnectOptions::from_str(url).unwrap())
        .await
        .unwrap();
    for statement in [
        format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"),
        format!("DROP OWNED BY \"{role}\""),
        format!("DROP ROLE IF EXISTS \"{role}\""),
    ] {
        let _ = pool.execute(AssertSqlSafe(statement)).await;
    }
    pool.close().await;
}
