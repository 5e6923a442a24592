//! The spans the crates open carry the tenant: provisioning, scoped
//! handles, deletion (with `tenant_id`), and the relay pass and billing
//! cycle, recorded by a subscriber of this test's thread.

use std::sync::{Arc, Mutex};

use saas_core::{ManualClock, TenantSlug};
use saas_foundation::services::Services;
use saas_foundation::stack::SqliteStack;
use saas_tenancy::{NewTenant, Strategy, Tenancy};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::Registry;

/// A span's name and its `tenant_id` field.
type Span = (String, Option<String>);

/// Every span opened.
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<Span>>>);

struct TenantField(Option<String>);

impl tracing::field::Visit for TenantField {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "tenant_id" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorded {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        let mut tenant = TenantField(None);
        attrs.record(&mut tenant);
        let name = attrs.metadata().name().to_owned();
        self.0.lock().unwrap().push((name, tenant.0));
    }
}

#[test]
fn tenancy_and_billing_spans_carry_the_tenant() {
    let recorded = Recorded::default();
    let subscriber = Registry::default().with(recorded.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    // One thread: everything the test runs reports to its subscriber.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(saas_test_support::unique_name("saas_spans"));
    let tenant = runtime.block_on(async {
        let mut services = Services::new();
        let stack = SqliteStack::open(&dir, &mut services, |b| b).await.unwrap();
        let bus = saas_events::InMemoryBus::new();
        stack.start_relay(Arc::new(bus), Default::default(), &mut services);
        let tenancy = stack.tenancy();
        let slug = TenantSlug::parse("spans").unwrap();
        let new = NewTenant::new(slug, "Spans", Strategy::Database, stack.cluster().clone());
        let record = tenancy.provision(new.unwrap()).await.unwrap();
        let ctx = tenancy.context(record.id).await.unwrap();
        tenancy.begin(&ctx).await.unwrap().commit().await.unwrap();
        drop(tenancy.acquire(&ctx).await.unwrap());
        tenancy.delete_tenant(record.id).await.unwrap();
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let catalog = saas_billing::Catalog::builder().build().unwrap();
        let engine = stack.billing_engine(catalog, clock).await.unwrap();
        engine.run_billing_cycle().await.unwrap();
        // At least one relay pass (they run every 20 ms).
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        services.shutdown().await;
        record.id.to_string()
    });
    let _ = std::fs::remove_dir_all(&dir);
    let spans = recorded.0.lock().unwrap().clone();
    for name in [
        "tenancy.provision",
        "tenancy.begin",
        "tenancy.acquire",
        "tenancy.delete",
    ] {
        let found = spans.iter().find(|(n, _)| n == name);
        let (_, field) = found.unwrap_or_else(|| panic!("no {name} span in {spans:?}"));
        assert_eq!(
            field.as_deref(),
            Some(tenant.as_str()),
            "{name}'s tenant_id"
        );
    }
    for name in ["billing.cycle", "outbox.relay_pass"] {
        assert!(
            spans.iter().any(|(n, _)| n == name),
            "no {name} span in {spans:?}"
        );
    }
}
