//! Instrumentation on vs off: the cost of the crates' metrics on the hot
//! paths, measured in one run.
//!
//! Both sides are built with the `metrics` features and set a recorder as
//! the thread's around each operation (the runtime is single-threaded, so
//! everything the operation runs records into it): "off" the facade's
//! no-op recorder, "on" a Prometheus recorder, as `Host::metrics_at`
//! installs. Setting the recorder costs both sides the same, so the ratio
//! is the recording itself.
//! Cases: a PostgreSQL scoped transaction with one statement (a row
//! tenant on the shared pool, and a database tenant through the pool
//! registry), and one event published on the in-memory bus and handled by
//! a router. Target: ≤ 1.03× at the median.
//!
//! Run: `cargo bench -p saas-benches --bench instrumentation`
//! (`SAAS_TEST_POSTGRES_URL`, default the local `test` database;
//! `SAAS_BENCH_REPEATS`, default 5).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use saas_benches::{PairedComparison, compare_paired};
use saas_core::TenantContext;
use saas_events::router::{ReceivedEvent, Router, handler_fn};
use saas_events::{Event, InMemoryBus, Publisher, SubscribeOptions};
use saas_tenancy::Strategy;
use saas_tenancy::postgres::{PoolLimits, ScopeMode};
use saas_tenancy::testing::pg::PgSandbox;
use tokio::sync::Notify;

const ROUNDS: u32 = 60;
const PER_ROUND: u32 = 50;

async fn scoped_statement(sandbox: &PgSandbox, ctx: &TenantContext) {
    let mut tx = sandbox.tenancy.begin(ctx).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(count, 0);
    tx.commit().await.unwrap();
}

struct Row {
    case: &'static str,
    result: PairedComparison,
}

/// Each case once, off (baseline) against on (candidate).
async fn run(url: &str, rows: &mut Vec<Row>) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let off = metrics::NoopRecorder;
    let limits = PoolLimits::new(8, 2);
    let mut sandbox = PgSandbox::with_limits(url, ScopeMode::Shared, limits)
        .await
        .unwrap();
    let row = sandbox.tenant("obs-row", Strategy::Shared).await.unwrap();
    let database = sandbox.tenant("obs-db", Strategy::Database).await.unwrap();
    for (case, ctx) in [
        ("PostgreSQL row tenant · begin + 1 statement + commit", &row),
        (
            "PostgreSQL database tenant · begin + 1 statement + commit",
            &database,
        ),
    ] {
        let result = compare_paired(
            ROUNDS,
            PER_ROUND,
            || async {
                let _off = metrics::set_default_local_recorder(&off);
                scoped_statement(&sandbox, ctx).await;
            },
            || async {
                let _on = metrics::set_default_local_recorder(&recorder);
                scoped_statement(&sandbox, ctx).await;
            },
        )
        .await;
        rows.push(Row { case, result });
    }
    sandbox.cleanup().await;

    // The in-memory path: publish, route, handle, acknowledge.
    let bus = InMemoryBus::new();
    // A permit per handled event: `notified` returns at once if the
    // handler was quicker than the publisher's return.
    let handled = Arc::new(Notify::new());
    let done = Arc::clone(&handled);
    let router = Router::new().route(
        "bench.event",
        handler_fn(move |_event: ReceivedEvent| {
            let done = Arc::clone(&done);
            async move {
                done.notify_one();
                Ok(())
            }
        }),
    );
    let running = router
        .run(&bus, "bench", SubscribeOptions::new().with_group("bench"))
        .await
        .unwrap();
    let tenant = saas_core::TenantId::new();
    let event = Event::new(tenant, "bench.event", "/bench", &1u32).unwrap();
    let one = || {
        let (bus, event, handled) = (bus.clone(), event.clone(), Arc::clone(&handled));
        async move {
            bus.publish("bench", event).await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), handled.notified())
                .await
                .unwrap();
        }
    };
    let result = compare_paired(
        ROUNDS,
        PER_ROUND,
        || async {
            let _off = metrics::set_default_local_recorder(&off);
            one().await;
        },
        || async {
            let _on = metrics::set_default_local_recorder(&recorder);
            one().await;
        },
    )
    .await;
    rows.push(Row {
        case: "in-memory bus · publish + route + handle + ack",
        result,
    });
    running.shutdown().await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let url = std::env::var("SAAS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let repeats: usize = std::env::var("SAAS_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut rows = Vec::new();
    for _ in 0..repeats {
        run(&url, &mut rows).await;
    }
    let mut report = format!(
        "instrumentation off (no-op recorder) vs on (Prometheus recorder); {repeats} runs, \
         each the median over {ROUNDS} paired rounds of {PER_ROUND}.\n\n\
         | case | off µs/op | on µs/op | ratio, median of runs | runs' ratios, lowest–highest | target |\n\
         |---|---:|---:|---:|---:|---|\n"
    );
    let mut cases: Vec<&str> = Vec::new();
    for row in &rows {
        if !cases.contains(&row.case) {
            cases.push(row.case);
        }
    }
    for case in cases {
        let runs: Vec<&Row> = rows.iter().filter(|r| r.case == case).collect();
        let median_us = |f: &dyn Fn(&PairedComparison) -> Duration| {
            let mut v: Vec<f64> = runs
                .iter()
                .map(|r| f(&r.result).as_secs_f64() * 1e6)
                .collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let mut ratios: Vec<u128> = runs.iter().map(|r| r.result.ratio_at(50)).collect();
        ratios.sort_unstable();
        let milli = |m: u128| format!("{}.{:03}×", m / 1000, m % 1000);
        report.push_str(&format!(
            "| {case} | {:.1} | {:.1} | {} | {}–{} | ≤ 1.03× |\n",
            median_us(&|r| r.baseline),
            median_us(&|r| r.candidate),
            milli(ratios[ratios.len() / 2]),
            milli(ratios[0]),
            milli(ratios[ratios.len() - 1]),
        ));
    }
    println!("{report}");
}
