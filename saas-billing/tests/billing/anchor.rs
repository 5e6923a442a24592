//! Choosing the billing cycle anchor and backdating the start (issue 15
//! §4), with literal numbers: a prorated first period up to the anchor,
//! the catch-up of a backdated start, trials, month-end anchors,
//! cancelling and upgrading inside the first period, validation, and the
//! new state's round trip through every store.

use saas_billing::{
    BillingConfig, BillingError, BillingStores, CancelMode, Currency, ErrorKind, Invoice, LineKind,
    MAX_BACKDATE_DAYS, MeterKey, NewSubscription, PlanChange, Subscription, SubscriptionStatus,
    TenantId, TimeDelta, Trial, UsageEvent, dec, testing::BillingHarness,
};

use crate::fixtures::{at, catalog, harness, plan, usd};
use crate::sql_stores::{pg_stores, sqlite_stores};

fn basic(tenant: TenantId) -> NewSubscription {
    NewSubscription::new(tenant, plan("basic", 1), Currency::USD)
}

/// Basic (30.00 a month) created on Apr 10 with its anchor on May 1:
/// the harness (at Apr 10), the tenant and the subscription.
async fn basic_from_apr_10_anchored_on_may_1() -> (BillingHarness, TenantId, Subscription) {
    let h = harness(at(2024, 4, 10, 0));
    let tenant = TenantId::new();
    let sub = h
        .engine()
        .create_subscription(basic(tenant).billing_cycle_anchor(at(2024, 5, 1, 0)))
        .await
        .unwrap();
    (h, tenant, sub)
}

/// The amounts of an invoice's lines, in order.
fn line_amounts(invoice: &Invoice) -> Vec<saas_billing::Money> {
    invoice.lines.iter().map(|l| l.amount).collect()
}

/// (index, start, end, total) of each invoice.
fn periods(
    invoices: &[Invoice],
) -> Vec<(
    i64,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
    saas_billing::Money,
)> {
    invoices
        .iter()
        .map(|i| (i.period_index, i.period_start, i.period_end, i.total))
        .collect()
}

/// Basic (30.00 a month) from Apr 10 anchored on May 1: the first period
/// is Apr 10 – May 1, 21 of the 30 days of the calendar's April period,
/// billed 30.00 × 21/30 = 21.00 on May 1; then 30.00 a month from May 1.
#[tokio::test]
async fn an_anchor_bills_a_prorated_first_period_then_full_months() {
    let (mut h, tenant, sub) = basic_from_apr_10_anchored_on_may_1().await;
    assert_eq!(sub.status(), SubscriptionStatus::Active);
    assert_eq!(sub.calendar().anchor(), at(2024, 5, 1, 0));
    assert_eq!(sub.current_period_index(), -1);
    let stub = sub.current_period().unwrap();
    assert_eq!(
        (stub.start(), stub.end()),
        (at(2024, 4, 10, 0), at(2024, 5, 1, 0))
    );
    assert_eq!(sub.next_due_at(), Some(at(2024, 5, 1, 0)));

    let report = h.advance_to(at(2024, 4, 30, 0)).await.unwrap();
    assert!(report.drafts_created.is_empty());
    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    h.advance_to(at(2024, 6, 1, 0)).await.unwrap();
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(
        periods(&invoices),
        [
            (-1, at(2024, 4, 10, 0), at(2024, 5, 1, 0), usd(dec!(21.00))),
            (0, at(2024, 5, 1, 0), at(2024, 6, 1, 0), usd(dec!(30.00))),
        ]
    );
    let first = &invoices[0].lines[0];
    assert_eq!(first.kind, LineKind::Licensed);
    assert_eq!(first.proration, Some(dec!(0.7)));
    assert_eq!(first.full_period_amount, Some(usd(dec!(30))));
    assert_eq!(
        (first.service_start, first.service_end),
        (at(2024, 4, 10, 0), at(2024, 5, 1, 0))
    );
    assert_eq!(first.amount, usd(dec!(21.00)));
    assert_eq!(
        first.description,
        "Basic (basic v1), first period from 2024-04-10T00:00:00+00:00"
    );
    // The full month's licensed line is not prorated.
    assert_eq!(invoices[1].lines[0].proration, None);
}

