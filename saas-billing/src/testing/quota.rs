//! The [`QuotaStore`] contract.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use saas_core::{ErrorKind, TenantId};

use crate::quota::{Consumption, MAX_QUOTA_AMOUNT, QuotaKey, QuotaStore, ReserveOutcome};

const TTL: Duration = Duration::from_secs(600);

fn key(tenant: TenantId, name: &str, period: &str) -> QuotaKey {
    QuotaKey::new(tenant, name, period).unwrap()
}

/// Grants add up to the limit and no further; a denial changes nothing
/// and reports what is left.
pub async fn consumes_up_to_the_limit_exactly(store: Arc<dyn QuotaStore>) {
    let k = key(TenantId::new(), "api_calls", "2026-12");
    assert_eq!(store.used(&k).await.unwrap(), 0);
    assert_eq!(
        store.try_consume(&k, 3, 5).await.unwrap(),
        Consumption::Granted { remaining: 2 }
    );
    assert_eq!(
        store.try_consume(&k, 3, 5).await.unwrap(),
        Consumption::Denied { remaining: 2 }
    );
    assert_eq!(store.used(&k).await.unwrap(), 3);
    assert_eq!(
        store.try_consume(&k, 2, 5).await.unwrap(),
        Consumption::Granted { remaining: 0 }
    );
    assert_eq!(
        store.try_consume(&k, 1, 5).await.unwrap(),
        Consumption::Denied { remaining: 0 }
    );
    // More than the whole limit at once, on a fresh key: denied, nothing stored.
    let fresh = key(TenantId::new(), "api_calls", "2026-12");
    assert_eq!(
        store.try_consume(&fresh, 6, 5).await.unwrap(),
        Consumption::Denied { remaining: 5 }
    );
    assert_eq!(store.used(&fresh).await.unwrap(), 0);
    // A limit lowered below the used amount denies, remaining 0.
    assert_eq!(
        store.try_consume(&k, 1, 4).await.unwrap(),
        Consumption::Denied { remaining: 0 }
    );
    assert_eq!(store.used(&k).await.unwrap(), 5);
}

/// Tenants, names and periods count separately; a new period starts at 0.
pub async fn keys_are_separate_and_a_new_period_starts_at_zero(store: Arc<dyn QuotaStore>) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let december = key(a, "api_calls", "2026-12");
    store.try_consume(&december, 4, 10).await.unwrap();
    assert_eq!(
        store.used(&key(b, "api_calls", "2026-12")).await.unwrap(),
        0
    );
    assert_eq!(store.used(&key(a, "exports", "2026-12")).await.unwrap(), 0);
    let january = key(a, "api_calls", "2027-01");
    assert_eq!(store.used(&january).await.unwrap(), 0);
    assert_eq!(
        store.try_consume(&january, 10, 10).await.unwrap(),
        Consumption::Granted { remaining: 0 }
    );
    assert_eq!(store.used(&december).await.unwrap(), 4);
    let standing = QuotaKey::standing(a, "api_calls").unwrap();
    assert_eq!(store.used(&standing).await.unwrap(), 0);
}

async fn race(
    store: &Arc<dyn QuotaStore>,
    k: &QuotaKey,
    tasks: usize,
    each: usize,
    limit: u64,
) -> u64 {
    let runs: Vec<_> = (0..tasks)
        .map(|_| {
            let (store, k) = (store.clone(), k.clone());
            tokio::spawn(async move {
                let mut granted = 0u64;
                for _ in 0..each {
                    if store.try_consume(&k, 1, limit).await.unwrap().is_granted() {
                        granted += 1;
                    }
                }
                granted
            })
        })
        .collect();
    let mut granted = 0;
    for run in runs {
        granted += run.await.unwrap();
    }
    granted
}

/// 8 tasks × 150 grants of 1 against a limit of 500: exactly 500 granted.
pub async fn racing_consumers_are_granted_exactly_the_limit(store: Arc<dyn QuotaStore>) {
    let k = key(TenantId::new(), "api_calls", "2026-12");
    assert_eq!(race(&store, &k, 8, 150, 500).await, 500);
    assert_eq!(store.used(&k).await.unwrap(), 500);
}

/// Racing first grants of a new period create its counter once: exactly
/// the limit is granted, and the old period keeps its count.
pub async fn rollover_under_concurrency_resets_once(store: Arc<dyn QuotaStore>) {
    let tenant = TenantId::new();
    let old = key(tenant, "api_calls", "7");
    store.try_consume(&old, 50, 50).await.unwrap();
    let new = key(tenant, "api_calls", "8");
    assert_eq!(race(&store, &new, 8, 20, 50).await, 50);
    assert_eq!(store.used(&new).await.unwrap(), 50);
    assert_eq!(store.used(&old).await.unwrap(), 50);
}

