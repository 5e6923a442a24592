//! Subscription lifecycle and proration, with literal numbers.

use proptest::prelude::*;
use saas_billing::{
    BillingError, CancelMode, ChangeDirection, ChangeTiming, LineKind, NewSubscription, PlanChange,
    ProrationPolicy, RoundingMode, Subscription, SubscriptionEvent, SubscriptionStatus,
    TRANSITIONS, Trial, dec, proration_fraction,
};
use saas_core::{ErrorKind, TenantId};

use crate::fixtures::{at, catalog, harness, plan, usd};

#[tokio::test]
async fn mid_month_upgrade_credits_unused_time_and_debits_the_rest() {
    let mut h = harness(at(2024, 4, 1, 0));
    let tenant = TenantId::new();
    let sub = h
        .engine()
        .create_subscription(NewSubscription::new(
            tenant,
            plan("basic", 1),
            saas_billing::Currency::USD,
        ))
        .await
        .unwrap();
    // April has 30 days = 2,592,000 s. At Apr 11 12:00, 19.5 days =
    // 1,684,800 s remain: the fraction is exactly 0.65.
    h.set_time(at(2024, 4, 11, 12));
    let (sub, outcome) = h
        .engine()
        .change_plan(
            tenant,
            sub.id(),
            PlanChange {
                plan: plan("pro", 1),
                seats: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(outcome.direction, ChangeDirection::Upgrade);
    assert_eq!(outcome.timing, ChangeTiming::ImmediateWithProration);
    let lines = sub.pending_lines();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].kind, LineKind::ProrationCredit);
    assert_eq!(lines[0].proration, Some(dec!(0.65)));
    assert_eq!(lines[0].amount, usd(dec!(-19.50)));
    assert_eq!(lines[1].kind, LineKind::ProrationDebit);
    assert_eq!(lines[1].amount, usd(dec!(58.50))); // 90.00 × 0.65
    assert_eq!(lines[2].amount, usd(dec!(3.25))); // 1 seat × 5.00 × 0.65

    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(invoices.len(), 1);
    let april = &invoices[0];
    let amounts: Vec<_> = april.lines.iter().map(|l| l.amount.amount()).collect();
    // Basic for April in full, the credit, the two debits, pro's calls (none).
    assert_eq!(
        amounts,
        [
            dec!(30.00),
            dec!(-19.50),
            dec!(58.50),
            dec!(3.25),
            dec!(0.00)
        ]
    );
    assert_eq!(april.total, usd(dec!(72.25)));
    // May bills pro in full: 90.00 + 5.00.
    h.advance_to(at(2024, 6, 1, 0)).await.unwrap();
    let may = &h.engine().invoices(tenant, sub.id()).await.unwrap()[1];
    assert_eq!(may.total, usd(dec!(95.00)));
}

#[test]
fn proration_is_exact_for_thirds() {
    let cal = saas_billing::BillingCalendar::new(
        at(2024, 4, 1, 0),
        chrono_tz::UTC,
        saas_billing::Cadence::monthly(),
    );
    let april = cal.period(0).unwrap();
    // 10 of 30 days remain: one third, which no float represents.
    let third = proration_fraction(&april, at(2024, 4, 21, 0));
    assert_eq!(third, dec!(0.3333333333333333333333333333));
    let catalog = catalog();
    let mut sub = Subscription::create(
        NewSubscription::new(
            TenantId::new(),
            plan("basic", 1),
            saas_billing::Currency::USD,
        )
        .trial(Trial::None),
        &catalog,
        at(2024, 4, 1, 0),
    )
    .unwrap();
    sub.cancel(
        CancelMode::Immediately { prorate: true },
        &catalog,
        at(2024, 4, 21, 0),
        RoundingMode::HalfEven,
    )
    .unwrap();
    // 30.00 × 864,000 s / 2,592,000 s, multiplied before dividing: exactly 10.00.
    assert_eq!(sub.pending_lines()[0].amount, usd(dec!(-10.00)));
    assert_eq!(sub.status(), SubscriptionStatus::Canceled);
}

