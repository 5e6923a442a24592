//! The escape hatch is visible: every `unscoped_admin_connection` emits
//! one `warn` event naming the cluster and the caller's reason.
//!
//! Each test fires the warning once before installing its capture. tracing
//! caches a callsite's interest when it first fires; another test firing
//! the warning for the first time on its own thread while the capture is
//! being installed can cache "never" and hide the warning from the capture.
//! Once the callsite is registered, installing the capture recomputes the
//! cache under tracing's lock, so the warm-up leaves nothing to race.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use saas_tenancy::Strategy;
use saas_tenancy::postgres::ScopeMode;
use saas_tenancy::testing::sqlite::SqliteSandbox;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::pg_env::sandbox;

/// One captured event: its level and its fields as text.
#[derive(Debug, Clone)]
struct Captured {
    level: Level,
    fields: BTreeMap<String, String>,
}

/// A subscriber that records every event (spans are ignored).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let level = *event.metadata().level();
        self.0.lock().unwrap().push(Captured { level, fields });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Capture {
    /// The escape-hatch events captured so far.
    fn hatch_events(&self) -> Vec<Captured> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|e| {
                e.fields.get("message").map(String::as_str) == Some("unscoped_admin_connection")
            })
            .cloned()
            .collect()
    }
}

fn assert_one_warning(capture: &Capture, cluster: &str, reason: &str) {
    let events = capture.hatch_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].level, Level::WARN);
    assert_eq!(
        events[0].fields.get("reason").map(String::as_str),
        Some(reason)
    );
    assert_eq!(
        events[0].fields.get("cluster").map(String::as_str),
        Some(cluster)
    );
}

// `#[tokio::test]` runs on the test's thread, where the capture is the
// default subscriber for the duration of the guard.
#[tokio::test]
async fn postgres_escape_hatch_logs_a_warning_with_the_reason() {
    let Some(mut env) = sandbox("escape_hatch::pg", ScopeMode::Shared).await else {
        return;
    };
    let a = env.tenant("hatch-a", Strategy::Shared).await.unwrap();
    let b = env.tenant("hatch-b", Strategy::Shared).await.unwrap();
    for ctx in [&a, &b] {
        let mut tx = env.tenancy.begin(ctx).await.unwrap();
        sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, 'x')")
            .bind(ctx.tenant_id())
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    // See the module note on warming up.
    let warm_up = env
        .tenancy
        .unscoped_admin_connection(&env.cluster, "warm-up");
    drop(warm_up.await.unwrap());
    let capture = Capture::default();
    let guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(capture.clone()));
    let reason = "monthly report across tenants";
    let mut admin = env
        .tenancy
        .unscoped_admin_connection(&env.cluster, reason)
        .await
        .unwrap();
    drop(guard);
    assert_one_warning(&capture, env.cluster.as_str(), reason);
    // It is unscoped indeed: every tenant's rows.
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut *admin)
        .await
        .unwrap();
    assert_eq!(all, 2);
    drop(admin);
    env.cleanup().await;
}

#[tokio::test]
async fn sqlite_escape_hatch_logs_a_warning_with_the_reason() {
    let sandbox = SqliteSandbox::new().await.unwrap();
    // See the module note on warming up.
    let warm_up = sandbox
        .tenancy
        .unscoped_admin_connection(&sandbox.cluster, "warm-up");
    drop(warm_up.await.unwrap());
    let capture = Capture::default();
    let guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(capture.clone()));
    let reason = "support ticket 4711: inspect shared rows";
    let admin = sandbox
        .tenancy
        .unscoped_admin_connection(&sandbox.cluster, reason)
        .await
        .unwrap();
    drop(guard);
    assert_one_warning(&capture, sandbox.cluster.as_str(), reason);
    drop(admin);
    sandbox.cleanup().await;
}
