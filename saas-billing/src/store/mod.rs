//! Storage traits, written so a SQL store implements each method as one
//! transaction, their in-memory implementations, and the PostgreSQL
//! ([`postgres`], feature `postgres`) and SQLite ([`sqlite`], feature
//! `sqlite`) stores.
//!
//! Every method's documentation lists its contract; the conformance suite
//! in [`crate::testing`] (feature `testing`) checks exactly those points.

mod memory;
mod memory_coupons;
mod memory_invoices;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "_sql")]
pub(crate) mod sql;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;

pub use memory::{InMemorySubscriptionStore, InMemoryUsageStore};
pub use memory_coupons::InMemoryCouponStore;
pub use memory_invoices::InMemoryInvoiceStore;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use saas_core::TenantId;
use serde::Serialize;

use crate::credit::{CreditConsumption, CreditGrant, CreditGrantBalance};
use crate::currency::Currency;
use crate::discount::{Coupon, Redemption};
use crate::error::BillingError;
use crate::ids::{CouponId, InvoiceId, SubscriptionId};
use crate::invoice::{
    CreditNote, CreditNoteRequest, Finalization, Invoice, InvoiceLine, PaymentChange,
};
use crate::metering::UsageEvent;
use crate::subscription::Subscription;

/// Subscriptions, with optimistic concurrency.
#[async_trait]
pub trait SubscriptionStore: Send + Sync + std::fmt::Debug {
    /// Stores a new subscription with version 1 and returns it.
    /// - `AlreadyExists` if the id is taken.
    async fn insert(&self, subscription: Subscription) -> Result<Subscription, BillingError>;

    /// The subscription.
    /// - `NotFound` if absent *or owned by another tenant*.
    async fn get(&self, tenant: TenantId, id: SubscriptionId)
    -> Result<Subscription, BillingError>;

    /// Replaces the stored subscription if its version equals the given
    /// one, bumping the version by 1; returns the stored value.
    /// - `NotFound` if absent or owned by another tenant.
    /// - `StaleVersion` (no change) if the version differs.
    async fn update(&self, subscription: Subscription) -> Result<Subscription, BillingError>;

    /// Up to `limit` subscriptions with work due: `next_due_at() <= at`,
    /// ordered by that instant then id, across tenants.
    async fn due(&self, at: DateTime<Utc>, limit: usize)
    -> Result<Vec<Subscription>, BillingError>;

    /// A tenant's subscriptions, ordered by creation time then id.
    async fn list(&self, tenant: TenantId) -> Result<Vec<Subscription>, BillingError>;

    /// Up to `limit` open subscriptions (not closed: `next_due_at()` is
    /// set), across tenants, ordered by id, with ids greater than `after`
    /// — one page of every open subscription, for rebuilding in-memory
    /// state at startup. Pass the last id of a page to get the next one.
    async fn open(
        &self,
        after: Option<SubscriptionId>,
        limit: usize,
    ) -> Result<Vec<Subscription>, BillingError>;
}

/// A usage event to store, with the index of the billing period its
/// timestamp falls in (computed by the caller from the subscription's
/// calendar; negative before the first paid period, e.g. in a trial).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// The event.
    pub event: UsageEvent,
    /// The period of its timestamp.
    pub period: i64,
}

/// A stored usage event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredUsage {
    /// The event as first recorded.
    pub event: UsageEvent,
    /// The period of its timestamp.
    pub period: i64,
    /// The period whose invoice bills it: `period`, or — when that period
    /// was already sealed on arrival — the first unsealed one (a correction).
    pub billed_in: i64,
    /// Arrival order within the store.
    pub sequence: u64,
}

/// What ingesting one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IngestOutcome {
    /// Stored now, billed in that period's invoice.
    Recorded {
        /// The period whose invoice bills it.
        billed_in: i64,
    },
    /// The same event (same key, same payload) was stored before; nothing
    /// changed.
    Duplicate {
        /// The period whose invoice bills the original.
        billed_in: i64,
    },
}

/// Usage events, idempotent per tenant and key.
#[async_trait]
pub trait UsageStore: Send + Sync + std::fmt::Debug {
    /// Stores a batch, one outcome per record, in order.
    /// - The idempotency check and the insert happen in one critical
    ///   section (one transaction): two racing ingestions of one key store
    ///   it once.
    /// - Same tenant and key, same payload: `Ok(Duplicate)`, nothing stored.
    /// - Same tenant and key, different payload: `Err(IdempotencyConflict)`
    ///   for that record only; the first payload stays.
    /// - Keys are per tenant: another tenant may use the same key.
    /// - `billed_in` is `period` unless `period >= 0` and the subscription
    ///   is sealed through `period`; then it is `sealed_through + 1`.
    ///   Sealing and assignment are serialized with each other.
    async fn ingest(
        &self,
        batch: Vec<UsageRecord>,
    ) -> Result<Vec<Result<IngestOutcome, BillingError>>, BillingError>;

