//! The Redis quota store: the conformance suite, and the multi-server
//! checks of issue 15 §2 (three stores on their own connections, as three
//! servers would be; a restart; reservations; a rollover under load).
//!
//! Needs `SAAS_TEST_REDIS_URL`. Each test writes under a random key prefix
//! of its own and deletes every key under it afterwards.

use std::time::Duration;

use saas_billing::TenantId;
use saas_billing::quota::{
    Consumption, QuotaKey, QuotaStore, RedisQuotaConfig, RedisQuotaStore, ReserveOutcome,
};
use saas_billing::testing::Cleanup;
use saas_test_support::{Service, service_url, unique_name};

/// Where a test's stores live: the server and a prefix of the test's own.
pub(crate) struct RedisQuotaFixture {
    url: String,
    config: RedisQuotaConfig,
}

impl RedisQuotaFixture {
    /// `None` (after a skip line) when Redis is not configured.
    pub(crate) fn new(test: &str) -> Option<RedisQuotaFixture> {
        let url = service_url(Service::Redis, test)?;
        let config = RedisQuotaConfig::default()
            .with_prefix(&unique_name("quota_test"))
            .unwrap();
        Some(RedisQuotaFixture { url, config })
    }

    /// A store on a connection of its own: another server.
    pub(crate) async fn server(&self) -> RedisQuotaStore {
        RedisQuotaStore::connect(&self.url, self.config.clone())
            .await
            .unwrap()
    }

    /// Deletes every key under the prefix.
    pub(crate) fn cleanup(&self) -> Cleanup {
        let (url, pattern) = (self.url.clone(), format!("{}:*", self.config.prefix()));
        Cleanup::new(async move {
            let keys = keys_matching(&url, &pattern).await;
            if !keys.is_empty() {
                let client = redis::Client::open(url.as_str()).unwrap();
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let _: i64 = redis::cmd("DEL")
                    .arg(keys)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        })
    }

    /// The Redis keys under the prefix.
    pub(crate) async fn keys(&self) -> Vec<String> {
        keys_matching(&self.url, &format!("{}:*", self.config.prefix())).await
    }
}

async fn keys_matching(url: &str, pattern: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

mod conformance {
    use std::sync::Arc;

    use saas_billing::quota::QuotaStore;
    use saas_billing::testing::Cleanup;

    async fn store() -> Option<(Arc<dyn QuotaStore>, Cleanup)> {
        let fixture = super::RedisQuotaFixture::new("saas-billing redis quota conformance")?;
        let store = fixture.server().await;
        Some((Arc::new(store), fixture.cleanup()))
    }
    saas_billing::quota_store_conformance!(store);
}

/// `tasks_per_server` tasks on each store, each making `each` grants of 1
/// against `limit`; the grants made in all.
async fn race(
    stores: &[RedisQuotaStore],
    key: &QuotaKey,
    tasks_per_server: usize,
    each: usize,
    limit: u64,
) -> u64 {
    let mut runs = Vec::new();
    for store in stores {
        for _ in 0..tasks_per_server {
            let (store, key) = (store.clone(), key.clone());
            runs.push(tokio::spawn(async move {
                let mut granted = 0u64;
                for _ in 0..each {
                    if store
                        .try_consume(&key, 1, limit)
                        .await
                        .unwrap()
                        .is_granted()
                    {
                        granted += 1;
                    }
                }
                granted
            }));
        }
    }
    let mut granted = 0;
    for run in runs {
        granted += run.await.unwrap();
    }
    granted
}

/// Three servers × 8 tasks × 1,000 `try_consume` of 1 against a limit of
/// 500: exactly 500 granted in all, and stored; a fresh store (a restart)
/// sees 500 and grants no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_three_servers_grant_exactly_the_limit() {
    let Some(fixture) = RedisQuotaFixture::new("redis_three_servers_grant_exactly_the_limit")
    else {
        return;
    };
    let cleanup = fixture.cleanup();
    let stores = vec![
        fixture.server().await,
        fixture.server().await,
        fixture.server().await,
    ];
    let key = QuotaKey::new(TenantId::new(), "api_calls", "2026-12").unwrap();
    assert_eq!(race(&stores, &key, 8, 1_000, 500).await, 500);
    for store in &stores {
        assert_eq!(store.used(&key).await.unwrap(), 500);
    }
    drop(stores);

    let restarted = fixture.server().await;
    assert_eq!(restarted.used(&key).await.unwrap(), 500);
    assert_eq!(
        restarted.try_consume(&key, 1, 500).await.unwrap(),
        Consumption::Denied { remaining: 0 }
    );
    cleanup.run().await;
}

/// Many tasks on three servers move from period "p1" to "p2" at once:
/// each period's counter counts exactly its own grants, and "p2" starts
/// from zero once (its limit granted exactly, however the tasks race).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rollover_across_servers_counts_each_period_once() {
    let Some(fixture) =
        RedisQuotaFixture::new("redis_rollover_across_servers_counts_each_period_once")
    else {
        return;
    };
    let cleanup = fixture.cleanup();
    let stores = vec![
        fixture.server().await,
        fixture.server().await,
        fixture.server().await,
    ];
    let tenant = TenantId::new();
    let p1 = QuotaKey::new(tenant, "api_calls", "p1").unwrap();
    let p2 = QuotaKey::new(tenant, "api_calls", "p2").unwrap();
    // Each task makes 30 grants in "p1" then 30 in "p2": 3 × 4 × 30 = 360
    // asked per period against a limit of 100. Tasks switch period at
    // different moments, so "p1" and "p2" grants interleave.
    let mut runs = Vec::new();
    for store in &stores {
        for _ in 0..4 {
            let (store, p1, p2) = (store.clone(), p1.clone(), p2.clone());
            runs.push(tokio::spawn(async move {
                let mut granted = [0u64; 2];
                for (period, key) in [&p1, &p2].into_iter().enumerate() {
                    for _ in 0..30 {
                        if store.try_consume(key, 1, 100).await.unwrap().is_granted() {
                            granted[period] += 1;
                        }
                    }
                }
                granted
            }));
        }
    }
    let mut granted = [0u64; 2];
    for run in runs {
        let [first, second] = run.await.unwrap();
        granted[0] += first;
        granted[1] += second;
    }
    assert_eq!(granted, [100, 100]);
    assert_eq!(stores[0].used(&p1).await.unwrap(), 100);
    assert_eq!(stores[1].used(&p2).await.unwrap(), 100);
    cleanup.run().await;
}

