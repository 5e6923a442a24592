//! Quota reservations and give-backs in a caller's transaction
//! (`reserve_in`, `commit_in`, `release_in`, `give_back_in`) on
//! PostgreSQL and SQLite: each takes effect only if the transaction
//! commits. Fixtures as in [`crate::in_transaction`].

use std::time::Duration;

use saas_billing::BillingError;
use saas_billing::quota::{QuotaStore, ReserveOutcome};
use saas_billing::testing::run_with_cleanup;

use crate::in_transaction::{lite, pg};

/// Reservations and give-backs in a caller's transaction take effect only
/// if it commits: a reservation made in a rolled-back transaction never
/// existed, one committed in a rolled-back transaction is still live (and
/// commits later), a rolled-back give-back gives nothing back.
#[tokio::test]
async fn postgres_quota_reservations_and_give_backs_follow_the_transaction() {
    let Some((db, cleanup)) = pg("in_tx_reservations").await else {
        return;
    };
    run_with_cleanup(
        async move {
            let (quotas, key) = (&db.quotas, db.billing.quota(db.billing.a.0));
            let ttl = Duration::from_secs(60);

            let mut tx = db.pool.begin().await.unwrap();
            let ReserveOutcome::Reserved(gone) =
                quotas.reserve_in(&mut tx, &key, 3, 10, ttl).await.unwrap()
            else {
                panic!("3 of 10 is reserved");
            };
            assert_eq!(quotas.used_in(&mut tx, &key).await.unwrap(), 3);
            tx.rollback().await.unwrap();
            assert_eq!(quotas.used(&key).await.unwrap(), 0);
            assert!(matches!(
                quotas.commit(&gone).await,
                Err(BillingError::NotFound { .. })
            ));

            let ReserveOutcome::Reserved(live) = quotas.reserve(&key, 5, 10, ttl).await.unwrap()
            else {
                panic!("5 of 10 is reserved");
            };
            let mut tx = db.pool.begin().await.unwrap();
            quotas.commit_in(&mut tx, &live).await.unwrap();
            tx.rollback().await.unwrap();
            quotas.commit(&live).await.unwrap(); // still live: commits now
            assert_eq!(quotas.used(&key).await.unwrap(), 5);

            let mut tx = db.pool.begin().await.unwrap();
            quotas.give_back_in(&mut tx, &key, 5).await.unwrap();
            tx.rollback().await.unwrap();
            assert_eq!(quotas.used(&key).await.unwrap(), 5);
            let mut tx = db.pool.begin().await.unwrap();
            quotas.give_back_in(&mut tx, &key, 5).await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(quotas.used(&key).await.unwrap(), 0);

            let ReserveOutcome::Reserved(released) =
                quotas.reserve(&key, 4, 10, ttl).await.unwrap()
            else {
                panic!("4 of 10 is reserved");
            };
            let mut tx = db.pool.begin().await.unwrap();
            quotas.release_in(&mut tx, &released).await.unwrap();
            tx.rollback().await.unwrap();
            assert_eq!(quotas.used(&key).await.unwrap(), 4, "a rolled-back release");
            let mut tx = db.pool.begin().await.unwrap();
            quotas.release_in(&mut tx, &released).await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(quotas.used(&key).await.unwrap(), 0);
        },
        cleanup,
    )
    .await;
}

/// As the PostgreSQL test of the same name.
#[tokio::test]
async fn sqlite_quota_reservations_and_give_backs_follow_the_transaction() {
    let (db, cleanup) = lite().await;
    run_with_cleanup(
        async move {
            let (quotas, key) = (&db.quotas, db.billing.quota(db.billing.a.0));
            let ttl = Duration::from_secs(60);
            let begin = || db.pool.begin_with("BEGIN IMMEDIATE");

            let mut tx = begin().await.unwrap();
            let ReserveOutcome::Reserved(gone) =
                quotas.reserve_in(&mut tx, &key, 3, 10, ttl).await.unwrap()
            else {
                panic!("3 of 10 is reserved");
            };
            assert_eq!(quotas.used_in(&mut tx, &key).await.unwrap(), 3);
            tx.rollback().await.unwrap();
            assert_eq!(quotas.used(&key).await.unwrap(), 0);
            assert!(matches!(
                quotas.commit(&gone).await,
                Err(BillingError::NotFound { .. })
            ));

            let ReserveOutcome::Reserved(live) = quotas.reserve(&key, 5, 10, ttl).await.unwrap()
            else {
                panic!("5 of 10 is reserved");
            };
            let mut tx = begin().await.unwrap();
            quotas.commit_in(&mut tx, &live).await.unwrap();
            tx.rollback().await.unwrap();
            quotas.commit(&live).await.unwrap();
            assert_eq!(quotas.used(&key).await.unwrap(), 5);

            let mut tx = begin().await.unwrap();
            quotas.give_back_in(&mut tx, &key, 5).await.unwrap();
            tx.rollback().await.unwrap();
            assert_eq!(quotas.used(&key).await.unwrap(), 5);
            let mut tx = begin().await.unwrap();
            quotas.give_back_in(&mut tx, &key, 5).await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(quotas.used(&key).await.unwrap(), 0);

            let ReserveOutcome::Reserved(released) =
                quotas.reserve(&key, 4, 10, ttl).await.unwrap()
            else {
                panic!("4 of 10 is reserved");
            };
            let mut tx = begin().await.unwrap();
            quotas.release_in(&mut tx, &released).await.unwrap();
            tx.rollback().await.unwrap();
            assert_eq!(quotas.used(&key).await.unwrap(), 4, "a rolled-back release");
            let mut tx = begin().await.unwrap();
            quotas.release_in(&mut tx, &released).await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(quotas.used(&key).await.unwrap(), 0);
        },
        cleanup,
    )
    .await;
}
