//! The registry's metrics, read back from a recorder of this test's
//! thread: the gauges follow pools opening, being evicted and closed, and
//! come back to zero when the registry goes; evictions and waits count.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use saas_core::TenantId;
use saas_tenancy::registry::{PoolLimits, PoolRegistry};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Pool, Sqlite};

fn open(limits: &PoolLimits) -> Pool<Sqlite> {
    SqlitePoolOptions::new()
        .max_connections(limits.per_tenant)
        .connect_lazy("sqlite::memory:")
        .unwrap()
}

/// What was recorded so far. A snapshot drains the recorder (counters and
/// gauges swap to zero, histograms clear), so the readings add up: gauges
/// here only move by increments and decrements.
struct Readings {
    snapshotter: Snapshotter,
    totals: RefCell<HashMap<String, f64>>,
}

impl Readings {
    /// The series `name` (without labels): a counter's count, a gauge's
    /// value, a histogram's number of samples; 0 if never recorded.
    fn value(&self, name: &str) -> f64 {
        let mut totals = self.totals.borrow_mut();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let reading = match value {
                DebugValue::Gauge(v) => v.into_inner(),
                DebugValue::Counter(v) => v as f64,
                DebugValue::Histogram(v) => v.len() as f64,
            };
            *totals.entry(key.key().name().to_owned()).or_default() += reading;
        }
        totals.get(name).copied().unwrap_or_default()
    }
}

#[test]
fn pool_gauges_follow_the_pools_and_return_to_zero() {
    let recorder = DebuggingRecorder::new();
    let readings = Readings {
        snapshotter: recorder.snapshotter(),
        totals: RefCell::default(),
    };
    let _local = metrics::set_default_local_recorder(&recorder);
    // One thread, so the registry's close tasks record here too.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let limits = PoolLimits::new(4, 2).with_acquire_timeout(Duration::from_millis(50));
        let registry = PoolRegistry::new(limits).unwrap();
        assert_eq!(readings.value("saas_tenancy_pool_budget"), 4.0);
        let (a, b, c) = (TenantId::new(), TenantId::new(), TenantId::new());
        let lease_a = registry.lease(a, open).await.unwrap();
        drop(registry.lease(b, open).await.unwrap());
        assert_eq!(readings.value("saas_tenancy_pools_open"), 2.0);
        assert_eq!(readings.value("saas_tenancy_pool_budget_in_use"), 4.0);
        assert_eq!(readings.value("saas_tenancy_pools_opened_total"), 2.0);
        // C needs room: B (idle) is evicted; A is held.
        drop(registry.lease(c, open).await.unwrap());
        assert_eq!(readings.value("saas_tenancy_pool_evictions_total"), 1.0);
        assert_eq!(readings.value("saas_tenancy_pools_open"), 2.0);
        assert_eq!(readings.value("saas_tenancy_pool_budget_in_use"), 4.0);
        // A and C held: no room for B, which waits and times out.
        let lease_c = registry.lease(c, open).await.unwrap();
        assert!(registry.lease(b, open).await.is_err());
        assert_eq!(readings.value("saas_tenancy_pool_waits_total"), 1.0);
        assert_eq!(readings.value("saas_tenancy_pool_wait_seconds"), 1.0);
        assert_eq!(readings.value("saas_tenancy_pool_timeouts_total"), 1.0);
        drop((lease_a, lease_c));
        registry.close(a).await;
        assert_eq!(readings.value("saas_tenancy_pools_open"), 1.0);
        assert_eq!(readings.value("saas_tenancy_pool_budget_in_use"), 2.0);
        drop(registry);
        assert_eq!(readings.value("saas_tenancy_pools_open"), 0.0);
        assert_eq!(readings.value("saas_tenancy_pool_budget_in_use"), 0.0);
        assert_eq!(readings.value("saas_tenancy_pool_budget"), 0.0);
    });
}