/// A reservation round trip across servers and a restart: reserved units
/// count as used on every server, a reservation made on one server is
/// committed or released on another, and the counts survive a new
/// connection.
#[tokio::test]
async fn redis_reserve_commit_release_across_servers_and_restart() {
    let Some(fixture) =
        RedisQuotaFixture::new("redis_reserve_commit_release_across_servers_and_restart")
    else {
        return;
    };
    let cleanup = fixture.cleanup();
    let (first, second) = (fixture.server().await, fixture.server().await);
    let projects = QuotaKey::standing(TenantId::new(), "projects").unwrap();
    let ttl = Duration::from_secs(600);
    let ReserveOutcome::Reserved(kept) = first.reserve(&projects, 1, 2, ttl).await.unwrap() else {
        panic!("reservation refused");
    };
    let ReserveOutcome::Reserved(dropped) = first.reserve(&projects, 1, 2, ttl).await.unwrap()
    else {
        panic!("reservation refused");
    };
    assert_eq!(
        second.reserve(&projects, 1, 2, ttl).await.unwrap(),
        ReserveOutcome::Denied { remaining: 0 }
    );
    drop(first);

    let restarted = fixture.server().await;
    assert_eq!(restarted.used(&projects).await.unwrap(), 2);
    restarted.commit(&kept).await.unwrap();
    second.release(&dropped).await.unwrap();
    assert_eq!(restarted.used(&projects).await.unwrap(), 1);
    assert_eq!(second.used(&projects).await.unwrap(), 1);
    second.give_back(&projects, 1).await.unwrap();
    assert_eq!(restarted.used(&projects).await.unwrap(), 0);
    // Back at zero with nothing reserved: no key is left behind.
    assert_eq!(fixture.keys().await, Vec::<String>::new());
    cleanup.run().await;
}

