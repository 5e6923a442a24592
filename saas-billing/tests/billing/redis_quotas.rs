//! The Redis quota store: the conformance suite and prefix validation.
//!
//! Needs `SAAS_TEST_REDIS_URL`. Each test writes under a random key prefix
//! of its own and deletes every key under it afterwards.

use saas_billing::quota::{RedisQuotaConfig, RedisQuotaStore};
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