#[tokio::test]
async fn downgrades_wait_for_the_period_end_by_default() {
    let mut h = harness(at(2024, 4, 1, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("pro", 1), saas_billing::Currency::USD).seats(2);
    let sub = h.engine().create_subscription(new).await.unwrap();
    h.set_time(at(2024, 4, 10, 0));
    let (sub, outcome) = h
        .engine()
        .change_plan(
            tenant,
            sub.id(),
            PlanChange {
                plan: plan("basic", 1),
                seats: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(outcome.direction, ChangeDirection::Downgrade);
    assert_eq!(outcome.timing, ChangeTiming::AtPeriodEnd);
    assert_eq!(sub.plan(), &plan("pro", 1));
    assert!(sub.pending_lines().is_empty());
    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    let sub = h.engine().subscription(tenant, sub.id()).await.unwrap();
    assert_eq!(sub.plan(), &plan("basic", 1));
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(invoices[0].total, usd(dec!(100.00))); // 90.00 + 2 × 5.00
}

#[tokio::test]
async fn policy_none_switches_now_without_proration() {
    let catalog = catalog();
    let mut sub = Subscription::create(
        NewSubscription::new(
            TenantId::new(),
            plan("basic", 1),
            saas_billing::Currency::USD,
        ),
        &catalog,
        at(2024, 4, 1, 0),
    )
    .unwrap();
    let policy = ProrationPolicy::new(
        ChangeTiming::ImmediateWithoutProration,
        ChangeTiming::ImmediateWithoutProration,
    );
    let change = PlanChange {
        plan: plan("pro", 1),
        seats: 1,
    };
    sub.change_plan(
        change,
        &catalog,
        policy,
        at(2024, 4, 11, 12),
        RoundingMode::HalfEven,
    )
    .unwrap();
    assert_eq!(sub.plan(), &plan("pro", 1));
    assert!(sub.pending_lines().is_empty());
    assert_eq!(sub.basis().plan, plan("basic", 1));
}

#[tokio::test]
async fn cancel_at_period_end_serves_until_then() {
    let mut h = harness(at(2024, 4, 1, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), saas_billing::Currency::USD);
    let sub = h.engine().create_subscription(new).await.unwrap();
    h.set_time(at(2024, 4, 20, 0));
    let sub = h
        .engine()
        .cancel(tenant, sub.id(), CancelMode::AtPeriodEnd)
        .await
        .unwrap();
    assert_eq!(sub.status(), SubscriptionStatus::Active);
    assert!(sub.is_served(at(2024, 4, 30, 23)));
    assert!(h.engine().check(tenant, "export", dec!(1)).is_allowed());
    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    let sub = h.engine().subscription(tenant, sub.id()).await.unwrap();
    assert_eq!(sub.status(), SubscriptionStatus::Canceled);
    assert_eq!(sub.ended_at(), Some(at(2024, 5, 1, 0)));
    assert!(!h.engine().check(tenant, "export", dec!(1)).is_allowed());
    h.advance_months(3).await.unwrap();
    assert_eq!(
        h.engine().invoices(tenant, sub.id()).await.unwrap().len(),
        1
    );
}

/// `keep` undoes a cancellation at period end: the cycle then bills the
/// next period as usual. Without a scheduled cancellation it is a typed
/// error that changes nothing; on a canceled subscription, a conflict.
#[tokio::test]
async fn keep_undoes_a_cancellation_at_period_end() {
    let mut h = harness(at(2024, 4, 1, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), saas_billing::Currency::USD);
    let sub = h.engine().create_subscription(new).await.unwrap();
    let err = h.engine().keep(tenant, sub.id()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let unchanged = h.engine().subscription(tenant, sub.id()).await.unwrap();
    assert_eq!(unchanged.version(), sub.version());

    h.set_time(at(2024, 4, 20, 0));
    h.engine()
        .cancel(tenant, sub.id(), CancelMode::AtPeriodEnd)
        .await
        .unwrap();
    h.set_time(at(2024, 4, 25, 0));
    let kept = h.engine().keep(tenant, sub.id()).await.unwrap();
    assert!(!kept.cancel_at_period_end());
    assert_eq!(kept.canceled_at(), None);
    assert_eq!(kept.status(), SubscriptionStatus::Active);

    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    h.advance_to(at(2024, 6, 1, 0)).await.unwrap();
    let sub = h.engine().subscription(tenant, sub.id()).await.unwrap();
    assert_eq!(sub.status(), SubscriptionStatus::Active);
    assert_eq!(sub.ended_at(), None);
    assert!(h.engine().check(tenant, "export", dec!(1)).is_allowed());
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    let billed: Vec<_> = invoices
        .iter()
        .map(|i| (i.period_start, i.period_end, i.total))
        .collect();
    assert_eq!(
        billed,
        [
            (at(2024, 4, 1, 0), at(2024, 5, 1, 0), usd(dec!(30.00))),
            (at(2024, 5, 1, 0), at(2024, 6, 1, 0), usd(dec!(30.00))),
        ]
    );

    h.engine()
        .cancel(tenant, sub.id(), CancelMode::Immediately { prorate: false })
        .await
        .unwrap();
    let err = h.engine().keep(tenant, sub.id()).await.unwrap_err();
    assert!(matches!(err, BillingError::IllegalTransition { .. }));
    assert_eq!(err.kind(), ErrorKind::Conflict);
}

#[tokio::test]
async fn trial_then_first_paid_period() {
    let mut h = harness(at(2024, 1, 10, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), saas_billing::Currency::USD)
        .trial(Trial::Days(14));
    let sub = h.engine().create_subscription(new).await.unwrap();
    assert_eq!(sub.status(), SubscriptionStatus::Trialing);
    assert_eq!(sub.trial_end(), Some(at(2024, 1, 24, 0)));
    let report = h.advance_to(at(2024, 1, 24, 0)).await.unwrap();
    assert_eq!(report.trials_ended, [sub.id()]);
    assert!(report.drafts_created.is_empty());
    h.advance_to(at(2024, 2, 24, 0)).await.unwrap();
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0].period_start, at(2024, 1, 24, 0));
    assert_eq!(invoices[0].total, usd(dec!(30.00)));
}

/// A trial lasts N local days in the customer's zone: 14 days from
/// 10:00 EST on March 1 end at 10:00 EDT on March 15 (14:00Z, not the
/// 15:00Z of 14 × 24 h), and the paid periods keep 10:00 local.
#[tokio::test]
async fn trial_days_are_local_days_across_dst() {
    let h = harness(at(2026, 3, 1, 15)); // 10:00 EST
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), saas_billing::Currency::USD)
        .time_zone(chrono_tz::America::New_York)
        .trial(Trial::Days(14));
    let sub = h.engine().create_subscription(new).await.unwrap();
    assert_eq!(sub.trial_end(), Some(at(2026, 3, 15, 14)));
    assert_eq!(sub.calendar().anchor(), at(2026, 3, 15, 14));
    assert_eq!(
        sub.calendar().period(1).unwrap().start(),
        at(2026, 4, 15, 14)
    );
    // Back to EST in November: 10:00 local is 15:00Z again.
    assert_eq!(
        sub.calendar().period(8).unwrap().start(),
        at(2026, 11, 15, 15)
    );
}