/// Created on Apr 15, backdated to Mar 1: March has ended and is billed by
/// the next cycle run; April (Apr 1 – May 1) is billed when it ends.
#[tokio::test]
async fn a_backdated_start_is_billed_by_the_next_cycle() {
    let mut h = harness(at(2024, 4, 15, 0));
    let tenant = TenantId::new();
    let sub = h
        .engine()
        .create_subscription(basic(tenant).backdate_start(at(2024, 3, 1, 0)))
        .await
        .unwrap();
    assert_eq!(sub.started_at(), at(2024, 3, 1, 0));
    assert_eq!(sub.created_at(), at(2024, 4, 15, 0));
    assert_eq!(sub.calendar().anchor(), at(2024, 3, 1, 0));
    assert_eq!(sub.next_due_at(), Some(at(2024, 4, 1, 0)));

    // Usage from the backdated start is accepted, not before it.
    let calls = MeterKey::new("calls").unwrap();
    let event = |t, key: &str| UsageEvent::new(tenant, sub.id(), calls.clone(), dec!(1), t, key);
    h.engine()
        .record_usage(event(at(2024, 3, 5, 0), "march"))
        .await
        .unwrap();
    let err = h
        .engine()
        .record_usage(event(at(2024, 2, 28, 0), "february"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BillingError::InvalidInput {
                field: "timestamp",
                ..
            }
        ),
        "{err:?}"
    );

    let report = h.advance_to(at(2024, 4, 15, 0)).await.unwrap();
    assert_eq!(report.drafts_created.len(), 1);
    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(
        periods(&invoices),
        [
            (0, at(2024, 3, 1, 0), at(2024, 4, 1, 0), usd(dec!(30.00))),
            (1, at(2024, 4, 1, 0), at(2024, 5, 1, 0), usd(dec!(30.00))),
        ]
    );
    // March's usage is on March's invoice (1 call, within the free tier).
    let march_calls = invoices[0]
        .lines
        .iter()
        .find(|l| l.kind.is_usage())
        .unwrap();
    assert_eq!(march_calls.quantity, dec!(1));

    // When the first run comes after both periods ended, it bills both.
    let mut late = harness(at(2024, 4, 15, 0));
    let other = late
        .engine()
        .create_subscription(basic(tenant).backdate_start(at(2024, 3, 1, 0)))
        .await
        .unwrap();
    let report = late.advance_to(at(2024, 5, 2, 0)).await.unwrap();
    assert_eq!(report.drafts_created.len(), 2);
    let invoices = late.engine().invoices(tenant, other.id()).await.unwrap();
    let totals: Vec<_> = invoices.iter().map(|i| i.total).collect();
    assert_eq!(totals, [usd(dec!(30.00)), usd(dec!(30.00))]);
}

/// Backdated to Mar 10 and anchored on Apr 1: the first period is Mar 10 –
/// Apr 1, 22 of March's 31 days: 30.00 × 22/31 = 21.29 (half-even).
#[tokio::test]
async fn a_backdated_start_with_an_anchor_prorates_the_first_period() {
    let mut h = harness(at(2024, 4, 15, 0));
    let tenant = TenantId::new();
    let sub = h
        .engine()
        .create_subscription(
            basic(tenant)
                .backdate_start(at(2024, 3, 10, 0))
                .billing_cycle_anchor(at(2024, 4, 1, 0)),
        )
        .await
        .unwrap();
    h.advance_to(at(2024, 4, 15, 0)).await.unwrap();
    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(
        periods(&invoices),
        [
            (-1, at(2024, 3, 10, 0), at(2024, 4, 1, 0), usd(dec!(21.29))),
            (0, at(2024, 4, 1, 0), at(2024, 5, 1, 0), usd(dec!(30.00))),
        ]
    );
}

