//! When metered add-on changes take effect for billing: without
//! proration, in a trial, and whatever the billing cycle's lag.

use saas_billing::{
    BillingStores, CancelMode, ChangeTiming, Currency, Decimal, ErrorKind, LineKind,
    MAX_METERED_ADDON_SPANS, MeterKey, NewSubscription, ProrationPolicy, TenantId, TimeDelta,
    Trial, UsageEvent, dec,
};

use crate::fixtures::{at, plan, usd};
use crate::metered_addons::{addon, addon_lines, calls, figures, harness, invoice, set, subscribe};

/// Without proration both ways, a change applies to billing from the
/// next period: attached April 16, April bills none of its usage and May
/// all of it (20 calls, 0.20); detached May 11, May is still billed out
/// and June's usage is not.
#[tokio::test]
async fn without_proration_a_metered_addon_changes_billing_from_the_next_period() {
    let later = ChangeTiming::ImmediateWithoutProration;
    let mut h = harness(
        BillingStores::in_memory(),
        ProrationPolicy::new(later, later),
    );
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant, plan("basic", 2)).await;
    h.set_time(at(2024, 4, 16, 0));
    let (s, _) = h
        .engine()
        .set_addon(tenant, sub, addon("extra_calls", 1))
        .await
        .unwrap();
    assert_eq!(s.addons(), [addon("extra_calls", 1)]);
    h.set_time(at(2024, 4, 20, 0));
    calls(&h, tenant, sub, 10, at(2024, 4, 20, 0), "a").await;
    h.advance_to(at(2024, 5, 11, 0)).await.unwrap();
    set(&h, tenant, sub, addon("extra_calls", 0)).await;
    h.set_time(at(2024, 5, 20, 0));
    calls(&h, tenant, sub, 20, at(2024, 5, 20, 0), "b").await;
    h.set_time(at(2024, 6, 5, 0));
    calls(&h, tenant, sub, 30, at(2024, 6, 5, 0), "c").await;
    h.advance_to(at(2024, 7, 2, 0)).await.unwrap();
    let april = invoice(&h, tenant, sub, 0).await;
    assert!(addon_lines(&april, "extra_calls").is_empty());
    assert_eq!(april.total, usd(dec!(35.00)));
    let may = invoice(&h, tenant, sub, 1).await;
    assert_eq!(
        figures(addon_lines(&may, "extra_calls")[0]),
        (dec!(20), dec!(0.20), at(2024, 5, 1, 0), at(2024, 6, 1, 0))
    );
    let june = invoice(&h, tenant, sub, 2).await;
    assert!(addon_lines(&june, "extra_calls").is_empty());
}

/// Attached during a 14-day trial: the first paid period (April 15 to
/// May 15) bills its usage in whole, 20 calls (0.20); the 10 trial calls
/// are not billed.
#[tokio::test]
async fn a_metered_addon_attached_in_a_trial_bills_the_first_paid_period() {
    let mut h = harness(BillingStores::in_memory(), ProrationPolicy::default());
    let tenant = TenantId::new();
    let new = NewSubscription::new(tenant, plan("basic", 2), Currency::USD).trial(Trial::Days(14));
    let sub = h.engine().create_subscription(new).await.unwrap().id();
    h.set_time(at(2024, 4, 5, 0));
    set(&h, tenant, sub, addon("extra_calls", 1)).await;
    h.set_time(at(2024, 4, 20, 0));
    calls(&h, tenant, sub, 10, at(2024, 4, 10, 0), "a").await;
    calls(&h, tenant, sub, 20, at(2024, 4, 20, 0), "b").await;
    h.advance_to(at(2024, 5, 17, 0)).await.unwrap();
    let first = invoice(&h, tenant, sub, 0).await;
    assert_eq!(
        figures(addon_lines(&first, "extra_calls")[0]),
        (dec!(20), dec!(0.20), at(2024, 4, 15, 0), at(2024, 5, 15, 0))
    );
    assert_eq!(first.total, usd(dec!(35.20)));
}

type Lines = Vec<Vec<(LineKind, String, Decimal)>>;