    /// Seals the subscription's periods up to `through` (monotonic: a lower
    /// value changes nothing) and returns the sealed-through index.
    async fn seal(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        through: i64,
    ) -> Result<i64, BillingError>;

    /// The sealed-through index, if any period is sealed.
    async fn sealed_through(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Option<i64>, BillingError>;

    /// Events billed in `invoice_period`'s invoice, in arrival order.
    async fn billed_in(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        invoice_period: i64,
    ) -> Result<Vec<StoredUsage>, BillingError>;

    /// Events whose timestamp falls in `period` and that are billed in an
    /// invoice before `billed_before`, in arrival order.
    async fn for_period(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        period: i64,
        billed_before: i64,
    ) -> Result<Vec<StoredUsage>, BillingError>;
}

/// Where [`BillingEngine::record_usage_in`](crate::BillingEngine::record_usage_in)
/// stores usage: a database connection, usually one inside the caller's
/// open transaction, so the usage commits or rolls back with the caller's
/// own writes.
///
/// Implemented for `sqlx::PgConnection` (feature `postgres`) and
/// `sqlx::SqliteConnection` (feature `sqlite`); a `sqlx::Transaction` and a
/// saas-tenancy `PgTenantTx` dereference to them, so pass `&mut *tx`. The
/// connection must reach the same tables as the engine's [`UsageStore`]
/// (the same database; on PostgreSQL a `search_path` that finds
/// `billing_usage_events`).
///
/// Contract: as [`UsageStore::ingest`], except that nothing is durable
/// until the caller's transaction commits, and nothing remains if it rolls
/// back (a key whose usage rolled back is free again). The batch is
/// stored whole or not at all (in a savepoint when the connection is in a
/// transaction, in a transaction of its own otherwise).
#[async_trait]
pub trait UsageWriter: Send {
    /// Stores `batch` on this connection, one outcome per record, in order.
    async fn ingest_usage(
        &mut self,
        batch: Vec<UsageRecord>,
    ) -> Result<Vec<Result<IngestOutcome, BillingError>>, BillingError>;
}

/// Invoices: one per subscription and period.
#[async_trait]
pub trait InvoiceStore: Send + Sync + std::fmt::Debug {
    /// Stores a new draft.
    /// - `AlreadyExists` if the subscription already has an invoice for
    ///   that period (checked atomically: of two racing creations exactly
    ///   one succeeds — a unique index in SQL) or the id is taken.
    /// - `InvalidInput` if it is not a draft.
    async fn create(&self, invoice: Invoice) -> Result<Invoice, BillingError>;

    /// The invoice. `NotFound` if absent or owned by another tenant.
    async fn get(&self, tenant: TenantId, id: InvoiceId) -> Result<Invoice, BillingError>;

    /// The subscription's invoice for `period`, if any.
    async fn find(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
        period: i64,
    ) -> Result<Option<Invoice>, BillingError>;

    /// Replaces a draft's lines (the total is recomputed).
    /// - `InvoiceFinalized` (no change) if it is finalized.
    /// - `NotFound` as for `get`.
    async fn update_draft(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        lines: Vec<InvoiceLine>,
    ) -> Result<Invoice, BillingError>;

    /// Replaces a draft's lines and finalizes it at `finalization.at`
    /// with the next number of `finalization.issuer`'s sequence, its
    /// payment state open for the total (see [`Invoice::finalize`]), all
    /// in one transaction.
    /// - Numbers are gapless and sequential per issuer: the first is 1,
    ///   each next one is the previous plus 1, whatever the concurrency
    ///   (finalizers of one issuer are serialized on its counter) and
    ///   whatever fails (a failed finalization takes no number).
    /// - A number is never given twice (a unique constraint in SQL) and
    ///   never freed: finalized invoices cannot be deleted.
    /// - With `consume_credits`, the tenant's prepaid credits in the
    ///   invoice's currency available at `credits_at` cover what it
    ///   leaves due, in the order of
    ///   [`credit::consume`](crate::credit::consume), recorded as
    ///   consumptions in the same transaction (finalizations of one
    ///   tenant are serialized on its grants: a grant is never consumed
    ///   beyond its amount).
    /// - `InvoiceFinalized` (no change, no number taken) if it is already
    ///   finalized.
    /// - `NotFound` as for `get`.
    async fn finalize(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        finalization: Finalization,
    ) -> Result<Invoice, BillingError>;