#[tokio::test]
async fn pause_credits_and_resume_debits() {
    let mut h = harness(at(2024, 4, 1, 0));
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 1), saas_billing::Currency::USD);
    let sub = h.engine().create_subscription(new).await.unwrap();
    h.set_time(at(2024, 4, 16, 0)); // half of April left
    let paused = h.engine().pause(tenant, sub.id()).await.unwrap();
    assert_eq!(paused.status(), SubscriptionStatus::Paused);
    assert_eq!(paused.pending_lines()[0].amount, usd(dec!(-15.00)));
    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    h.set_time(at(2024, 5, 21, 0)); // 11 of May's 31 days left
    let resumed = h.engine().resume(tenant, sub.id()).await.unwrap();
    assert_eq!(resumed.status(), SubscriptionStatus::Active);
    // 30.00 × 950,400 s / 2,678,400 s = 10.645… → 10.65
    assert_eq!(resumed.pending_lines()[0].amount, usd(dec!(10.65)));
    h.advance_to(at(2024, 6, 1, 0)).await.unwrap();
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(invoices[0].total, usd(dec!(15.00)));
    assert_eq!(invoices[1].total, usd(dec!(10.65)));
}

#[test]
fn illegal_transitions_are_conflicts() {
    let err = SubscriptionStatus::Canceled
        .apply(SubscriptionEvent::Resume)
        .unwrap_err();
    assert!(matches!(err, BillingError::IllegalTransition { .. }));
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(
        SubscriptionStatus::PastDue
            .apply(SubscriptionEvent::RetriesExhausted)
            .unwrap(),
        SubscriptionStatus::Unpaid
    );
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Event(usize),
    Pause,
    Resume,
    CancelNow,
    CancelAtEnd,
    Upgrade,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..SubscriptionEvent::ALL.len()).prop_map(Op::Event),
        Just(Op::Pause),
        Just(Op::Resume),
        Just(Op::CancelNow),
        Just(Op::CancelAtEnd),
        Just(Op::Upgrade),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Over random operation sequences, every operation either moves the
    /// status exactly as the table says, or fails with `IllegalTransition`
    /// (or `InvalidInput` for events with their own operation) and leaves
    /// the subscription unchanged.
    #[test]
    fn operations_follow_the_transition_table(ops in prop::collection::vec(op(), 1..25), incomplete: bool) {
        let catalog = catalog();
        let mut new = NewSubscription::new(TenantId::new(), plan("basic", 1), saas_billing::Currency::USD);
        if incomplete {
            new = new.require_payment();
        }
        let mut sub = Subscription::create(new, &catalog, at(2024, 4, 1, 0)).unwrap();
        for (i, op) in ops.into_iter().enumerate() {
            let now = at(2024, 4, 2, 0) + chrono::TimeDelta::hours(i as i64);
            let before = sub.clone();
            let (event, result) = match op {
                Op::Event(e) => {
                    let event = SubscriptionEvent::ALL[e];
                    (event, sub.apply(event).map(|_| ()))
                }
                Op::Pause => (SubscriptionEvent::Pause, sub.pause(&catalog, now, RoundingMode::HalfEven)),
                Op::Resume => (SubscriptionEvent::Resume, sub.resume(&catalog, now, RoundingMode::HalfEven)),
                Op::CancelNow => (SubscriptionEvent::Cancel, sub.cancel(CancelMode::Immediately { prorate: true }, &catalog, now, RoundingMode::HalfEven)),
                Op::CancelAtEnd => (SubscriptionEvent::ScheduleCancel, sub.cancel(CancelMode::AtPeriodEnd, &catalog, now, RoundingMode::HalfEven)),
                Op::Upgrade => (SubscriptionEvent::ChangePlan, sub.change_plan(PlanChange { plan: plan("pro", 1), seats: 1 }, &catalog, ProrationPolicy::default(), now, RoundingMode::HalfEven).map(|_| ())),
            };
            let row = TRANSITIONS.iter().find(|(f, e, _)| *f == before.status() && *e == event);
            match result {
                Ok(()) => {
                    let (_, _, to) = row.expect("a legal transition has a row");
                    prop_assert_eq!(sub.status(), *to);
                }
                Err(err) => {
                    let own_operation = matches!(op, Op::Event(_)) && matches!(err, BillingError::InvalidInput { .. });
                    prop_assert!(own_operation || (row.is_none() && err.kind() == ErrorKind::Conflict), "{err}");
                    prop_assert_eq!(&sub, &before);
                }
            }
            prop_assert!(!before.status().is_terminal() || sub.status() == before.status());
        }
    }
}