/// Reservations expire by the time of the caller's clock, passed to the
/// script, not by the Redis server's: a server whose clock has passed the
/// expiry reclaims the units; one whose clock has not yet sees them held.
#[tokio::test]
async fn redis_reservations_expire_by_the_callers_clock() {
    use std::sync::Arc;

    use saas_billing::{ErrorKind, ManualClock, TimeDelta, TimeZone, Utc};

    let Some(fixture) = RedisQuotaFixture::new("redis_reservations_expire_by_the_callers_clock")
    else {
        return;
    };
    let cleanup = fixture.cleanup();
    let start = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let (ahead, behind) = (
        Arc::new(ManualClock::new(start)),
        Arc::new(ManualClock::new(start)),
    );
    let server = |clock: Arc<ManualClock>| {
        let url = fixture.url.clone();
        let config = fixture.config.clone().with_clock(clock);
        async move { RedisQuotaStore::connect(&url, config).await.unwrap() }
    };
    let (first, second) = (server(ahead.clone()).await, server(behind.clone()).await);
    let projects = QuotaKey::standing(TenantId::new(), "projects").unwrap();
    let ReserveOutcome::Reserved(held) = first
        .reserve(&projects, 1, 1, Duration::from_secs(60))
        .await
        .unwrap()
    else {
        panic!("reservation refused");
    };
    assert_eq!(held.expires_at(), start + TimeDelta::seconds(60));
    ahead.advance(TimeDelta::seconds(59));
    assert_eq!(first.used(&projects).await.unwrap(), 1);
    ahead.advance(TimeDelta::seconds(1));
    // The second server's clock is still at the start: the unit is held.
    assert_eq!(second.used(&projects).await.unwrap(), 1);
    // The first's has reached the expiry: the unit goes back, once.
    assert_eq!(first.used(&projects).await.unwrap(), 0);
    assert_eq!(
        second.commit(&held).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(
        second
            .try_consume(&projects, 1, 1)
            .await
            .unwrap()
            .is_granted()
    );
    cleanup.run().await;
}

/// Names and periods holding the separator, braces or the same bytes in
/// other places are different counters.
#[tokio::test]
async fn redis_keys_never_collide() {
    let Some(fixture) = RedisQuotaFixture::new("redis_keys_never_collide") else {
        return;
    };
    let cleanup = fixture.cleanup();
    let store = fixture.server().await;
    let tenant = TenantId::new();
    let keys = [
        QuotaKey::new(tenant, "a:b", "c").unwrap(),
        QuotaKey::new(tenant, "a", "b:c").unwrap(),
        QuotaKey::new(tenant, "a:1:b", "c").unwrap(),
        QuotaKey::new(tenant, "a}", "{b").unwrap(),
        QuotaKey::new(tenant, "a", "}{b").unwrap(),
        QuotaKey::standing(tenant, "a:b:c").unwrap(),
    ];
    for (i, key) in keys.iter().enumerate() {
        let amount = i as u64 + 1;
        assert!(
            store
                .try_consume(key, amount, 100)
                .await
                .unwrap()
                .is_granted()
        );
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(store.used(key).await.unwrap(), i as u64 + 1, "{key}");
    }
    cleanup.run().await;
}

/// The prefix is validated: empty, too long, or holding `{` or spaces is
/// `InvalidInput`.
#[test]
fn redis_prefix_is_validated() {
    use saas_billing::ErrorKind;
    use saas_billing::quota::MAX_REDIS_PREFIX_LEN;

    for bad in ["", "a{b", "a b", "é", &"x".repeat(MAX_REDIS_PREFIX_LEN + 1)] {
        assert_eq!(
            RedisQuotaConfig::default()
                .with_prefix(bad)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput,
            "{bad:?}"
        );
    }
    let good = "app-1.billing:quota_v2";
    assert_eq!(
        RedisQuotaConfig::default()
            .with_prefix(good)
            .unwrap()
            .prefix(),
        good
    );
}