/// The add-on lines of every invoice of a scenario: `extra_calls`
/// attached April 16 and detached May 11 (at May's end), `call_audit`
/// attached May 20 and detached June 3 (at June's end), calls recorded
/// at each change — the cycle run at each change, or only at the end.
async fn lag_scenario(punctual: bool) -> Lines {
    let now = ChangeTiming::ImmediateWithProration;
    let mut h = harness(
        BillingStores::in_memory(),
        ProrationPolicy::new(now, ChangeTiming::AtPeriodEnd),
    );
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant, plan("basic", 2)).await;
    let steps = [
        (at(2024, 4, 16, 0), addon("extra_calls", 1), 10),
        (at(2024, 5, 11, 0), addon("extra_calls", 0), 20),
        (at(2024, 5, 20, 0), addon("call_audit", 1), 30),
        (at(2024, 6, 3, 0), addon("call_audit", 0), 40),
    ];
    for (i, (when, change, n)) in steps.into_iter().enumerate() {
        if punctual {
            h.advance_to(when).await.unwrap();
        } else {
            h.set_time(when);
        }
        set(&h, tenant, sub, change).await;
        calls(&h, tenant, sub, n, when, &format!("s{i}")).await;
    }
    h.advance_to(at(2024, 7, 2, 0)).await.unwrap();
    let invoices = h.engine().invoices(tenant, sub).await.unwrap();
    invoices
        .iter()
        .map(|i| {
            i.lines
                .iter()
                .filter(|l| matches!(l.kind, LineKind::AddOnUsage { .. }))
                .map(|l| {
                    let price = l.price.as_ref().map(|p| p.to_string()).unwrap_or_default();
                    (l.kind.clone(), price, l.amount.amount())
                })
                .collect()
        })
        .collect()
}

/// April bills 10 calls of `extra_calls` (0.10); May 50 of it (0.50,
/// detached at its end) and 30 of `call_audit` (0.06); June 40 of
/// `call_audit` (0.08) — whether the cycle ran at each change or once.
#[tokio::test]
async fn metered_addon_invoices_do_not_depend_on_the_cycles_lag() {
    let punctual = lag_scenario(true).await;
    let amounts: Vec<Vec<(String, Decimal)>> = punctual
        .iter()
        .map(|i| i.iter().map(|(_, p, a)| (p.clone(), *a)).collect())
        .collect();
    assert_eq!(
        amounts,
        [
            vec![("extra_calls".to_string(), dec!(0.10))],
            vec![
                ("extra_calls".to_string(), dec!(0.50)),
                ("call_audit".to_string(), dec!(0.06)),
            ],
            vec![("call_audit".to_string(), dec!(0.08))],
        ]
    );
    assert_eq!(lag_scenario(false).await, punctual);
}

/// Canceled immediately on April 20: the final invoice bills the add-on's
/// usage until then (10 calls, 0.10), and later usage is refused.
#[tokio::test]
async fn an_immediate_cancel_ends_a_metered_addons_span() {
    let mut h = harness(BillingStores::in_memory(), ProrationPolicy::default());
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant, plan("basic", 2)).await;
    set(&h, tenant, sub, addon("extra_calls", 1)).await;
    h.set_time(at(2024, 4, 20, 0));
    calls(&h, tenant, sub, 10, at(2024, 4, 10, 0), "a").await;
    h.engine()
        .cancel(tenant, sub, CancelMode::Immediately { prorate: true })
        .await
        .unwrap();
    let after = UsageEvent::new(
        tenant,
        sub,
        MeterKey::new("calls").unwrap(),
        dec!(1),
        at(2024, 4, 20, 0),
        "after",
    );
    let err = h.engine().record_usage(after).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    h.advance_to(at(2024, 4, 22, 0)).await.unwrap();
    let last = invoice(&h, tenant, sub, 0).await;
    assert_eq!(
        figures(addon_lines(&last, "extra_calls")[0]),
        (dec!(10), dec!(0.10), at(2024, 4, 1, 0), at(2024, 4, 20, 0))
    );
}

/// Each attachment in a period opens a span; the one past
/// [`MAX_METERED_ADDON_SPANS`] is refused and changes nothing.
#[tokio::test]
async fn a_period_keeps_at_most_max_metered_addon_spans() {
    let now = ChangeTiming::ImmediateWithProration;
    let h = harness(BillingStores::in_memory(), ProrationPolicy::new(now, now));
    let tenant = TenantId::new();
    let sub = subscribe(&h, tenant, plan("basic", 2)).await;
    let minutes = |m: usize| at(2024, 4, 2, 0) + TimeDelta::minutes(i64::try_from(m).unwrap());
    for i in 0..MAX_METERED_ADDON_SPANS {
        h.set_time(minutes(2 * i));
        set(&h, tenant, sub, addon("extra_calls", 1)).await;
        h.set_time(minutes(2 * i + 1));
        set(&h, tenant, sub, addon("extra_calls", 0)).await;
    }
    h.set_time(minutes(2 * MAX_METERED_ADDON_SPANS));
    let err = h
        .engine()
        .set_addon(tenant, sub, addon("extra_calls", 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let s = h.engine().subscription(tenant, sub).await.unwrap();
    assert_eq!(s.metered_addon_spans().len(), MAX_METERED_ADDON_SPANS);
    assert!(s.addons().is_empty());
}
