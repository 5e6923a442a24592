//! The [`CouponStore`] contract.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::TimeDelta;
use saas_core::{ErrorKind, TenantId};

use super::fixtures::start;
use crate::{
    BillingError, Coupon, CouponDuration, CouponId, CouponStore, Currency, Money, SubscriptionId,
    dec,
};

/// A coupon id of its own, so tests sharing a store never collide.
fn coupon_id() -> CouponId {
    CouponId::new(format!("c-{}", uuid::Uuid::new_v4().simple())).unwrap()
}

fn twenty_percent() -> Coupon {
    Coupon::percent(coupon_id(), "20 % off", dec!(20))
        .unwrap()
        .with_duration(CouponDuration::Repeating { periods: 3 })
        .unwrap()
}

/// A created coupon reads back; a second with its id is `AlreadyExists`;
/// an unknown one is `NotFound`.
pub async fn create_then_get(store: Arc<dyn CouponStore>) {
    let coupon = twenty_percent();
    assert_eq!(store.create(coupon.clone()).await.unwrap(), coupon);
    assert_eq!(store.get(&coupon.id).await.unwrap(), coupon);
    let err = store.create(coupon.clone()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(store.times_redeemed(&coupon.id).await.unwrap(), 0);
    let unknown = coupon_id();
    assert_eq!(
        store.get(&unknown).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let err = store
        .redeem(&unknown, TenantId::new(), SubscriptionId::new(), 0, start())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// The limit and the last redemption time hold; a subscription redeems
/// a coupon once; refusals count nothing.
pub async fn limits_and_expiry_are_enforced(store: Arc<dyn CouponStore>) {
    let tenant = TenantId::new();
    let usd = Money::new(dec!(5.00), Currency::USD);
    let limited = Coupon::fixed(coupon_id(), "5 off", [usd])
        .unwrap()
        .with_max_redemptions(2)
        .unwrap();
    store.create(limited.clone()).await.unwrap();
    let (a, b, c) = (
        SubscriptionId::new(),
        SubscriptionId::new(),
        SubscriptionId::new(),
    );
    let first = store
        .redeem(&limited.id, tenant, a, 4, start())
        .await
        .unwrap();
    assert_eq!(
        (first.coupon.clone(), first.start_period),
        (limited.clone(), 4)
    );
    assert_eq!((first.subscription_id, first.redeemed_at), (a, start()));
    let again = store
        .redeem(&limited.id, tenant, a, 5, start())
        .await
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists);
    assert_eq!(store.times_redeemed(&limited.id).await.unwrap(), 1);
    store
        .redeem(&limited.id, tenant, b, 4, start())
        .await
        .unwrap();
    let full = store
        .redeem(&limited.id, tenant, c, 4, start())
        .await
        .unwrap_err();
    assert!(matches!(
        full,
        BillingError::CouponNotRedeemable {
            reason: "fully redeemed",
            ..
        }
    ));
    assert_eq!(full.kind(), ErrorKind::Conflict);
    assert_eq!(store.times_redeemed(&limited.id).await.unwrap(), 2);

    let deadline = start() + TimeDelta::days(10);
    let expiring = twenty_percent().with_redeem_by(deadline);
    store.create(expiring.clone()).await.unwrap();
    let late = store
        .redeem(&expiring.id, tenant, a, 0, deadline)
        .await
        .unwrap_err();
    assert!(matches!(
        late,
        BillingError::CouponNotRedeemable {
            reason: "expired",
            ..
        }
    ));
    assert_eq!(store.times_redeemed(&expiring.id).await.unwrap(), 0);
    let just_in_time = deadline - TimeDelta::seconds(1);
    store
        .redeem(&expiring.id, tenant, a, 0, just_in_time)
        .await
        .unwrap();
}

/// Ten subscriptions racing for a coupon limited to three: three win.
pub async fn racing_redemptions_respect_the_limit(store: Arc<dyn CouponStore>) {
    let coupon = twenty_percent().with_max_redemptions(3).unwrap();
    store.create(coupon.clone()).await.unwrap();
    let tenant = TenantId::new();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (store, id) = (store.clone(), coupon.id.clone());
            tokio::spawn(async move {
                store
                    .redeem(&id, tenant, SubscriptionId::new(), 0, start())
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(e) => assert!(matches!(e, BillingError::CouponNotRedeemable { .. }), "{e}"),
        }
    }
    assert_eq!(won, 3);
    assert_eq!(store.times_redeemed(&coupon.id).await.unwrap(), 3);
}

/// A subscription's redemptions come back in redemption order, with the
/// coupons as redeemed; another tenant sees none of them.
pub async fn redemptions_are_listed_per_subscription(store: Arc<dyn CouponStore>) {
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    let (first, second) = (twenty_percent(), twenty_percent());
    store.create(first.clone()).await.unwrap();
    store.create(second.clone()).await.unwrap();
    store
        .redeem(&second.id, tenant, sub, 1, start())
        .await
        .unwrap();
    let later = start() + TimeDelta::hours(1);
    store
        .redeem(&first.id, tenant, sub, 2, later)
        .await
        .unwrap();
    store
        .redeem(&first.id, tenant, SubscriptionId::new(), 0, later)
        .await
        .unwrap();
    let listed = store.redemptions(tenant, sub).await.unwrap();
    let ids: Vec<&CouponId> = listed.iter().map(|r| &r.coupon.id).collect();
    assert_eq!(ids, [&second.id, &first.id]);
    assert_eq!(listed[1].start_period, 2);
    assert!(
        store
            .redemptions(TenantId::new(), sub)
            .await
            .unwrap()
            .is_empty()
    );
}
