//! Conformance suites for the stores and a simulated-clock harness
//! (feature `testing`).
//!
//! Each suite is a set of plain `pub async fn`s over a store trait object;
//! a macro stamps out one named `#[tokio::test]` per behaviour for a
//! backend. A factory returns `None` to skip (a SQL backend without its
//! database configured), and either the store or the store with a
//! [`Cleanup`] that runs after the test, even a failed one (drop the
//! test's schema, delete its file):
//!
//! ```text
//! async fn usage_store() -> Option<Arc<dyn UsageStore>> { … }
//! // or: async fn usage_store() -> Option<(Arc<dyn UsageStore>, Cleanup)> { … }
//! saas_billing::usage_store_conformance!(usage_store);
//! ```

mod cleanup;
pub mod coupons;
pub mod credit_notes;
pub mod credits;
pub mod fixtures;
mod harness;
pub mod invoices;
pub mod numbering;
pub mod quota;
pub mod quota_grants;
pub mod subscriptions;
pub mod usage;

pub use cleanup::{Cleanup, StoreFixture, run_with_cleanup};
pub use harness::BillingHarness;

/// One `#[tokio::test]` per subscription-store behaviour, for the store
/// returned by `$factory` (`async fn() -> Option<F>`, `F:` [`StoreFixture`]).
#[macro_export]
macro_rules! subscription_store_conformance {
    ($factory:path) => {
        $crate::__conformance!($factory, subscriptions;
            insert_then_get,
            addons_round_trip,
            duplicate_insert_is_already_exists,
            other_tenants_subscription_is_not_found,
            update_bumps_version_and_refuses_stale,
            concurrent_updates_one_wins,
            due_lists_by_next_due_at,
            list_is_per_tenant,
            open_pages_by_id_and_skips_closed
        );
    };
}

/// One `#[tokio::test]` per usage-store behaviour, for the store returned
/// by `$factory` (`async fn() -> Option<F>`, `F:` [`StoreFixture`]).
#[macro_export]
macro_rules! usage_store_conformance {
    ($factory:path) => {
        $crate::__conformance!($factory, usage;
            same_key_same_payload_is_recorded_once,
            same_key_other_payload_is_a_conflict,
            keys_are_per_tenant,
            batch_outcomes_follow_the_batch,
            racing_ingestions_store_once,
            sealed_periods_bill_late_usage_in_the_next,
            seal_is_monotonic,
            queries_filter_by_tenant_and_subscription
        );
    };
}

/// One `#[tokio::test]` per invoice-store behaviour, for the store
/// returned by `$factory` (`async fn() -> Option<F>`, `F:` [`StoreFixture`]).
#[macro_export]
macro_rules! invoice_store_conformance {
    ($factory:path) => {
        $crate::__conformance!($factory, invoices;
            create_then_get_and_find,
            one_invoice_per_subscription_and_period,
            racing_creations_store_one,
            finalized_invoices_are_immutable,
            drafts_due_are_unfinalized_and_due,
            other_tenants_invoice_is_not_found
        );
        $crate::__conformance!($factory, numbering;
            numbers_are_sequential_per_issuer,
            racing_finalizations_number_without_gaps,
            payment_changes_follow_the_rules,
            racing_payments_pay_once
        );
        $crate::__conformance!($factory, credit_notes;
            credit_notes_never_exceed_what_remains,
            credit_notes_after_payment_are_refunds,
            racing_credit_notes_never_over_credit
        );
        $crate::__conformance!($factory, credits;
            finalization_consumes_credits_in_order,
            racing_finalizations_never_overdraw_a_grant
        );
    };
}

/// One `#[tokio::test]` per coupon-store behaviour, for the store
/// returned by `$factory` (`async fn() -> Option<F>`, `F:` [`StoreFixture`]).
#[macro_export]
macro_rules! coupon_store_conformance {
    ($factory:path) => {
        $crate::__conformance!($factory, coupons;
            create_then_get,
            limits_and_expiry_are_enforced,
            racing_redemptions_respect_the_limit,
            redemptions_are_listed_per_subscription
        );
    };
}

/// One `#[tokio::test]` per quota-store behaviour, for the store returned
/// by `$factory` (`async fn() -> Option<F>`, `F:` [`StoreFixture`]).
#[macro_export]
macro_rules! quota_store_conformance {
    ($factory:path) => {
        $crate::__conformance!($factory, quota;
            consumes_up_to_the_limit_exactly,
            keys_are_separate_and_a_new_period_starts_at_zero,
            racing_consumers_are_granted_exactly_the_limit,
            rollover_under_concurrency_resets_once,
            reserve_commit_and_release_round_trip,
            expired_reservations_go_back,
            give_back_returns_units_and_refuses_more,
            out_of_range_amounts_are_invalid_input
        );
    };
}

/// One `#[tokio::test]` per quota-grant behaviour, for the store returned
/// by `$factory` (`async fn() -> Option<F>`, `F:` [`StoreFixture`] of an
/// `Arc<dyn` [`GrantingQuotaStore`](crate::quota::GrantingQuotaStore)`>`).
#[macro_export]
macro_rules! quota_grant_conformance {
    ($factory:path) => {
        $crate::__conformance!($factory, quota_grants;
            plan_quota_is_spent_before_grants,
            a_grant_lapses_at_its_expiry,
            a_period_grant_ends_with_its_period,
            racing_consumers_never_exceed_plan_plus_grants,
            a_tenants_grant_is_never_another_tenants,
            recording_a_grant_is_idempotent,
            a_lease_spends_the_plan_then_grants
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance {
    ($factory:path, $suite:ident; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(fixture) = $factory().await else { return };
                let (store, cleanup) = $crate::testing::StoreFixture::split(fixture);
                $crate::testing::run_with_cleanup($crate::testing::$suite::$name(store), cleanup)
                    .await;
            }
        )+
    };
}