/// With a trial, the anchor counts from the trial's end: a 14-day trial
/// from Apr 1 ends Apr 15; anchored on May 1, the first paid period is
/// Apr 15 – May 1, 16 of 30 days: 16.00. An anchor inside the trial is
/// refused.
#[tokio::test]
async fn with_a_trial_the_anchor_counts_from_the_trial_end() {
    let mut h = harness(at(2024, 4, 1, 0));
    let tenant = TenantId::new();
    let trial = || basic(tenant).trial(Trial::Days(14));
    let err = h
        .engine()
        .create_subscription(trial().billing_cycle_anchor(at(2024, 4, 10, 0)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BillingError::InvalidInput {
                field: "billing_cycle_anchor",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("trial's end"), "{err}");

    let sub = h
        .engine()
        .create_subscription(trial().billing_cycle_anchor(at(2024, 5, 1, 0)))
        .await
        .unwrap();
    assert_eq!(sub.status(), SubscriptionStatus::Trialing);
    assert_eq!(sub.trial_end(), Some(at(2024, 4, 15, 0)));
    assert_eq!(sub.paid_start(), at(2024, 4, 15, 0));
    let report = h.advance_to(at(2024, 4, 15, 0)).await.unwrap();
    assert_eq!(report.trials_ended, [sub.id()]);
    assert!(report.drafts_created.is_empty());
    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(
        periods(&invoices),
        [(-1, at(2024, 4, 15, 0), at(2024, 5, 1, 0), usd(dec!(16.00)))]
    );
}

/// A trial counts from a backdated start: from Mar 1, 14 days end on
/// Mar 15, before the creation on Apr 15. The subscription starts
/// trialing; the next cycle ends the trial and bills Mar 15 – Apr 15.
#[tokio::test]
async fn a_backdated_trial_counts_from_the_start() {
    let mut h = harness(at(2024, 4, 15, 0));
    let tenant = TenantId::new();
    let sub = h
        .engine()
        .create_subscription(
            basic(tenant)
                .trial(Trial::Days(14))
                .backdate_start(at(2024, 3, 1, 0)),
        )
        .await
        .unwrap();
    assert_eq!(sub.status(), SubscriptionStatus::Trialing);
    assert_eq!(sub.trial_end(), Some(at(2024, 3, 15, 0)));
    let report = h.advance_to(at(2024, 4, 15, 0)).await.unwrap();
    assert_eq!(report.trials_ended, [sub.id()]);
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(
        periods(&invoices),
        [(0, at(2024, 3, 15, 0), at(2024, 4, 15, 0), usd(dec!(30.00)))]
    );
}

/// Usage in the prorated first period is billed on its invoice (calls:
/// 1,000 free, then 0.01), trial usage in the same calendar period is
/// not; late usage within the grace is rated at finalization, and after
/// it is refused (stores never move a negative period to a later invoice,
/// so it would otherwise be lost).
#[tokio::test]
async fn usage_in_the_first_period_is_billed_and_trial_usage_is_not() {
    let mut h = harness(at(2024, 4, 1, 0));
    let tenant = TenantId::new();
    let sub = h
        .engine()
        .create_subscription(
            basic(tenant)
                .trial(Trial::Days(14))
                .billing_cycle_anchor(at(2024, 5, 1, 0)),
        )
        .await
        .unwrap();
    let calls = MeterKey::new("calls").unwrap();
    let event = |t, key: String| UsageEvent::new(tenant, sub.id(), calls.clone(), dec!(1), t, key);
    h.set_time(at(2024, 4, 30, 0));
    let trial = (0..1500).map(|i| event(at(2024, 4, 5, 0), format!("trial-{i}")));
    let paid = (0..1200).map(|i| event(at(2024, 4, 20, 0), format!("paid-{i}")));
    let outcomes = h
        .engine()
        .record_usage_batch(trial.chain(paid).collect())
        .await
        .unwrap();
    assert!(outcomes.iter().all(Result::is_ok));
    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    let draft = &h.engine().invoices(tenant, sub.id()).await.unwrap()[0];
    // 16.00 for Apr 15 – May 1, and 1,200 calls: 200 × 0.01 = 2.00.
    assert_eq!(draft.total, usd(dec!(18.00)));

    h.set_time(at(2024, 5, 1, 12));
    h.engine()
        .record_usage(event(at(2024, 4, 26, 0), "in-grace".into()))
        .await
        .unwrap();
    h.advance_to(at(2024, 5, 2, 1)).await.unwrap();
    let invoice = &h.engine().invoices(tenant, sub.id()).await.unwrap()[0];
    assert_eq!(invoice.status, saas_billing::InvoiceStatus::Finalized);
    assert_eq!(invoice.total, usd(dec!(18.01)));

    let err = h
        .engine()
        .record_usage(event(at(2024, 4, 27, 0), "too-late".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BillingError::InvalidInput {
                field: "timestamp",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("prorated first period"), "{err}");
    // Usage of the full periods after it is corrected as before.
    h.engine()
        .record_usage(event(at(2024, 5, 1, 6), "may".into()))
        .await
        .unwrap();
}

/// A month-end anchor clamps like every calendar: from Jan 15 anchored on
/// Jan 31, the first period is 16 of the 31 days of Dec 31 – Jan 31
/// (30.00 × 16/31 = 15.48), then Jan 31 → Feb 29 → Mar 31.
#[tokio::test]
async fn a_month_end_anchor_clamps_and_prorates_the_first_period() {
    let mut h = harness(at(2024, 1, 15, 0));
    let tenant = TenantId::new();
    let sub = h
        .engine()
        .create_subscription(basic(tenant).billing_cycle_anchor(at(2024, 1, 31, 0)))
        .await
        .unwrap();
    h.advance_to(at(2024, 3, 31, 0)).await.unwrap();
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(
        periods(&invoices),
        [
            (-1, at(2024, 1, 15, 0), at(2024, 1, 31, 0), usd(dec!(15.48))),
            (0, at(2024, 1, 31, 0), at(2024, 2, 29, 0), usd(dec!(30.00))),
            (1, at(2024, 2, 29, 0), at(2024, 3, 31, 0), usd(dec!(30.00))),
        ]
    );
}

/// Cancelling inside the first period credits the unused time against the
/// same full period the first period is prorated over: from Apr 10
/// anchored on May 1, cancelled with proration on Apr 20 — 21.00 billed,
/// 11 of 30 days credited (−11.00): 10.00 for the 10 days served.
#[tokio::test]
async fn cancelling_in_the_first_period_credits_against_the_full_period() {
    let (mut h, tenant, sub) = basic_from_apr_10_anchored_on_may_1().await;
    h.set_time(at(2024, 4, 20, 0));
    h.engine()
        .cancel(tenant, sub.id(), CancelMode::Immediately { prorate: true })
        .await
        .unwrap();
    h.advance_to(at(2024, 4, 20, 0)).await.unwrap();
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    assert_eq!(invoices.len(), 1);
    let amounts = line_amounts(&invoices[0]);
    assert_eq!(
        amounts,
        [usd(dec!(21.00)), usd(dec!(-11.00)), usd(dec!(0.00))]
    );
    assert_eq!(invoices[0].total, usd(dec!(10.00)));
    assert!(
        h.engine()
            .subscription(tenant, sub.id())
            .await
            .unwrap()
            .is_closed()
    );
}

/// Upgrading inside the first period prorates against the full period:
/// from Apr 10 anchored on May 1, an upgrade to pro on Apr 16 (15 of 30
/// days left) credits −15.00 and debits 45.00 + 2.50 (one seat): 21.00 −
/// 15.00 + 45.00 + 2.50 = 53.50; May bills pro in full, 95.00.
#[tokio::test]
async fn upgrading_in_the_first_period_prorates_against_the_full_period() {
    let (mut h, tenant, sub) = basic_from_apr_10_anchored_on_may_1().await;
    h.set_time(at(2024, 4, 16, 0));
    let pro = PlanChange {
        plan: plan("pro", 1),
        seats: 1,
    };
    h.engine().change_plan(tenant, sub.id(), pro).await.unwrap();
    h.advance_to(at(2024, 6, 1, 0)).await.unwrap();
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    let amounts = line_amounts(&invoices[0]);
    assert_eq!(
        amounts,
        [
            usd(dec!(21.00)),
            usd(dec!(-15.00)),
            usd(dec!(45.00)),
            usd(dec!(2.50)),
            usd(dec!(0.00)),
        ]
    );
    assert_eq!(invoices[0].total, usd(dec!(53.50)));
    assert_eq!(invoices[1].total, usd(dec!(95.00)));
}

/// Pausing and resuming inside the first period prorate against the full
/// period too: from Apr 10 anchored on May 1, paused on Apr 20 (−11.00)
/// and resumed on Apr 25 (+6.00): 21.00 − 11.00 + 6.00 = 16.00 for the
/// 16 days served. The upcoming invoice shows the same before May 1.
#[tokio::test]
async fn pausing_in_the_first_period_prorates_against_the_full_period() {
    let (mut h, tenant, sub) = basic_from_apr_10_anchored_on_may_1().await;
    h.set_time(at(2024, 4, 20, 0));
    h.engine().pause(tenant, sub.id()).await.unwrap();
    h.set_time(at(2024, 4, 25, 0));
    h.engine().resume(tenant, sub.id()).await.unwrap();
    let upcoming = h.engine().upcoming_invoice(tenant, sub.id()).await.unwrap();
    assert_eq!(upcoming.period_index, -1);
    assert_eq!(upcoming.period_start, at(2024, 4, 10, 0));
    assert_eq!(upcoming.total, usd(dec!(16.00)));
    h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
    let invoices = h.engine().invoices(tenant, sub.id()).await.unwrap();
    let amounts = line_amounts(&invoices[0]);
    assert_eq!(
        amounts,
        [
            usd(dec!(21.00)),
            usd(dec!(-11.00)),
            usd(dec!(6.00)),
            usd(dec!(0.00))
        ]
    );
    assert_eq!(invoices[0].total, usd(dec!(16.00)));
}

/// An anchor before the start or more than one interval after it, and a
/// start in the future or more than `MAX_BACKDATE_DAYS` back, are
/// `InvalidInput` naming the field and saying what to do; the bounds
/// themselves are accepted.
#[test]
fn anchors_and_backdated_starts_are_validated() {
    let catalog = catalog();
    let now = at(2024, 4, 10, 0);
    let tenant = TenantId::new();
    let refused = |new: NewSubscription, field: &str, hint: &str| {
        let err = Subscription::create(new, &catalog, now).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        match &err {
            BillingError::InvalidInput { field: f, .. } => assert_eq!(*f, field, "{err}"),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains(hint), "{err}");
    };
    let second = TimeDelta::seconds(1);
    refused(
        basic(tenant).billing_cycle_anchor(now - second),
        "billing_cycle_anchor",
        "choose an anchor at or after",
    );
    // One month after Apr 10 is May 10.
    refused(
        basic(tenant).billing_cycle_anchor(at(2024, 5, 10, 0) + second),
        "billing_cycle_anchor",
        "choose an anchor at or before 2024-05-10T00:00:00+00:00",
    );
    refused(
        basic(tenant).backdate_start(now + second),
        "start",
        "can only be backdated",
    );
    let limit = now - TimeDelta::days(i64::from(MAX_BACKDATE_DAYS));
    refused(
        basic(tenant).backdate_start(limit - second),
        "start",
        "backdate to 2023-04-10T00:00:00+00:00 or later",
    );
    // Relative to a backdated start, not to now.
    refused(
        basic(tenant)
            .backdate_start(at(2024, 3, 1, 0))
            .billing_cycle_anchor(at(2024, 4, 1, 0) + second),
        "billing_cycle_anchor",
        "at or before 2024-04-01",
    );

    // The bounds are accepted; an anchor one full interval away makes a
    // first period of a whole month, prorated at 1.
    let sub = Subscription::create(
        basic(tenant).billing_cycle_anchor(at(2024, 5, 10, 0)),
        &catalog,
        now,
    )
    .unwrap();
    assert_eq!(sub.current_period_index(), -1);
    assert_eq!(sub.current_period().unwrap().start(), now);
    let sub = Subscription::create(basic(tenant).billing_cycle_anchor(now), &catalog, now).unwrap();
    assert_eq!(sub.current_period_index(), 0);
    let sub = Subscription::create(basic(tenant).backdate_start(limit), &catalog, now).unwrap();
    assert_eq!(sub.started_at(), limit);
    let sub = Subscription::create(basic(tenant).backdate_start(now), &catalog, now).unwrap();
    assert_eq!(sub.started_at(), now);
}

/// Without an anchor or backdated start nothing changes: the calendar is
/// anchored at creation (or the trial's end), the first period is 0 and
/// the stored form has no new key.
#[test]
fn without_an_anchor_creation_is_unchanged() {
    let catalog = catalog();
    let now = at(2024, 4, 10, 0);
    let sub = Subscription::create(basic(TenantId::new()), &catalog, now).unwrap();
    assert_eq!(sub.calendar().anchor(), now);
    assert_eq!(sub.current_period_index(), 0);
    assert_eq!(sub.started_at(), now);
    assert_eq!(sub.paid_start(), now);
    let stored = serde_json::to_value(&sub).unwrap();
    assert!(stored.get("started_at").is_none(), "{stored}");
    let back: Subscription = serde_json::from_value(stored).unwrap();
    assert_eq!(back, sub);

    let sub =
        Subscription::create(basic(TenantId::new()).trial(Trial::Days(14)), &catalog, now).unwrap();
    assert_eq!(sub.calendar().anchor(), at(2024, 4, 24, 0));
    assert_eq!(sub.current_period_index(), 0);
}

/// The backdated start and the first period survive every store: the same
/// subscription reads back equal, and the same invoices come out.
#[tokio::test]
async fn anchored_and_backdated_subscriptions_round_trip_through_every_store() {
    async fn run(stores: BillingStores) -> Vec<(i64, saas_billing::Money)> {
        let mut h = BillingHarness::with_stores(
            catalog(),
            at(2024, 4, 15, 0),
            BillingConfig::default(),
            stores,
        );
        let tenant = TenantId::new();
        let new = basic(tenant)
            .backdate_start(at(2024, 3, 10, 0))
            .billing_cycle_anchor(at(2024, 4, 1, 0));
        let created = h.engine().create_subscription(new).await.unwrap();
        let read = h.engine().subscription(tenant, created.id()).await.unwrap();
        assert_eq!(read, created);
        assert_eq!(read.started_at(), at(2024, 3, 10, 0));
        assert_eq!(read.current_period_index(), -1);
        h.advance_to(at(2024, 5, 1, 0)).await.unwrap();
        let invoices = h.engine().invoices(tenant, created.id()).await.unwrap();
        invoices.iter().map(|i| (i.period_index, i.total)).collect()
    }
    let expected = vec![(-1, usd(dec!(21.29))), (0, usd(dec!(30.00)))];
    assert_eq!(run(BillingStores::in_memory()).await, expected);
    let (sqlite, cleanup) = sqlite_stores().await;
    assert_eq!(run(sqlite.billing_stores()).await, expected);
    cleanup.run().await;
    if let Some((pg, cleanup)) =
        pg_stores("anchored_and_backdated_subscriptions_round_trip_through_every_store").await
    {
        assert_eq!(run(pg.billing_stores()).await, expected);
        cleanup.run().await;
    }
}
