//! Entitlements follow the subscription's status: only a served
//! subscription grants anything, and the period's quota usage survives a
//! pause.

use saas_billing::{
    CancelMode, Currency, DenyReason, MeterKey, NewSubscription, SubscriptionEvent,
    SubscriptionStatus, UsageEvent, dec,
};
use saas_core::TenantId;

use crate::fixtures::{at, harness, plan};

fn call(tenant: TenantId, sub: saas_billing::SubscriptionId, key: &str) -> UsageEvent {
    UsageEvent::new(
        tenant,
        sub,
        MeterKey::new("calls").unwrap(),
        dec!(1),
        at(2024, 4, 2, 0),
        key,
    )
}

#[tokio::test]
async fn pause_denies_everything_and_resume_restores_the_same_quota() {
    let mut h = harness(at(2024, 4, 1, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD);
    let sub = h.engine().create_subscription(new).await.unwrap();
    h.set_time(at(2024, 4, 2, 0));
    for key in ["a", "b", "c"] {
        h.engine()
            .record_usage(call(tenant, sub.id(), key))
            .await
            .unwrap();
    }
    let before = h.engine().check(tenant, "api_calls", dec!(1));
    assert!(before.is_allowed());
    assert_eq!(before.remaining(), Some(dec!(9996)));

    h.set_time(at(2024, 4, 10, 0));
    h.engine().pause(tenant, sub.id()).await.unwrap();
    for feature in ["api_calls", "export", "seats"] {
        let denied = h.engine().check(tenant, feature, dec!(1));
        assert!(!denied.is_allowed(), "{feature} while paused");
        assert_eq!(
            denied.reason(),
            Some(DenyReason::NotServed(SubscriptionStatus::Paused))
        );
    }
    assert_eq!(
        DenyReason::NotServed(SubscriptionStatus::Paused).to_string(),
        "subscription paused"
    );
    assert!(
        !h.engine()
            .entitlements()
            .try_consume(tenant, "api_calls", dec!(1))
            .is_allowed()
    );
    // The billing cycle does not hand a paused subscription its grants
    // back when it moves it to the next period.
    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    assert!(!h.engine().check(tenant, "export", dec!(1)).is_allowed());

    // Resume within April's next period: May's quota is untouched so far.
    h.set_time(at(2024, 5, 3, 0));
    h.engine().resume(tenant, sub.id()).await.unwrap();
    let after = h.engine().check(tenant, "api_calls", dec!(1));
    assert!(after.is_allowed());
    assert_eq!(after.reason(), None);
    assert_eq!(after.remaining(), Some(dec!(9999)));
    assert!(h.engine().check(tenant, "export", dec!(1)).is_allowed());
}

#[tokio::test]
async fn resume_within_the_period_keeps_the_used_quota() {
    let h = harness(at(2024, 4, 1, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD);
    let sub = h.engine().create_subscription(new).await.unwrap();
    h.set_time(at(2024, 4, 2, 0));
    for key in ["a", "b", "c"] {
        h.engine()
            .record_usage(call(tenant, sub.id(), key))
            .await
            .unwrap();
    }
    h.set_time(at(2024, 4, 10, 0));
    h.engine().pause(tenant, sub.id()).await.unwrap();
    h.set_time(at(2024, 4, 12, 0));
    h.engine().resume(tenant, sub.id()).await.unwrap();
    let after = h.engine().check(tenant, "api_calls", dec!(1));
    assert!(after.is_allowed());
    assert_eq!(after.remaining(), Some(dec!(9996)));
}

#[tokio::test]
async fn incomplete_is_denied_until_the_first_payment_succeeds() {
    let h = harness(at(2024, 4, 1, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD).require_payment();
    let sub = h.engine().create_subscription(new).await.unwrap();
    assert_eq!(sub.status(), SubscriptionStatus::Incomplete);
    let denied = h.engine().check(tenant, "export", dec!(1));
    assert!(!denied.is_allowed());
    assert_eq!(
        denied.reason(),
        Some(DenyReason::NotServed(SubscriptionStatus::Incomplete))
    );
    h.engine()
        .apply_event(tenant, sub.id(), SubscriptionEvent::PaymentSucceeded)
        .await
        .unwrap();
    assert!(h.engine().check(tenant, "export", dec!(1)).is_allowed());
}

#[tokio::test]
async fn dunning_and_cancellation_follow_the_status() {
    let h = harness(at(2024, 4, 1, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD);
    let sub = h.engine().create_subscription(new).await.unwrap();
    let apply = |event| h.engine().apply_event(tenant, sub.id(), event);
    apply(SubscriptionEvent::PaymentFailed).await.unwrap();
    // Past due is still served while payment is retried.
    assert!(h.engine().check(tenant, "export", dec!(1)).is_allowed());
    apply(SubscriptionEvent::RetriesExhausted).await.unwrap();
    assert_eq!(
        h.engine().check(tenant, "export", dec!(1)).reason(),
        Some(DenyReason::NotServed(SubscriptionStatus::Unpaid))
    );
    apply(SubscriptionEvent::PaymentSucceeded).await.unwrap();
    assert!(h.engine().check(tenant, "export", dec!(1)).is_allowed());
    h.engine()
        .cancel(tenant, sub.id(), CancelMode::Immediately { prorate: false })
        .await
        .unwrap();
    assert_eq!(
        h.engine().check(tenant, "export", dec!(1)).reason(),
        Some(DenyReason::NotServed(SubscriptionStatus::Canceled))
    );
}

#[tokio::test]
async fn unknown_tenants_and_features_say_so() {
    let h = harness(at(2024, 4, 1, 0));
    let tenant = TenantId::new();
    assert_eq!(
        h.engine().check(tenant, "export", dec!(1)).reason(),
        Some(DenyReason::UnknownTenant)
    );
    let new = NewSubscription::new(tenant, plan("basic", 1), Currency::USD);
    h.engine().create_subscription(new).await.unwrap();
    assert_eq!(
        h.engine().check(tenant, "sso", dec!(1)).reason(),
        Some(DenyReason::UnknownFeature)
    );
    assert_eq!(
        h.engine().check(tenant, "seats", dec!(4)).reason(),
        Some(DenyReason::OverLimit)
    );
}