    /// Applies a payment change to a finalized invoice (see
    /// [`InvoicePayment::apply`](crate::InvoicePayment::apply)) in one
    /// transaction, and returns the invoice. Only the payment state
    /// changes; lines, totals and number never do.
    /// - Changes of one invoice are serialized: two racing payments of
    ///   the whole remaining amount are one success and one
    ///   `InvalidInput`/`IllegalPaymentTransition`, never paid twice.
    /// - `InvoiceNotFinalized` for a draft; `IllegalPaymentTransition`,
    ///   `InvalidInput` or `CurrencyMismatch` (no change) as
    ///   [`InvoicePayment::apply`](crate::InvoicePayment::apply).
    /// - `NotFound` as for `get`.
    async fn apply_payment(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        change: PaymentChange,
        at: DateTime<Utc>,
    ) -> Result<Invoice, BillingError>;

    /// Issues a credit note against a finalized invoice (see
    /// [`CreditNote::issue`](crate::CreditNote::issue)) in one
    /// transaction: reads the invoice and its earlier credit notes, takes
    /// the next number of the invoice issuer's credit-note sequence
    /// (gapless, separate from the invoices'), stores the note and the
    /// invoice's new payment state. The invoice's lines, total and number
    /// never change; credit notes are never changed or deleted.
    /// - Credit notes of one invoice are serialized: together they never
    ///   credit more than the invoice charged.
    /// - `InvoiceNotFinalized`, `IllegalPaymentTransition` (void),
    ///   `InvalidInput` (more than remains creditable…), nothing stored.
    /// - `NotFound` as for `get`.
    async fn issue_credit_note(
        &self,
        tenant: TenantId,
        id: InvoiceId,
        request: CreditNoteRequest,
        at: DateTime<Utc>,
    ) -> Result<(Invoice, CreditNote), BillingError>;

    /// The credit notes of an invoice, by number (none for another
    /// tenant's invoice).
    async fn credit_notes(
        &self,
        tenant: TenantId,
        invoice: InvoiceId,
    ) -> Result<Vec<CreditNote>, BillingError>;

    /// Records a grant of prepaid credit (an append to the tenant's
    /// ledger).
    /// - `AlreadyExists` if its id is taken.
    async fn grant_credit(&self, grant: CreditGrant) -> Result<CreditGrant, BillingError>;

    /// The tenant's grants in `currency` with what remains of each
    /// (expired ones included), by grant time then id.
    async fn credit_balances(
        &self,
        tenant: TenantId,
        currency: Currency,
    ) -> Result<Vec<CreditGrantBalance>, BillingError>;

    /// What the tenant's invoices consumed from its grants, in order.
    async fn credit_consumptions(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<CreditConsumption>, BillingError>;

    /// Up to `limit` drafts with `finalize_after <= at`, oldest first.
    async fn drafts_due(
        &self,
        at: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Invoice>, BillingError>;

    /// A subscription's invoices by period.
    async fn list(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Vec<Invoice>, BillingError>;
}

/// Coupons and their redemptions.
#[async_trait]
pub trait CouponStore: Send + Sync + std::fmt::Debug {
    /// Stores a new coupon.
    /// - `AlreadyExists` if the id is taken.
    async fn create(&self, coupon: Coupon) -> Result<Coupon, BillingError>;

    /// The coupon. `NotFound` if absent.
    async fn get(&self, id: &CouponId) -> Result<Coupon, BillingError>;

    /// Records that a subscription redeems a coupon from `start_period`
    /// at `at`, and returns the redemption (with the coupon as stored).
    /// - The checks and the write are one critical section: racing
    ///   redemptions never exceed `max_redemptions`.
    /// - `CouponNotRedeemable` (nothing recorded) if `at` is at or after
    ///   its `redeem_by`, or it was redeemed `max_redemptions` times.
    /// - `AlreadyExists` if this subscription redeemed it before (a
    ///   refused redemption counts nothing).
    /// - `NotFound` if the coupon is absent.
    async fn redeem(
        &self,
        coupon: &CouponId,
        tenant: TenantId,
        subscription: SubscriptionId,
        start_period: i64,
        at: DateTime<Utc>,
    ) -> Result<Redemption, BillingError>;

    /// How many times the coupon was redeemed. `NotFound` if absent.
    async fn times_redeemed(&self, id: &CouponId) -> Result<u32, BillingError>;

    /// A subscription's redemptions, in redemption order (only this
    /// tenant's).
    async fn redemptions(
        &self,
        tenant: TenantId,
        subscription: SubscriptionId,
    ) -> Result<Vec<Redemption>, BillingError>;
}
