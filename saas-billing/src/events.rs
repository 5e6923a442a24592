//! Domain events and where they go.

use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use saas_core::TenantId;
use serde::Serialize;

use crate::ids::{FeatureKey, InvoiceId, SubscriptionId};
use crate::invoice::{CreditNote, InvoiceNumber, PaymentStatus};
use crate::money::Money;
use crate::plan::PlanRef;
use crate::subscription::{AddOn, ChangeDirection, ChangeTiming, SubscriptionStatus};

/// Something that happened in billing, for other parts of the host
/// (emails, provisioning, analytics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BillingEvent {
    /// A subscription was created.
    SubscriptionCreated {
        /// The tenant.
        tenant_id: TenantId,
        /// The subscription.
        subscription_id: SubscriptionId,
        /// Its plan version.
        plan: PlanRef,
        /// Its first status.
        status: SubscriptionStatus,
        /// When.
        at: DateTime<Utc>,
    },
    /// Its plan or seats changed, or a change was scheduled.
    SubscriptionChanged {
        /// The tenant.
        tenant_id: TenantId,
        /// The subscription.
        subscription_id: SubscriptionId,
        /// The plan version before.
        from: PlanRef,
        /// The plan version asked for.
        to: PlanRef,
        /// Upgrade or downgrade.
        direction: ChangeDirection,
        /// Now (prorated or not) or at period end.
        timing: ChangeTiming,
        /// When.
        at: DateTime<Utc>,
    },
    /// Its status changed for another reason (trial end, pause, resume,
    /// payment events).
    SubscriptionStatusChanged {
        /// The tenant.
        tenant_id: TenantId,
        /// The subscription.
        subscription_id: SubscriptionId,
        /// Before.
        from: SubscriptionStatus,
        /// After.
        to: SubscriptionStatus,
        /// When.
        at: DateTime<Utc>,
    },
    /// It was canceled, now or for the period end.
    SubscriptionCanceled {
        /// The tenant.
        tenant_id: TenantId,
        /// The subscription.
        subscription_id: SubscriptionId,
        /// Whether service continues until the period ends.
        at_period_end: bool,
        /// When.
        at: DateTime<Utc>,
    },
    /// An invoice was finalized.
    InvoiceFinalized {
        /// The tenant.
        tenant_id: TenantId,
        /// The subscription.
        subscription_id: SubscriptionId,
        /// The invoice.
        invoice_id: InvoiceId,
        /// Its period.
        period_index: i64,
        /// Its number (gapless per issuer).
        number: Option<InvoiceNumber>,
        /// Its total.
        total: Money,
        /// When.
        at: DateTime<Utc>,
    },
    /// A finalized invoice's payment state changed (a payment, a failed
    /// attempt, voided, marked uncollectible).
    InvoicePaymentChanged {
        /// The tenant.
        tenant_id: TenantId,
        /// The subscription.
        subscription_id: SubscriptionId,
        /// The invoice.
        invoice_id: InvoiceId,
        /// What changed ([`PaymentChange::name`](crate::PaymentChange::name)).
        change: &'static str,
        /// Its payment status before.
        from: PaymentStatus,
        /// Its payment status after.
        to: PaymentStatus,
        /// What remains to be paid after.
        amount_remaining: Money,
        /// When.
        at: DateTime<Utc>,
    },
    /// An add-on was attached, detached (quantity 0) or its quantity
    /// changed (now or, by the timing, at the period's end).
    AddOnChanged {
        /// The tenant.
        tenant_id: TenantId,
        /// The subscription.
        subscription_id: SubscriptionId,
        /// The add-on with the quantity asked for.
        addon: AddOn,
        /// Upgrade or downgrade.
        direction: ChangeDirection,
        /// Now (prorated or not) or at period end.
        timing: ChangeTiming,
        /// When.
        at: DateTime<Utc>,
    },
    /// A credit note was issued against an invoice.
    CreditNoteIssued {
        /// The tenant.
        tenant_id: TenantId,
        /// The subscription.
        subscription_id: SubscriptionId,
        /// The invoice credited.
        invoice_id: InvoiceId,
        /// The credit note (its number, amounts and refund).
        credit_note: CreditNote,
        /// When.
        at: DateTime<Utc>,
    },
    /// An invoice's finalization consumed prepaid credits and left the
    /// tenant's available balance below the engine's threshold (see
    /// [`BillingEngine::with_low_credit_threshold`](crate::BillingEngine::with_low_credit_threshold)):
    /// time for a top-up.
    CreditBalanceLow {
        /// The tenant.
        tenant_id: TenantId,
        /// Its available balance now.
        balance: Money,
        /// The threshold crossed.
        threshold: Money,
        /// When.
        at: DateTime<Utc>,
    },
    /// Recorded usage went over a quota.
    QuotaExceeded {
        /// The tenant.
        tenant_id: TenantId,
        /// The feature.
        feature: FeatureKey,
        /// The quota per period.
        limit: Decimal,
        /// When.
        at: DateTime<Utc>,
    },
}

/// Receives domain events. Called after the store write that caused the
/// event succeeded; delivery is at most once per call (a transactional
/// outbox is not built yet), so sinks should not fail the operation.
#[async_trait]
pub trait BillingEventSink: Send + Sync + std::fmt::Debug {
    /// Takes one event.
    async fn publish(&self, event: BillingEvent);
}

/// Drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopEventSink;

#[async_trait]
impl BillingEventSink for NoopEventSink {
    async fn publish(&self, _event: BillingEvent) {}
}

/// Keeps every event in memory, in order, for tests and the harness.
#[derive(Debug, Default)]
pub struct InMemoryEventRecorder {
    events: Mutex<Vec<BillingEvent>>,
}

impl InMemoryEventRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<BillingEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes the events so far, leaving none.
    pub fn take(&self) -> Vec<BillingEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[async_trait]
impl BillingEventSink for InMemoryEventRecorder {
    async fn publish(&self, event: BillingEvent) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }
}
