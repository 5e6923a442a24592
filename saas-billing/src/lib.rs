#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The README links items of every feature (docs.rs builds with all of
// them, where every link is checked); a build without some of them
// documents what it has instead of failing on those links.
#![cfg_attr(
    not(all(
        feature = "testing",
        feature = "postgres",
        feature = "sqlite",
        feature = "redis"
    )),
    allow(rustdoc::broken_intra_doc_links)
)]
// Money is exact: binary floating point has no place in this crate. The
// test `no_float_types_in_src` also greps src/ for the float type names.
#![deny(clippy::float_arithmetic, clippy::float_cmp, clippy::float_cmp_const)]

mod allocate;
mod calendar;
mod charge;
pub mod credit;
mod currency;
pub mod discount;
mod engine;
mod entitlement;
mod error;
mod events;
mod ids;
mod invoice;
mod literal;
mod metering;
mod money;
mod observe;
mod plan;
pub mod quota;
mod rounding;
pub mod store;
mod subscription;
mod tax;

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use calendar::{BillingCalendar, Cadence, Interval, Period};
pub use charge::{
    Charge, ChargeComponent, ChargeLine, ChargeModel, LimitApplied, Tier, TierTable,
    TierTableBuilder,
};
pub use currency::Currency;
pub use engine::{
    BillingConfig, BillingEngine, BillingStores, CycleReport, MAX_STEPS_PER_SUBSCRIPTION,
    UncommittedUsage,
};
pub use entitlement::{Decision, DenyReason, Entitlement, EntitlementChecker, EntitlementValue};
pub use error::BillingError;
pub use events::{BillingEvent, BillingEventSink, InMemoryEventRecorder, NoopEventSink};
pub use ids::{
    CouponId, CreditGrantId, CreditNoteId, FeatureKey, InvoiceId, IssuerId, MeterKey, PlanId,
    PriceKey, ProductId, SubscriptionId,
};
pub use invoice::{
    CreditAmount, CreditNote, CreditNoteLine, CreditNoteRequest, CreditReason, Finalization,
    Invoice, InvoiceDraft, InvoiceIssuer, InvoiceLine, InvoiceNumber, InvoicePayment,
    InvoiceStatus, LicensedBasis, LineKind, PaymentChange, PaymentStatus, RatingInput,
    UsageCorrection, rate,
};
pub use metering::{
    Aggregate, Aggregation, MAX_IDEMPOTENCY_KEY_LEN, Meter, UsageEvent, Window, aggregate,
};
pub use money::{MAX_SPLIT_PARTS, Money};
pub use plan::{
    Catalog, CatalogBuilder, MAX_TRIAL_DAYS, PlanRef, PlanVersion, PlanVersionBuilder, Price,
    PriceKind, Product,
};
pub use rounding::RoundingMode;
pub use store::{
    CouponStore, IngestOutcome, InvoiceStore, StoredUsage, SubscriptionStore, UsageRecord,
    UsageStore, UsageWriter,
};
pub use subscription::{
    AddOn, CancelMode, ChangeDirection, ChangeTiming, MAX_ADDON_QUANTITY, MAX_ADDONS,
    MAX_BACKDATE_DAYS, MAX_METERED_ADDON_SPANS, MeteredAddOnSpan, NewSubscription, PeriodBasis,
    PlanChange, PlanChangeOutcome, ProrationPolicy, ScheduledChange, Subscription,
    SubscriptionEvent, SubscriptionStatus, TRANSITIONS, Trial, proration_fraction,
};

pub use credit::{CreditConsumption, CreditGrant, CreditGrantBalance};
pub use discount::{
    Coupon, CouponAmount, CouponDuration, CouponScope, LineDiscount, Redemption, apply_discounts,
};
pub use tax::{
    LineTax, StaticTaxRates, TaxBehavior, TaxQuery, TaxRate, TaxResolver, TaxSummary, apply_taxes,
};

/// Re-exported so callers name the same `Decimal` and `Tz` types as the API.
pub use chrono_tz::Tz;
pub use rust_decimal::Decimal;

/// Re-exported from `chrono`: the instants and durations the API takes and
/// returns (`DateTime<Utc>` timestamps, `TimeDelta` graces and skews), and
/// `TimeZone` to build an instant (`Utc.with_ymd_and_hms(…)`), so a caller
/// of the engine needs no `chrono` dependency of its own (or a mismatched
/// version of one).
pub use chrono::{DateTime, TimeDelta, TimeZone, Utc};
/// Re-exported from `saas_core`: the tenant id every engine and store call
/// takes, the clock the engine reads (`SharedClock` = `Arc<dyn Clock>`;
/// `SystemClock` in production, `ManualClock` in tests) and the
/// `ErrorKind` that [`BillingError::kind`] returns.
pub use saas_core::{Clock, ErrorKind, ManualClock, SharedClock, SystemClock, TenantId};

// Not public API: what `dec!` expands to.
#[doc(hidden)]
pub mod __private {
    pub use crate::literal::decimal_literal;
}

// The main types can cross threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Money>();
    assert_send_sync::<Currency>();
    assert_send_sync::<BillingCalendar>();
    assert_send_sync::<Charge>();
    assert_send_sync::<ChargeLine>();
    assert_send_sync::<BillingError>();
    assert_send_sync::<Subscription>();
    assert_send_sync::<Invoice>();
    assert_send_sync::<BillingEngine>();
    assert_send_sync::<EntitlementChecker>();
    assert_send_sync::<quota::LeasedQuota>();
    #[cfg(feature = "redis")]
    assert_send_sync::<quota::RedisQuotaStore>();
};
