//! `LeasedQuota`: blocks of a quota spent locally. Over several leases on
//! one store (in memory, PostgreSQL, Redis on several connections), the
//! units granted never exceed the limit; drained, exactly the limit is
//! granted; released, the store's used amount equals the units granted;
//! a lease lost without release leaves at most its unspent block.

use std::sync::Arc;

use proptest::prelude::*;
use saas_billing::quota::{InMemoryQuotaStore, LeasedQuota, QuotaKey, QuotaStore};
use saas_billing::{ErrorKind, TenantId};

fn key() -> QuotaKey {
    QuotaKey::new(TenantId::new(), "api_calls", "2026-12").unwrap()
}

fn leases(
    stores: &[Arc<dyn QuotaStore>],
    per_store: usize,
    key: &QuotaKey,
    limit: u64,
    lease: u64,
) -> Vec<Arc<LeasedQuota>> {
    stores
        .iter()
        .flat_map(|store| {
            (0..per_store).map(move |_| {
                Arc::new(LeasedQuota::new(store.clone(), key.clone(), limit, lease).unwrap())
            })
        })
        .collect()
}

/// `tasks` tasks per lease each asking 1 unit `each` times, or until
/// refused when `each` is `None` (at most limit + 1 times, so a store that
/// never refuses fails the caller's assertions instead of hanging); the
/// units granted in all.
async fn consume(leases: &[Arc<LeasedQuota>], tasks: usize, each: Option<usize>) -> u64 {
    let until_refused = each.is_none();
    let mut runs = Vec::new();
    for lease in leases {
        for _ in 0..tasks {
            let lease = lease.clone();
            let each = each.unwrap_or(usize::try_from(lease.limit()).unwrap() + 1);
            runs.push(tokio::spawn(async move {
                let mut granted = 0u64;
                let mut asked = 0;
                while asked < each {
                    asked += 1;
                    if lease.try_consume(1).await.unwrap() {
                        granted += 1;
                    } else if until_refused {
                        break;
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

async fn release_all(leases: &[Arc<LeasedQuota>]) {
    for lease in leases {
        lease.release().await.unwrap();
        assert_eq!(lease.unspent(), 0);
    }
}

/// Leases drained by racing tasks grant exactly the limit: the last
/// units, less than a lease, are taken too, and no block is left unspent.
async fn drained_leases_grant_exactly_the_limit(stores: &[Arc<dyn QuotaStore>], limit: u64) {
    let key = key();
    let leases = leases(stores, 2, &key, limit, 64);
    assert_eq!(consume(&leases, 3, None).await, limit);
    for lease in &leases {
        assert_eq!(lease.unspent(), 0);
    }
    assert_eq!(stores[0].used(&key).await.unwrap(), limit);
}

/// Leases granting less than the limit: the store counts the granted
/// units plus the unspent blocks, each at most a lease; after release it
/// counts exactly the granted units.
async fn released_leases_leave_used_equal_to_granted(stores: &[Arc<dyn QuotaStore>]) {
    let key = key();
    let leases = leases(stores, 2, &key, 1_000_000, 64);
    let granted = consume(&leases, 3, Some(150)).await;
    let asked = 150 * 3 * leases.len() as u64;
    assert_eq!(granted, asked);
    let unspent: u64 = leases.iter().map(|l| l.unspent()).sum();
    assert!(leases.iter().all(|l| l.unspent() <= 64));
    assert_eq!(stores[0].used(&key).await.unwrap(), granted + unspent);
    release_all(&leases).await;
    assert_eq!(stores[0].used(&key).await.unwrap(), granted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_drained_leases_grant_exactly_the_limit() {
    let store: Arc<dyn QuotaStore> = Arc::new(InMemoryQuotaStore::new());
    drained_leases_grant_exactly_the_limit(&[store.clone(), store], 1_001).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_released_leases_leave_used_equal_to_granted() {
    let store: Arc<dyn QuotaStore> = Arc::new(InMemoryQuotaStore::new());
    released_leases_leave_used_equal_to_granted(&[store.clone(), store]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_leases_on_three_servers_grant_the_limit_and_release_to_the_granted() {
    let Some((stores, cleanup)) = crate::quotas::pg_servers(
        "postgres_leases_on_three_servers_grant_the_limit_and_release_to_the_granted",
        3,
    )
    .await
    else {
        return;
    };
    let dyn_stores: Vec<Arc<dyn QuotaStore>> = stores
        .iter()
        .map(|s| Arc::new(s.clone()) as Arc<dyn QuotaStore>)
        .collect();
    drained_leases_grant_exactly_the_limit(&dyn_stores, 2_001).await;
    released_leases_leave_used_equal_to_granted(&dyn_stores).await;
    drop(dyn_stores);
    crate::quotas::close(stores).await;
    cleanup.run().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_leases_on_three_servers_grant_the_limit_and_release_to_the_granted() {
    let Some(fixture) = crate::redis_quotas::RedisQuotaFixture::new(
        "redis_leases_on_three_servers_grant_the_limit_and_release_to_the_granted",
    ) else {
        return;
    };
    let cleanup = fixture.cleanup();
    let mut stores: Vec<Arc<dyn QuotaStore>> = Vec::new();
    for _ in 0..3 {
        stores.push(Arc::new(fixture.server().await));
    }
    drained_leases_grant_exactly_the_limit(&stores, 3_001).await;
    released_leases_leave_used_equal_to_granted(&stores).await;
    cleanup.run().await;
}

/// Blocks top up to the lease; a request larger than the lease takes a
/// block of its size; when less than a block is left, the rest is taken
/// if it covers the request; a refusal changes nothing.
#[tokio::test]
async fn blocks_follow_the_lease_and_the_last_units_are_granted() {
    let store: Arc<dyn QuotaStore> = Arc::new(InMemoryQuotaStore::new());
    let k = key();
    let a = LeasedQuota::new(store.clone(), k.clone(), 10, 4).unwrap();
    let b = LeasedQuota::new(store.clone(), k.clone(), 10, 4).unwrap();
    assert!(a.try_consume(1).await.unwrap());
    assert_eq!((store.used(&k).await.unwrap(), a.unspent()), (4, 3));
    assert!(b.try_consume(1).await.unwrap());
    assert_eq!((store.used(&k).await.unwrap(), b.unspent()), (8, 3));
    assert!(a.try_consume(3).await.unwrap());
    assert_eq!(a.unspent(), 0);
    // 2 left in the store, less than a lease: taken, as the request needs 2.
    assert!(a.try_consume(2).await.unwrap());
    assert_eq!((store.used(&k).await.unwrap(), a.unspent()), (10, 0));
    // B's block still holds 3: A is refused, B is not.
    assert!(!a.try_consume(1).await.unwrap());
    assert!(!b.try_consume(4).await.unwrap());
    assert_eq!(b.unspent(), 3);
    assert!(b.try_consume(3).await.unwrap());
    assert_eq!(store.used(&k).await.unwrap(), 10);

    // Larger than the lease: one block of the request's size.
    let big = LeasedQuota::new(store.clone(), key(), 100, 4).unwrap();
    assert!(big.try_consume(30).await.unwrap());
    assert_eq!(store.used(big.key()).await.unwrap(), 30);
    assert_eq!(big.unspent(), 0);
    // A block of a lease (4), 2 of it granted.
    assert!(big.try_consume(2).await.unwrap());
    assert_eq!(big.unspent(), 2);
    // 3 asked with 2 held: topped up by 2 to the lease, not by a whole lease.
    assert!(big.try_consume(3).await.unwrap());
    assert_eq!(
        (store.used(big.key()).await.unwrap(), big.unspent()),
        (36, 1)
    );
    assert!(!big.try_consume(66).await.unwrap());
    assert_eq!(
        (store.used(big.key()).await.unwrap(), big.unspent()),
        (36, 1)
    );
    assert!(big.try_consume(65).await.unwrap());
    assert_eq!(
        (store.used(big.key()).await.unwrap(), big.unspent()),
        (100, 0)
    );
}

/// A lease dropped without `release` (a crashed process) leaves its
/// unspent units counted: the others are granted the rest and no more.
#[tokio::test]
async fn a_lost_lease_under_grants_by_at_most_its_block() {
    let store: Arc<dyn QuotaStore> = Arc::new(InMemoryQuotaStore::new());
    let k = key();
    let lost = LeasedQuota::new(store.clone(), k.clone(), 100, 50).unwrap();
    for _ in 0..7 {
        assert!(lost.try_consume(1).await.unwrap());
    }
    assert_eq!(lost.unspent(), 43);
    drop(lost);
    let survivor = Arc::new(LeasedQuota::new(store.clone(), k.clone(), 100, 50).unwrap());
    assert_eq!(consume(&[survivor], 1, None).await, 50);
    assert_eq!(store.used(&k).await.unwrap(), 100);
}

#[tokio::test]
async fn invalid_leases_and_amounts_are_invalid_input() {
    use saas_billing::quota::MAX_QUOTA_AMOUNT;

    let store: Arc<dyn QuotaStore> = Arc::new(InMemoryQuotaStore::new());
    for (limit, lease) in [
        (10, 0),
        (MAX_QUOTA_AMOUNT + 1, 1),
        (10, MAX_QUOTA_AMOUNT + 1),
    ] {
        assert_eq!(
            LeasedQuota::new(store.clone(), key(), limit, lease)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
    }
    let lease = LeasedQuota::new(store, key(), 10, 5).unwrap();
    assert_eq!(
        lease
            .try_consume(MAX_QUOTA_AMOUNT + 1)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    assert!(lease.try_consume(0).await.unwrap());
    assert_eq!(lease.unspent(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any sequence of grants and releases over several leases of one
    /// store: a grant succeeds exactly when the lease's block and the
    /// store's remaining units cover it; granted units never exceed the
    /// limit; the store counts the granted units plus the unspent blocks,
    /// each at most max(lease, largest request); released, exactly the
    /// granted units.
    #[test]
    fn leases_never_over_grant_and_under_grant_at_most_a_block(
        limit in 0u64..300,
        sizes in proptest::collection::vec(1u64..40, 1..4),
        ops in proptest::collection::vec((0usize..4, 0u64..30, any::<bool>()), 0..80),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let store: Arc<dyn QuotaStore> = Arc::new(InMemoryQuotaStore::new());
            let k = key();
            let leases: Vec<LeasedQuota> = sizes
                .iter()
                .map(|&size| LeasedQuota::new(store.clone(), k.clone(), limit, size).unwrap())
                .collect();
            let mut largest = vec![0u64; leases.len()];
            let mut granted = 0u64;
            for (index, amount, release) in ops {
                let index = index % leases.len();
                let lease = &leases[index];
                if release {
                    lease.release().await.unwrap();
                    continue;
                }
                let held = lease.unspent();
                let remaining = limit - store.used(&k).await.unwrap();
                let ok = lease.try_consume(amount).await.unwrap();
                prop_assert_eq!(ok, amount <= held + remaining);
                if ok {
                    granted += amount;
                    largest[index] = largest[index].max(amount);
                }
                prop_assert!(granted <= limit);
                let unspent: u64 = leases.iter().map(LeasedQuota::unspent).sum();
                prop_assert_eq!(store.used(&k).await.unwrap(), granted + unspent);
                for (lease, largest) in leases.iter().zip(&largest) {
                    prop_assert!(lease.unspent() <= lease.lease().max(*largest));
                }
            }
            for lease in &leases {
                lease.release().await.unwrap();
            }
            prop_assert_eq!(store.used(&k).await.unwrap(), granted);
            Ok(())
        })?;
    }
}