/// A reservation counts as used; commit keeps its units, release gives
/// them back; commit after release is `NotFound`, release twice is a no-op.
pub async fn reserve_commit_and_release_round_trip(store: Arc<dyn QuotaStore>) {
    let k = QuotaKey::standing(TenantId::new(), "projects").unwrap();
    let ReserveOutcome::Reserved(first) = store.reserve(&k, 1, 2, TTL).await.unwrap() else {
        panic!("first project refused");
    };
    assert_eq!(first.amount(), 1);
    assert_eq!(store.used(&k).await.unwrap(), 1);
    store.commit(&first).await.unwrap();
    assert_eq!(store.used(&k).await.unwrap(), 1);

    let ReserveOutcome::Reserved(second) = store.reserve(&k, 1, 2, TTL).await.unwrap() else {
        panic!("second project refused");
    };
    assert_eq!(
        store.reserve(&k, 1, 2, TTL).await.unwrap(),
        ReserveOutcome::Denied { remaining: 0 }
    );
    store.release(&second).await.unwrap();
    assert_eq!(store.used(&k).await.unwrap(), 1);
    store.release(&second).await.unwrap();
    assert_eq!(store.used(&k).await.unwrap(), 1);
    assert_eq!(
        store.commit(&second).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // Committing twice: the second is NotFound and changes nothing.
    assert_eq!(
        store.commit(&first).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // Releasing a committed reservation does not give its units back.
    store.release(&first).await.unwrap();
    assert_eq!(store.used(&k).await.unwrap(), 1);
    let ReserveOutcome::Reserved(third) = store.reserve(&k, 1, 2, TTL).await.unwrap() else {
        panic!("the released unit was not given back");
    };
    store.commit(&third).await.unwrap();
    assert_eq!(store.used(&k).await.unwrap(), 2);
}

/// A reservation neither committed nor released goes back after its time
/// to live; committing it then is `NotFound`.
pub async fn expired_reservations_go_back(store: Arc<dyn QuotaStore>) {
    let k = QuotaKey::standing(TenantId::new(), "projects").unwrap();
    let ttl = Duration::from_millis(200);
    let ReserveOutcome::Reserved(lost) = store.reserve(&k, 1, 1, ttl).await.unwrap() else {
        panic!("reservation refused");
    };
    assert_eq!(
        store.try_consume(&k, 1, 1).await.unwrap(),
        Consumption::Denied { remaining: 0 }
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.used(&k).await.unwrap(), 0);
    assert_eq!(
        store.commit(&lost).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    store.release(&lost).await.unwrap();
    assert_eq!(store.used(&k).await.unwrap(), 0);
    assert!(store.try_consume(&k, 1, 1).await.unwrap().is_granted());
    assert_eq!(
        store
            .reserve(&k, 1, 1, Duration::ZERO)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
}

/// `give_back` subtracts taken units; more than taken outside live
/// reservations is `InvalidInput` and changes nothing.
pub async fn give_back_returns_units_and_refuses_more(store: Arc<dyn QuotaStore>) {
    let k = QuotaKey::standing(TenantId::new(), "projects").unwrap();
    assert_eq!(
        store.give_back(&k, 1).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    store.try_consume(&k, 2, 3).await.unwrap();
    let ReserveOutcome::Reserved(held) = store.reserve(&k, 1, 3, TTL).await.unwrap() else {
        panic!("reservation refused");
    };
    assert_eq!(
        store.give_back(&k, 3).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(store.used(&k).await.unwrap(), 3);
    store.give_back(&k, 2).await.unwrap();
    assert_eq!(store.used(&k).await.unwrap(), 1);
    store.release(&held).await.unwrap();
    assert_eq!(store.used(&k).await.unwrap(), 0);
}

/// Amounts and limits above [`MAX_QUOTA_AMOUNT`] are `InvalidInput`;
/// the maximum itself works.
pub async fn out_of_range_amounts_are_invalid_input(store: Arc<dyn QuotaStore>) {
    let k = key(TenantId::new(), "bytes", "1");
    let too_big = MAX_QUOTA_AMOUNT + 1;
    for result in [
        store.try_consume(&k, too_big, too_big).await,
        store.try_consume(&k, 1, too_big).await,
        store.try_consume(&k, too_big, 1).await,
    ] {
        assert_eq!(result.unwrap_err().kind(), ErrorKind::InvalidInput);
    }
    assert_eq!(
        store
            .try_consume(&k, MAX_QUOTA_AMOUNT, MAX_QUOTA_AMOUNT)
            .await
            .unwrap(),
        Consumption::Granted { remaining: 0 }
    );
    assert_eq!(
        store
            .try_consume(&k, MAX_QUOTA_AMOUNT, MAX_QUOTA_AMOUNT)
            .await
            .unwrap(),
        Consumption::Denied { remaining: 0 }
    );
    assert_eq!(store.used(&k).await.unwrap(), MAX_QUOTA_AMOUNT);
    assert_eq!(
        QuotaKey::new(TenantId::new(), "", "1").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}