/// `Trial::Days` obeys the plan builder's limit, `MAX_TRIAL_DAYS`.
#[tokio::test]
async fn trial_days_beyond_the_plan_limit_are_refused() {
    use saas_billing::{Charge, MAX_TRIAL_DAYS, PlanId, PlanVersion, ProductId};

    let h = harness(at(2024, 1, 10, 0));
    let tenant = TenantId::new();
    let new = |days| {
        NewSubscription::new(tenant, plan("basic", 1), saas_billing::Currency::USD)
            .trial(Trial::Days(days))
    };
    for days in [MAX_TRIAL_DAYS + 1, 100_000, u32::MAX] {
        let err = h.engine().create_subscription(new(days)).await.unwrap_err();
        assert!(
            matches!(err, BillingError::InvalidInput { field: "trial", .. }),
            "{days}: {err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("730 days"), "{err}");
    }
    let sub = h
        .engine()
        .create_subscription(new(MAX_TRIAL_DAYS))
        .await
        .unwrap();
    assert_eq!(sub.trial_end(), Some(at(2026, 1, 9, 0)));

    // The plan builder refuses the same count with the same reason.
    let err = PlanVersion::builder(
        PlanId::new("long").unwrap(),
        1,
        ProductId::new("app").unwrap(),
    )
    .trial_days(MAX_TRIAL_DAYS + 1)
    .recurring("base", "Base", [Charge::flat(usd(dec!(1))).unwrap()])
    .build()
    .unwrap_err();
    assert!(
        matches!(err, BillingError::InvalidCatalog { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("731 days is longer than the 730 days allowed")
    );
}
